"""How a catalog compiles into paths: continuations, fallback points, what is refused."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from braid.api.catalog import PathCatalog
from braid.api.routing import Endpoints, PathWeight, RoutingTable
from braid.dataplane.compiler import (
    BatcherFor,
    CatalogError,
    CompiledCatalog,
    check_path,
    shared_prefix,
)
from braid.dataplane.executor import PathExecutor
from braid.dataplane.metrics import GatewayMetrics
from braid.dataplane.pool import TritonPool
from braid.dataplane.routing import RoutingTableError
from braid_dev import synthetic as syn

LOCAL_ONLY = Endpoints(servers={"local": "127.0.0.1:1"})


def compile_against(
    catalog: PathCatalog, endpoints: Endpoints, batcher_for: BatcherFor
) -> CompiledCatalog:
    return CompiledCatalog(catalog, endpoints, GatewayMetrics(CollectorRegistry()), batcher_for)


def test_every_path_compiles_with_its_fallback_points(synthetic_compiled: CompiledCatalog) -> None:
    paths = synthetic_compiled.paths
    assert set(paths) == {syn.ORIGINAL, syn.SKIP, syn.CROSS, syn.EXIT}
    cross = paths[syn.CROSS]
    # The hops the original path does not use can fall back; the first of them is where
    # the latency check happens.
    assert [h.fallback_safe for h in cross.hops] == [False, True, True, True, False, False]
    assert cross.divergence == 1
    assert [h.address for h in cross.hops][1:4] == ["127.0.0.1:2"] * 3
    assert paths[syn.ORIGINAL].divergence is None
    exit_path = paths[syn.EXIT]
    assert exit_path.exit_index == 2
    assert exit_path.exit_block == syn.EXIT_BLOCK
    assert [h.model for h in exit_path.continuation] == ["toy.b2", "toy.b3"]


def test_a_model_called_by_several_paths_has_one_batcher(
    synthetic_compiled: CompiledCatalog,
) -> None:
    paths = synthetic_compiled.paths
    original, cross = paths[syn.ORIGINAL], paths[syn.CROSS]
    assert original.hops[0].batcher is cross.hops[0].batcher
    assert synthetic_compiled.addresses() == {
        "127.0.0.1:1": {h.model for p in paths.values() for h in p.hops if h.server == "local"},
        "127.0.0.1:2": {h.model for h in cross.hops if h.server == "host"},
    }


def test_paths_without_an_endpoint_are_left_out_and_cannot_be_routed_to(
    synthetic_catalog: PathCatalog, batcher_for: BatcherFor
) -> None:
    compiled = compile_against(synthetic_catalog, LOCAL_ONLY, batcher_for)
    assert syn.CROSS not in compiled.paths
    assert "no endpoint serves" in compiled.skipped[syn.CROSS]
    with pytest.raises(RoutingTableError, match="cannot run"):
        compiled.check_table(
            RoutingTable(model=syn.LOCAL, paths=[PathWeight(id=syn.CROSS, weight=1)])
        )


def test_a_refused_table_leaves_the_executor_on_its_old_one(
    synthetic_catalog: PathCatalog,
) -> None:
    executor = PathExecutor(
        synthetic_catalog, LOCAL_ONLY, TritonPool(), metrics=GatewayMetrics(CollectorRegistry())
    )
    with pytest.raises(RoutingTableError, match="cannot run"):
        executor.update_table(
            RoutingTable(model=syn.LOCAL, paths=[PathWeight(id=syn.CROSS, weight=1)])
        )
    assert executor.table.paths[0].id == syn.ORIGINAL


def test_the_fallback_path_must_be_local_and_exit_free(
    synthetic_compiled: CompiledCatalog,
) -> None:
    for fallback in (syn.CROSS, syn.EXIT):
        with pytest.raises(RoutingTableError, match="fallback path"):
            synthetic_compiled.check_table(
                RoutingTable(
                    model=syn.LOCAL,
                    paths=[PathWeight(id=syn.ORIGINAL, weight=1)],
                    fallback_path=fallback,
                )
            )
    table = RoutingTable(model=syn.LOCAL, paths=[PathWeight(id=syn.CROSS, weight=1)])
    assert synthetic_compiled.check_table(table).id == syn.ORIGINAL


def test_a_table_for_another_model_is_refused(synthetic_compiled: CompiledCatalog) -> None:
    with pytest.raises(RoutingTableError, match="for 'other'"):
        synthetic_compiled.check_table(
            RoutingTable(model="other", paths=[PathWeight(id=syn.ORIGINAL, weight=1)])
        )


def test_a_catalog_without_a_servable_original_is_refused(
    synthetic_catalog: PathCatalog, batcher_for: BatcherFor
) -> None:
    with pytest.raises(CatalogError, match="original path"):
        compile_against(synthetic_catalog, Endpoints(servers={"host": "127.0.0.1:2"}), batcher_for)


def test_hops_that_do_not_chain_are_reported(synthetic_catalog: PathCatalog) -> None:
    skip = synthetic_catalog.path(syn.SKIP)
    broken = skip.model_copy(update={"hops": [skip.hops[0], skip.hops[2], skip.hops[3]]})
    original = synthetic_catalog.path(syn.ORIGINAL)
    problems = check_path(broken, original.hops[0].input, original.hops[-1].output)
    assert any("toy.b0 gives FP32[4, 8, 8] but toy.b2 takes FP32[8, 4, 4]" in p for p in problems)


def test_shared_prefix_counts_leading_common_hops(synthetic_compiled: CompiledCatalog) -> None:
    assert shared_prefix(["b0", "x", "b2"], ["b0", "b1", "b2"]) == 1
    assert shared_prefix(["b0", "b1"], ["b0", "b1", "b2"]) == 2
    assert shared_prefix(["x"], ["b0"]) == 0
    paths = synthetic_compiled.paths
    assert synthetic_compiled.shared_with(paths[syn.CROSS], paths[syn.ORIGINAL]) == 1
