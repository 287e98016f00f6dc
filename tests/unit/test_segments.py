"""Which runs of hops are fused into segments, and how the executor plans its calls."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from prometheus_client import CollectorRegistry

from braid.api.catalog import Hop, PathCatalog
from braid.api.routing import Endpoints
from braid.dataplane.executor import PathExecutor
from braid.dataplane.metrics import GatewayMetrics
from braid.dataplane.pool import TritonPool
from braid.render.segments import (
    SEGMENT_MARK,
    catalog_segments,
    render_segment_config,
    runs,
    segment_name,
)
from braid_dev import synthetic as syn


@pytest.fixture(scope="module")
def catalog() -> PathCatalog:
    modules, shapes = syn._modules()
    return syn.build_catalog(modules, shapes)


def models(hops: Sequence[Hop]) -> list[str]:
    return [h.triton_model for h in hops]


def test_names_are_stable_readable_and_tell_different_middles_apart() -> None:
    a = segment_name(["toy.b0", "toy.b1", "toy.b3"])
    assert a == segment_name(["toy.b0", "toy.b1", "toy.b3"])
    assert a.startswith("toy.b0" + SEGMENT_MARK + "toy.b3.")
    assert a != segment_name(["toy.b0", "toy.b2", "toy.b3"])
    with pytest.raises(ValueError, match="at least two"):
        segment_name(["toy.b0"])


def test_runs_stop_at_a_server_change_an_exit_head_and_the_fallback_boundary(
    catalog: PathCatalog,
) -> None:
    fallback = frozenset(models(catalog.path(syn.ORIGINAL).hops))
    cross = catalog.path(syn.CROSS).hops
    assert [models(r) for r in runs(cross, fallback)] == [
        ["toy.b0"],
        models(cross[1:4]),  # the three host hops
        ["toy.b2", "toy.b3"],
    ]
    exit_path = catalog.path(syn.EXIT).hops
    assert [len(r) for r in runs(exit_path, fallback)] == [2, 1]
    # A local skip link is off the fallback path: not fused with the blocks around it.
    skip = next(p for p in catalog.paths if p.kind == "skip").hops
    assert [len(r) for r in runs(skip, fallback)] == [1, 1, 2]


def test_every_suffix_of_a_run_is_a_segment_once(catalog: PathCatalog) -> None:
    segments = catalog_segments(catalog)
    names = [s.name for s in segments]
    assert len(names) == len(set(names))
    chains = {s.models for s in segments}
    assert ("toy.b0", "toy.b1", "toy.b2", "toy.b3") in chains
    assert ("toy.b1", "toy.b2", "toy.b3") in chains  # where a fallback resumes
    assert ("toy.b2", "toy.b3") in chains
    assert all(len(s.hops) >= 2 for s in segments)
    assert all(h.server == s.server for s in segments for h in s.hops)
    assert not any(h.role == "exit" for s in segments for h in s.hops)


def test_a_segment_config_chains_its_hops(catalog: PathCatalog) -> None:
    segment = next(s for s in catalog_segments(catalog) if len(s.hops) == 4)
    config = render_segment_config(segment, 16)
    assert 'platform: "ensemble"' in config
    assert "max_batch_size: 16" in config
    assert [line.split('"')[1] for line in config.splitlines() if "model_name" in line] == list(
        segment.models
    )


def test_the_plan_uses_the_longest_ready_segment_and_falls_back_to_single_hops(
    catalog: PathCatalog,
) -> None:
    ex = PathExecutor(
        catalog,
        Endpoints(servers={"local": "127.0.0.1:1", "host": "127.0.0.1:2"}),
        TritonPool(),
        metrics=GatewayMetrics(CollectorRegistry()),
    )
    path = ex.paths[syn.ORIGINAL]
    assert [len(s.parts) for _, s in ex._plan(path, "hops", path.hops, 0)] == [0, 0, 0, 0]
    # The server reports only the b1-b3 segment ready.
    ex._ready_models["127.0.0.1:1"] = frozenset({segment_name(["toy.b1", "toy.b2", "toy.b3"])})
    ex._plans.clear()
    plan = ex._plan(path, "hops", path.hops, 0)
    assert [(i, s.model, len(s.parts)) for i, s in plan] == [
        (0, "toy.b0", 0),
        (1, segment_name(["toy.b1", "toy.b2", "toy.b3"]), 3),
    ]
    # From a resume point the plan starts there.
    assert [i for i, _ in ex._plan(path, "hops", path.hops, 2)] == [2, 3]
    # Fusion off: hop by hop whatever is ready.
    ex.fuse = False
    ex._plans.clear()
    assert [i for i, _ in ex._plan(path, "hops", path.hops, 0)] == [0, 1, 2, 3]
