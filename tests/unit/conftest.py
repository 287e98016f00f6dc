"""Fixtures shared by the unit tests."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from braid.api.catalog import PathCatalog
from braid.api.routing import Endpoints
from braid.dataplane.batching import HopBatcher
from braid.dataplane.compiler import BatcherFor, CompiledCatalog
from braid.dataplane.metrics import GatewayMetrics
from braid.dataplane.pool import TritonPool
from braid_dev import synthetic as syn


@pytest.fixture(scope="session")
def synthetic_catalog() -> PathCatalog:
    """The synthetic pair's catalog (toy blocks, a skip, a cross and an exit path)."""
    return syn.synthetic_catalog()


@pytest.fixture(scope="session")
def synthetic_endpoints() -> Endpoints:
    """Addresses of the synthetic pair's two servers; nothing listens there, and compiling,
    planning or a call whose batcher a test replaced never connects."""
    return Endpoints(servers={"local": "127.0.0.1:1", "host": "127.0.0.1:2"})


@pytest.fixture
def batcher_for() -> BatcherFor:
    """One batcher per model and address, over a pool that never opens a channel."""
    pool = TritonPool()
    batchers: dict[tuple[str, str], HopBatcher] = {}

    def batcher(
        address: str, model: str, input_name: str, input_datatype: str, output_name: str
    ) -> HopBatcher:
        key = (address, model)
        if key not in batchers:
            batchers[key] = HopBatcher(
                pool, address, model, input_name, input_datatype, output_name, max_batch_size=64
            )
        return batchers[key]

    return batcher


@pytest.fixture
def synthetic_compiled(
    synthetic_catalog: PathCatalog, synthetic_endpoints: Endpoints, batcher_for: BatcherFor
) -> CompiledCatalog:
    """The synthetic catalog compiled against both of its servers."""
    return CompiledCatalog(
        synthetic_catalog, synthetic_endpoints, GatewayMetrics(CollectorRegistry()), batcher_for
    )
