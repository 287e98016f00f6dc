"""The gateway's prober gives an endpoint fresh channels when its probe failed at the
transport: refused (UNAVAILABLE) or unanswered within the probe's second
(DEADLINE_EXCEEDED, what a channel stuck connecting to a vanished pod IP gives). Real gRPC
channels, a real gRPC server that never answers in time, and a port nobody listens on."""

from __future__ import annotations

import asyncio
import socket

import grpc
import pytest
from prometheus_client import CollectorRegistry
from tritonclient.grpc import service_pb2, service_pb2_grpc

from braid.api.routing import Endpoints
from braid.dataplane.batching import HopBatcher
from braid.dataplane.compiler import CompiledCatalog, SegmentPlanner
from braid.dataplane.health import ReadinessMonitor
from braid.dataplane.metrics import GatewayMetrics
from braid.dataplane.pool import TritonPool
from braid_dev import synthetic as syn

from .grpc_support import serving

pytestmark = pytest.mark.integration


class _Stuck(service_pb2_grpc.GRPCInferenceServiceServicer):
    async def RepositoryIndex(  # noqa: N802 (gRPC's method name)
        self, request: service_pb2.RepositoryIndexRequest, context: grpc.aio.ServicerContext
    ) -> service_pb2.RepositoryIndexResponse:
        await asyncio.sleep(5)
        return service_pb2.RepositoryIndexResponse()


@pytest.fixture
def refused() -> str:
    """A loopback port nothing listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


async def test_a_probe_that_cannot_reach_or_times_out_renews_the_channels(refused: str) -> None:
    async with serving(_Stuck()) as silent_listener:
        await _probe_renews(silent_listener, refused)


async def _probe_renews(silent_listener: str, refused: str) -> None:
    pool = TritonPool(renew_every_s=60.0, retire_after_s=0.05)

    def batcher(
        address: str, model: str, input_name: str, input_datatype: str, output_name: str
    ) -> HopBatcher:
        return HopBatcher(
            pool, address, model, input_name, input_datatype, output_name, max_batch_size=8
        )

    endpoints = Endpoints(servers={"local": refused, "host": silent_listener})
    compiled = CompiledCatalog(
        syn.synthetic_catalog(), endpoints, GatewayMetrics(CollectorRegistry()), batcher
    )
    monitor = ReadinessMonitor(compiled, SegmentPlanner(batcher), pool)
    before = {a: pool.stub(a) for a in (refused, silent_listener)}
    try:
        await monitor.probe()
        for address in (refused, silent_listener):
            state = pool.state(address)
            assert not pool.available(address), state
            assert state.renewed_at > 0, state
            assert pool.stub(address) is not before[address]
        assert "DEADLINE_EXCEEDED" in pool.state(silent_listener).last_error
        assert "UNAVAILABLE" in pool.state(refused).last_error
    finally:
        await pool.close()
