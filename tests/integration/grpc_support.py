"""A real gRPC server speaking Triton's service, scripted by a test."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import grpc
from tritonclient.grpc import service_pb2_grpc


@contextlib.asynccontextmanager
async def serving(servicer: service_pb2_grpc.GRPCInferenceServiceServicer) -> AsyncIterator[str]:
    """``servicer`` on a loopback port; yields its address.

    A context, not a fixture: the server must run on the test's own event loop, and async
    fixtures run on the session's (``asyncio_default_fixture_loop_scope``), where nothing
    would serve it while the test runs.
    """
    server = grpc.aio.server()
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(grace=None)
