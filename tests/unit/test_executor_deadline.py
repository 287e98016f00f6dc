"""A request's own deadline passing at a hop is the request's failure, not the server's."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from prometheus_client import CollectorRegistry

from braid.api.catalog import PathCatalog
from braid.api.routing import Endpoints
from braid.dataplane.batching import HopAnswer
from braid.dataplane.errors import InferenceError, Reason
from braid.dataplane.executor import MAX_CLIENT_BUDGET_S, PathExecutor
from braid.dataplane.metrics import GatewayMetrics
from braid.dataplane.pool import TritonPool
from braid.dataplane.tensors import InferRequest, Tensor
from braid_dev import synthetic as syn

INPUT = "INPUT__0"


def executor(catalog: PathCatalog, endpoints: Endpoints) -> PathExecutor:
    return PathExecutor(
        catalog, endpoints, TritonPool(), metrics=GatewayMetrics(CollectorRegistry())
    )


def request(ex: PathExecutor, timeout_s: float) -> InferRequest:
    """One sample on the original path with the client's budget ``timeout_s``."""
    return InferRequest(
        model=ex.model,
        inputs=[Tensor(INPUT, "FP32", (1, *syn.INPUT_SHAPE), bytes(4 * 64))],
        path=syn.ORIGINAL,
        timeout_s=timeout_s,
    )


def test_an_early_grpc_deadline_within_the_clients_budget_does_not_mark_the_server_down(
    synthetic_catalog: PathCatalog, synthetic_endpoints: Endpoints
) -> None:
    """Found by fuzzing the timeout header: gRPC's timer fired a hair before perf_counter
    reached the client's deadline, the hop failure was taken for a dead server and the
    endpoint went into cool-down, so other clients got 503 for two seconds."""

    async def deadline_exceeded(*args: object) -> HopAnswer:
        raise grpc.aio.AioRpcError(
            grpc.StatusCode.DEADLINE_EXCEEDED,
            grpc.aio.Metadata(),
            grpc.aio.Metadata(),
            details="Deadline Exceeded",
        )

    async def wait_ran_out(*args: object) -> HopAnswer:
        raise TimeoutError  # a coalesced member's wait_for, on asyncio's clock

    # The same hop, the two ways it can time out.
    for timed_out in (deadline_exceeded, wait_ran_out):

        async def infer() -> None:
            ex = executor(synthetic_catalog, synthetic_endpoints)
            hop = ex.paths[syn.ORIGINAL].hops[0]
            hop.batcher.call = timed_out  # type: ignore[method-assign]  # noqa: B023
            hop.batcher.send = timed_out  # type: ignore[method-assign]  # noqa: B023
            try:
                await ex.infer(request(ex, 30.0))
            finally:
                assert ex.pool.available(hop.address)  # not in cool-down

        with pytest.raises(InferenceError) as caught:
            asyncio.run(infer())
        assert caught.value.reason == Reason.DEADLINE  # was a 503 upstream_unavailable
        assert "the client's deadline" in str(caught.value)


@pytest.mark.parametrize("budget_s", [1e24, float("inf")])
def test_a_huge_client_budget_is_capped_not_overflowed(
    synthetic_catalog: PathCatalog, synthetic_endpoints: Endpoints, budget_s: float
) -> None:
    """Found by fuzzing the ``timeout`` parameter: 10**30 µs reached gRPC as a deadline it
    could not represent, and the hop failed at once with DEADLINE_EXCEEDED."""
    seen: list[float] = []

    async def record_deadline(data: bytes, shape: tuple[int, ...], deadline: float) -> HopAnswer:
        seen.append(deadline - time.perf_counter())
        raise grpc.aio.AioRpcError(
            grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), details="x"
        )

    async def infer() -> None:
        ex = executor(synthetic_catalog, synthetic_endpoints)
        for path in ex.paths.values():
            for hop in path.hops:
                hop.batcher.call = record_deadline  # type: ignore[method-assign]
                hop.batcher.send = record_deadline  # type: ignore[method-assign]
        await ex.infer(request(ex, budget_s))

    with pytest.raises(InferenceError):
        asyncio.run(infer())
    assert seen
    assert all(0 < s <= MAX_CLIENT_BUDGET_S for s in seen)
