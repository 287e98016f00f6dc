"""A request's own deadline passing at a hop is the request's failure, not the server's."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from prometheus_client import CollectorRegistry

from braid.api.catalog import PathCatalog
from braid.api.routing import Endpoints
from braid.dataplane.errors import InferenceError, Reason
from braid.dataplane.executor import MAX_CLIENT_BUDGET_S, PathExecutor, _Run
from braid.dataplane.metrics import GatewayMetrics
from braid.dataplane.pool import TritonPool
from braid.dataplane.tensors import InferRequest, Tensor
from braid_dev import synthetic as syn

INPUT = "INPUT__0"


@pytest.fixture(scope="module")
def catalog() -> PathCatalog:
    modules, shapes = syn._modules()
    return syn.build_catalog(modules, shapes)


def test_an_early_grpc_deadline_within_the_clients_budget_does_not_mark_the_server_down(
    catalog: PathCatalog,
) -> None:
    """Found by fuzzing the timeout header: gRPC's timer fired a hair before perf_counter
    reached the client's deadline, the hop failure was taken for a dead server and the
    endpoint went into cool-down, so other clients got 503 for two seconds."""

    async def call_the_hop() -> PathExecutor:
        ex = PathExecutor(
            catalog,
            Endpoints(servers={"local": "127.0.0.1:1", "host": "127.0.0.1:2"}),
            TritonPool(),
            metrics=GatewayMetrics(CollectorRegistry()),
        )
        hop = ex.paths[syn.ORIGINAL].hops[0]
        hop.batcher.call = deadline_exceeded  # type: ignore[method-assign]
        hop.batcher.send = deadline_exceeded  # type: ignore[method-assign]
        now = time.perf_counter()
        run = _Run(ex.table, now, now + 30, client_deadline=True, bound_deadline=None)
        try:
            await ex._call(hop, bytes(256), (1, 1, 8, 8), run)
        finally:
            assert ex.pool.available(hop.address)  # not in cool-down
        return ex

    async def deadline_exceeded(*args: object) -> tuple[bytes, tuple[int, ...]]:
        raise grpc.aio.AioRpcError(
            grpc.StatusCode.DEADLINE_EXCEEDED,
            grpc.aio.Metadata(),
            grpc.aio.Metadata(),
            details="Deadline Exceeded",
        )

    with pytest.raises(InferenceError) as caught:
        asyncio.run(call_the_hop())
    assert caught.value.reason == Reason.DEADLINE
    assert "the client's deadline" in str(caught.value)

    async def wait_ran_out(*args: object) -> tuple[bytes, tuple[int, ...]]:
        raise TimeoutError  # a coalesced member's wait_for, on asyncio's clock

    deadline_exceeded = wait_ran_out  # noqa: F811 (the same hop, the other way to time out)
    with pytest.raises(InferenceError) as caught:
        asyncio.run(call_the_hop())
    assert caught.value.reason == Reason.DEADLINE  # was a 503 upstream_unavailable


@pytest.mark.parametrize("budget_s", [1e24, float("inf")])
def test_a_huge_client_budget_is_capped_not_overflowed(
    catalog: PathCatalog, budget_s: float
) -> None:
    """Found by fuzzing the ``timeout`` parameter: 10**30 µs reached gRPC as a deadline it
    could not represent, and the hop failed at once with DEADLINE_EXCEEDED."""
    seen: list[float] = []

    async def record_deadline(
        data: bytes, shape: tuple[int, ...], deadline: float
    ) -> tuple[bytes, tuple[int, ...]]:
        seen.append(deadline - time.perf_counter())
        raise grpc.aio.AioRpcError(
            grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), details="x"
        )

    async def infer() -> None:
        ex = PathExecutor(
            catalog,
            Endpoints(servers={"local": "127.0.0.1:1", "host": "127.0.0.1:2"}),
            TritonPool(),
            metrics=GatewayMetrics(CollectorRegistry()),
        )
        for path in ex.paths.values():
            for hop in path.hops:
                hop.batcher.call = record_deadline  # type: ignore[method-assign]
                hop.batcher.send = record_deadline  # type: ignore[method-assign]
        request = InferRequest(
            model=ex.model,
            inputs=[Tensor(INPUT, "FP32", (1, *syn.INPUT_SHAPE), bytes(4 * 64))],
            path=syn.ORIGINAL,
            timeout_s=budget_s,
        )
        await ex.infer(request)

    with pytest.raises(InferenceError):
        asyncio.run(infer())
    assert seen
    assert all(0 < s <= MAX_CLIENT_BUDGET_S for s in seen)
