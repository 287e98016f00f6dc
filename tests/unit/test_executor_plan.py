"""How the executor compiles a catalog: continuations, fallback points, what it refuses."""

from __future__ import annotations

import asyncio
import time

import pytest
from prometheus_client import CollectorRegistry

from braid.api.catalog import PathCatalog
from braid.api.routing import Endpoints, PathWeight, RoutingTable
from braid.dataplane.executor import (
    CatalogError,
    PathExecutor,
    _Run,
    check_path,
    fall_back_for_time,
    shared_prefix,
)
from braid.dataplane.metrics import GatewayMetrics
from braid.dataplane.pool import TritonPool
from braid.dataplane.routing import RoutingTableError
from braid_dev import synthetic as syn

BOTH = Endpoints(servers={"local": "127.0.0.1:1", "host": "127.0.0.1:2"})


@pytest.fixture(scope="module")
def catalog() -> PathCatalog:
    modules, shapes = syn._modules()
    return syn.build_catalog(modules, shapes)


def executor(catalog: PathCatalog, endpoints: Endpoints = BOTH, **kwargs: object) -> PathExecutor:
    return PathExecutor(
        catalog,
        endpoints,
        TritonPool(),
        metrics=GatewayMetrics(CollectorRegistry()),
        **kwargs,  # type: ignore[arg-type]
    )


def test_every_path_compiles_with_its_fallback_points(catalog: PathCatalog) -> None:
    ex = executor(catalog)
    assert set(ex.paths) == {syn.ORIGINAL, syn.SKIP, syn.CROSS, syn.EXIT}
    cross = ex.paths[syn.CROSS]
    # The hops the original path does not use can fall back; the first of them is where
    # the latency check happens.
    assert [h.fallback_safe for h in cross.hops] == [False, True, True, True, False, False]
    assert cross.divergence == 1
    assert [h.address for h in cross.hops][1:4] == ["127.0.0.1:2"] * 3
    assert ex.paths[syn.ORIGINAL].divergence is None
    exit_path = ex.paths[syn.EXIT]
    assert exit_path.exit_index == 2
    assert exit_path.exit_block == syn.EXIT_BLOCK
    assert [h.model for h in exit_path.continuation] == ["toy.b2", "toy.b3"]


def test_paths_without_an_endpoint_are_left_out_and_cannot_be_routed_to(
    catalog: PathCatalog,
) -> None:
    ex = executor(catalog, Endpoints(servers={"local": "127.0.0.1:1"}))
    assert syn.CROSS not in ex.paths
    assert "no endpoint serves" in ex.skipped[syn.CROSS]
    with pytest.raises(RoutingTableError, match="cannot run"):
        ex.update_table(RoutingTable(model=syn.LOCAL, paths=[PathWeight(id=syn.CROSS, weight=1)]))
    assert ex.table.paths[0].id == syn.ORIGINAL  # the old table stays


def test_the_fallback_path_must_be_local_and_exit_free(catalog: PathCatalog) -> None:
    ex = executor(catalog)
    for fallback in (syn.CROSS, syn.EXIT):
        with pytest.raises(RoutingTableError, match="fallback path"):
            ex.update_table(
                RoutingTable(
                    model=syn.LOCAL,
                    paths=[PathWeight(id=syn.ORIGINAL, weight=1)],
                    fallback_path=fallback,
                )
            )


def test_a_table_for_another_model_is_refused(catalog: PathCatalog) -> None:
    with pytest.raises(RoutingTableError, match="for 'other'"):
        executor(catalog).update_table(
            RoutingTable(model="other", paths=[PathWeight(id=syn.ORIGINAL, weight=1)])
        )


def test_a_catalog_without_a_servable_original_is_refused(catalog: PathCatalog) -> None:
    with pytest.raises(CatalogError, match="original path"):
        executor(catalog, Endpoints(servers={"host": "127.0.0.1:2"}))


def test_hops_that_do_not_chain_are_reported(catalog: PathCatalog) -> None:
    skip = catalog.path(syn.SKIP)
    broken = skip.model_copy(update={"hops": [skip.hops[0], skip.hops[2], skip.hops[3]]})
    original = catalog.path(syn.ORIGINAL)
    problems = check_path(broken, original.hops[0].input, original.hops[-1].output)
    assert any("toy.b0 gives FP32[4, 8, 8] but toy.b2 takes FP32[8, 4, 4]" in p for p in problems)


def test_time_fallback_only_when_the_path_misses_and_the_fallback_is_quicker() -> None:
    assert fall_back_for_time(0.010, 0.004, 0.005)
    assert not fall_back_for_time(0.004, 0.002, 0.005)  # the path fits
    assert not fall_back_for_time(0.010, 0.012, 0.005)  # the fallback would be slower still


def test_shared_prefix_counts_leading_common_hops() -> None:
    assert shared_prefix(["b0", "x", "b2"], ["b0", "b1", "b2"]) == 1
    assert shared_prefix(["b0", "b1"], ["b0", "b1", "b2"]) == 2
    assert shared_prefix(["x"], ["b0"]) == 0


def _slow_host_run(ex: PathExecutor) -> _Run:
    """A request with L_T = 10 ms and a roomy client deadline, on a host expected to be slow."""
    for hop in ex.paths[syn.CROSS].hops:
        if hop.server == "host":
            ex._expected[hop.model] = 0.5
    now = time.perf_counter()
    return _Run(ex.table, now, now + 30, client_deadline=True, bound_deadline=now + 0.010)


def test_a_path_left_for_time_is_tried_again_after_the_retry_interval(
    catalog: PathCatalog,
) -> None:
    cross = 1  # the cross path's first host hop: where the time check is made

    async def check() -> None:  # the pool opens its gRPC channels on an event loop
        waiting = executor(catalog, retry_after_s=3600)
        path = waiting.paths[syn.CROSS]
        assert waiting._fallback_reason(path, cross, _slow_host_run(waiting)) == "latency_bound"
        assert waiting._fallback_reason(path, cross, _slow_host_run(waiting)) == "latency_bound"
        due = executor(catalog, retry_after_s=0)
        path = due.paths[syn.CROSS]
        assert due._fallback_reason(path, cross, _slow_host_run(due)) == "latency_bound"
        assert due._fallback_reason(path, cross, _slow_host_run(due)) is None  # one retries

    asyncio.run(check())


def test_a_retry_never_risks_the_clients_deadline(catalog: PathCatalog) -> None:
    async def check() -> None:
        ex = executor(catalog, retry_after_s=0)
        path = ex.paths[syn.CROSS]
        run = _slow_host_run(ex)
        run.deadline = time.perf_counter() + 0.1  # the stale 1.5 s expectation would miss it
        assert ex._fallback_reason(path, 1, run) == "latency_bound"
        assert ex._fallback_reason(path, 1, run) == "latency_bound"

    asyncio.run(check())
