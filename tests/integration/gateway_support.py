"""Helpers of the gateway tests: start a gateway over the session runtime, set its table."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from prometheus_client import CollectorRegistry

from braid.api.catalog import PathCatalog
from braid.api.routing import Endpoints, RoutingTable
from braid.dataplane.dimee import SampleRouter
from braid.dataplane.executor import ExecutorOptions
from braid.dataplane.metrics import GatewayMetrics
from braid.dataplane.routing import write_routing_table
from braid.dataplane.server import GatewayOptions, GatewayThread, running_gateway
from braid.dataplane.service import InferenceService, ModelSource, build_service
from braid_dev import synthetic as syn

MODEL = syn.LOCAL
INPUT = "INPUT__0"
OUTPUT = "OUTPUT__0"


@contextmanager
def gateway_over(
    catalog: PathCatalog,
    endpoints: Endpoints,
    routing_file: Path,
    table: RoutingTable,
    *,
    max_body_bytes: int = 256 * 1024,
    options: ExecutorOptions | None = None,
    sample_router: SampleRouter | None = None,
) -> Iterator[tuple[GatewayThread, CollectorRegistry]]:
    """A gateway on a background thread with its own metrics registry and routing file."""
    write_routing_table(table, routing_file)
    registry = CollectorRegistry()
    metrics = GatewayMetrics(registry)

    async def build() -> InferenceService:
        return build_service(
            [ModelSource(catalog, endpoints, routing_file)],
            metrics=metrics,
            routing_poll_s=0.05,
            options=options,
            sample_router=sample_router,
            rng=random.Random(1234),
        )

    with running_gateway(build, GatewayOptions(max_body_bytes=max_body_bytes)) as thread:
        yield thread, registry


def set_table(thread: GatewayThread, routing_file: Path, table: RoutingTable) -> None:
    """Write ``table`` and wait until the gateway runs with it (its generation must be new)."""
    write_routing_table(table, routing_file)
    assert thread.gateway is not None
    executor = thread.gateway.service.executor(table.model)
    deadline = time.monotonic() + 20
    while executor.table.generation != table.generation:
        if time.monotonic() > deadline:  # a bounded wait, not a timing check
            pytest.fail("the gateway never applied the new routing table")
        time.sleep(0.02)


def inputs(scale: float = 1.0, batch: int = 1, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random((batch, *syn.INPUT_SHAPE)) * scale).astype(np.float32)


def grpc_input(x: np.ndarray) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(INPUT, list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    return tensor


def grpc_parameters(result: grpcclient.InferResult) -> dict[str, Any]:
    """The response parameters as plain values."""
    out = {}
    for key, param in result.get_response().parameters.items():
        out[key] = getattr(param, param.WhichOneof("parameter_choice"))
    return out


def sample_value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value
