"""Every failed request is counted once, by the service, whichever part raised it."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry

from braid.api.catalog import PathCatalog
from braid.api.routing import Endpoints
from braid.dataplane.batching import HopAnswer
from braid.dataplane.errors import InferenceError, Reason
from braid.dataplane.executor import PathExecutor
from braid.dataplane.metrics import GatewayMetrics
from braid.dataplane.pool import TritonPool
from braid.dataplane.service import InferenceService
from braid.dataplane.tensors import InferRequest, Tensor
from braid_dev import synthetic as syn


def service_over(
    catalog: PathCatalog, endpoints: Endpoints
) -> tuple[InferenceService, CollectorRegistry]:
    registry = CollectorRegistry()
    metrics = GatewayMetrics(registry)
    executor = PathExecutor(catalog, endpoints, TritonPool(), metrics=metrics)
    return InferenceService([executor], metrics=metrics), registry


def errors(registry: CollectorRegistry, model: str, reason: Reason) -> float | None:
    return registry.get_sample_value(
        "braid_gateway_errors_total", {"model": model, "reason": reason.value}
    )


def one_sample(byte_size: int) -> InferRequest:
    return InferRequest(
        model=syn.LOCAL,
        inputs=[Tensor("INPUT__0", "FP32", (1, *syn.INPUT_SHAPE), bytes(byte_size))],
        path=syn.ORIGINAL,
    )


def test_an_executor_error_is_counted_once_when_the_front_end_records_it(
    synthetic_catalog: PathCatalog, synthetic_endpoints: Endpoints
) -> None:
    service, registry = service_over(synthetic_catalog, synthetic_endpoints)
    with pytest.raises(InferenceError) as caught:
        asyncio.run(service.infer(one_sample(3)))  # not 4 bytes per element
    assert errors(registry, syn.LOCAL, caught.value.reason) is None  # nothing counted yet
    service.record_error(syn.LOCAL, caught.value)  # what REST and gRPC do with it
    assert errors(registry, syn.LOCAL, caught.value.reason) == 1


def test_an_unknown_models_errors_share_one_label(
    synthetic_catalog: PathCatalog, synthetic_endpoints: Endpoints
) -> None:
    service, registry = service_over(synthetic_catalog, synthetic_endpoints)
    for name in ("nope", "other"):
        with pytest.raises(InferenceError) as caught:
            service.executor(name)
        service.record_error(name, caught.value)
    assert errors(registry, "_unknown", Reason.UNKNOWN_MODEL) == 2


def test_a_cancelled_request_is_counted(
    synthetic_catalog: PathCatalog, synthetic_endpoints: Endpoints
) -> None:
    service, registry = service_over(synthetic_catalog, synthetic_endpoints)

    async def never(*args: object) -> HopAnswer:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def cancel_one() -> None:
        for hop in service.executor(syn.LOCAL).paths[syn.ORIGINAL].hops:
            hop.batcher.call = never  # type: ignore[method-assign]
        task = asyncio.ensure_future(service.infer(one_sample(4 * 64)))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_one())
    assert errors(registry, syn.LOCAL, Reason.CANCELLED) == 1
