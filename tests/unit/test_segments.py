"""Which runs of hops are fused into segments, and how the executor plans its calls."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from braid.api.catalog import Hop, PathCatalog
from braid.dataplane.compiler import BatcherFor, CompiledCatalog, SegmentPlanner
from braid.render.segments import (
    SEGMENT_MARK,
    catalog_segments,
    render_segment_config,
    runs,
    segment_name,
)
from braid_dev import synthetic as syn


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
    synthetic_catalog: PathCatalog,
) -> None:
    fallback = frozenset(models(synthetic_catalog.path(syn.ORIGINAL).hops))
    cross = synthetic_catalog.path(syn.CROSS).hops
    assert [models(r) for r in runs(cross, fallback)] == [
        ["toy.b0"],
        models(cross[1:4]),  # the three host hops
        ["toy.b2", "toy.b3"],
    ]
    exit_path = synthetic_catalog.path(syn.EXIT).hops
    assert [len(r) for r in runs(exit_path, fallback)] == [2, 1]
    # A local skip link is off the fallback path: not fused with the blocks around it.
    skip = next(p for p in synthetic_catalog.paths if p.kind == "skip").hops
    assert [len(r) for r in runs(skip, fallback)] == [1, 1, 2]


def test_every_suffix_of_a_run_is_a_segment_once(synthetic_catalog: PathCatalog) -> None:
    segments = catalog_segments(synthetic_catalog)
    names = [s.name for s in segments]
    assert len(names) == len(set(names))
    chains = {s.models for s in segments}
    assert ("toy.b0", "toy.b1", "toy.b2", "toy.b3") in chains
    assert ("toy.b1", "toy.b2", "toy.b3") in chains  # where a fallback resumes
    assert ("toy.b2", "toy.b3") in chains
    assert all(len(s.hops) >= 2 for s in segments)
    assert all(h.server == s.server for s in segments for h in s.hops)
    assert not any(h.role == "exit" for s in segments for h in s.hops)


def test_a_segment_config_chains_its_hops(synthetic_catalog: PathCatalog) -> None:
    segment = next(s for s in catalog_segments(synthetic_catalog) if len(s.hops) == 4)
    config = render_segment_config(segment, 16)
    assert 'platform: "ensemble"' in config
    assert "max_batch_size: 16" in config
    assert [line.split('"')[1] for line in config.splitlines() if "model_name" in line] == list(
        segment.models
    )


def test_the_plan_uses_the_longest_ready_segment_and_falls_back_to_single_hops(
    synthetic_compiled: CompiledCatalog, batcher_for: BatcherFor
) -> None:
    planner = SegmentPlanner(batcher_for)
    path = synthetic_compiled.paths[syn.ORIGINAL]
    assert [len(s.parts) for _, s in planner.plan(path, "hops", 0)] == [0, 0, 0, 0]
    # The server reports only the b1-b3 segment ready.
    ready = frozenset({segment_name(["toy.b1", "toy.b2", "toy.b3"])})
    planner.set_ready("127.0.0.1:1", ready)
    plan = planner.plan(path, "hops", 0)
    assert [(i, s.model, len(s.parts)) for i, s in plan] == [
        (0, "toy.b0", 0),
        (1, segment_name(["toy.b1", "toy.b2", "toy.b3"]), 3),
    ]
    # From a resume point the plan starts there.
    assert [i for i, _ in planner.plan(path, "hops", 2)] == [2, 3]
    # A segment the server refused is planned around until a probe finds it ready again.
    planner.refuse(plan[1][1])
    assert [i for i, _ in planner.plan(path, "hops", 0)] == [0, 1, 2, 3]
    planner.set_ready("127.0.0.1:1", ready)
    assert planner.plan(path, "hops", 0) == plan
    # Fusion off: hop by hop whatever is ready.
    unfused = SegmentPlanner(batcher_for, fuse=False)
    unfused.set_ready("127.0.0.1:1", ready)
    assert [i for i, _ in unfused.plan(path, "hops", 0)] == [0, 1, 2, 3]
