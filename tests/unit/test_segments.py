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


def test_runs_stop_at_a_server_change_and_an_exit_head_inside_the_path(
    synthetic_catalog: PathCatalog,
) -> None:
    cross = synthetic_catalog.path(syn.CROSS).hops
    assert [models(r) for r in runs(cross)] == [
        ["toy.b0"],
        models(cross[1:4]),  # the three host hops
        ["toy.b2", "toy.b3"],
    ]
    exit_path = synthetic_catalog.path(syn.EXIT).hops
    assert [len(r) for r in runs(exit_path)] == [2, 1]
    # Through the terminal exit head: the whole path is one run.
    assert [len(r) for r in runs(exit_path, through_exit=True)] == [3]
    # A local skip link is fused with the fallback path's blocks around it (same server).
    skip = synthetic_catalog.path(syn.SKIP).hops
    assert [models(r) for r in runs(skip)] == [models(skip)]


def test_each_run_and_every_suffix_of_the_original_paths_runs_is_a_segment_once(
    synthetic_catalog: PathCatalog,
) -> None:
    segments = catalog_segments(synthetic_catalog)
    names = [s.name for s in segments]
    assert len(names) == len(set(names))
    chains = {s.models for s in segments}
    assert ("toy.b0", "toy.b1", "toy.b2", "toy.b3") in chains
    assert ("toy.b1", "toy.b2", "toy.b3") in chains  # where a fallback resumes
    assert ("toy.b2", "toy.b3") in chains
    assert all(len(s.hops) >= 2 for s in segments)
    assert all(h.server == s.server for s in segments for h in s.hops)
    assert models(synthetic_catalog.path(syn.SKIP).hops) in [list(c) for c in chains]
    # Only the original path is entered mid-run (a fallback, a continuation after an exit).
    assert tuple(models(synthetic_catalog.path(syn.SKIP).hops)[1:]) not in chains
    # An exit head only ever ends a segment, and only one that runs its path whole: a request
    # enters a path mid-run only on the original path's blocks.
    with_exit = [s for s in segments if any(h.role == "exit" for h in s.hops)]
    assert [s.models for s in with_exit] == [tuple(models(synthetic_catalog.path(syn.EXIT).hops))]


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


def test_a_terminal_exit_head_is_planned_into_the_segment_only_through_exit(
    synthetic_compiled: CompiledCatalog, batcher_for: BatcherFor
) -> None:
    planner = SegmentPlanner(batcher_for)
    path = synthetic_compiled.paths[syn.EXIT]
    whole = segment_name(["toy.b0", "toy.b1", syn.EXIT_HEAD])
    planner.set_ready("127.0.0.1:1", frozenset({whole, segment_name(["toy.b0", "toy.b1"])}))
    # Every sample leaves at the head: one call.
    [(index, step)] = planner.plan(path, "through_exit", 0)
    assert (index, step.model, step.output_name) == (0, whole, path.hops[-1].output_name)
    # With a threshold the executor reads the head's logits: the head is its own call.
    assert [(i, s.model) for i, s in planner.plan(path, "hops", 0)] == [
        (0, segment_name(["toy.b0", "toy.b1"])),
        (2, syn.EXIT_HEAD),
    ]


def test_a_segment_with_a_skip_link_can_be_replaced_by_the_fallback(
    synthetic_compiled: CompiledCatalog, batcher_for: BatcherFor
) -> None:
    planner = SegmentPlanner(batcher_for)
    path = synthetic_compiled.paths[syn.SKIP]
    chain = [h.model for h in path.hops]
    planner.set_ready("127.0.0.1:1", frozenset({segment_name(chain)}))
    [(_, step)] = planner.plan(path, "hops", 0)
    assert [p.model for p in step.parts] == chain
    assert path.divergence == 1  # the link, inside the segment
    assert step.fallback_safe
    # The original path's own segment stays one the fallback cannot replace.
    original = synthetic_compiled.paths[syn.ORIGINAL]
    planner.set_ready("127.0.0.1:1", frozenset({segment_name([h.model for h in original.hops])}))
    [(_, own)] = planner.plan(original, "hops", 0)
    assert not own.fallback_safe
