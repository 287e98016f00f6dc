"""Fused segments: consecutive hops of a path on one server, run as one Triton ensemble call.

Every hop the gateway makes is a gRPC round trip, and on a small CPU those round trips (not
the blocks' compute) are what a path costs: the gateway's benchmark measured four hops called
one by one at 3.5 ms where a Triton ensemble of the same four blocks answered in 2.1 ms. Hops
that run back to back on the same server gain nothing from the trip out and in between them,
so the local runtime adds, beside the blocks, an ensemble for each such run (a *segment*), and
the executor calls a segment in one go when its server has it ready. Paths stay what the
catalog says; a segment is only a faster way to run some of their hops, and a server without
segments (a cluster whose repository has none) is served hop by hop as before.

A run may only be fused where the executor would not need to stop between its hops:

- an exit head inside a path is never fused (the executor reads its logits to decide who
  leaves); one that ends the path is, in a second segment beside the run without it: a
  request whose routing table sets no threshold for that exit (every sample leaves there)
  runs the whole path in one call, one with a threshold stops before the head;
- a hop the fallback path does not use (*fallback-safe*: a local skip link) may be fused with
  the fallback path's own blocks on the same server: the executor makes its latency check
  before the call that contains the path's first fallback-safe hop, and a failed call falls
  back from the last output it saw, before the segment (a host hop is on another server, so
  never fused with a local block);
- a request that falls back resumes the fallback path after the last hop both share, from any
  point of it, so every suffix of the original path's runs (of two hops or more) is a segment
  too.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from braid.api.catalog import Hop, PathCatalog
from braid.render.triton_config import render_ensemble_config

SEGMENT_MARK = ".seg-"
"""In every segment's name: what a repository view removes when it is rebuilt."""


def segment_name(models: Sequence[str]) -> str:
    """The Triton name of the ensemble that chains ``models`` (stable across builds).

    Readable ends plus a digest of the whole chain: two paths from the same first to the same
    last block through different middles are different segments.
    """
    if len(models) < 2:
        raise ValueError("a segment chains at least two models")
    digest = hashlib.sha256("\n".join(models).encode()).hexdigest()[:10]
    return f"{models[0]}{SEGMENT_MARK}{models[-1]}.{digest}"


def can_fuse(a: Hop, b: Hop, *, b_ends_path: bool = False) -> bool:
    """Whether hop ``b`` may run in the same ensemble call as the hop ``a`` just before it
    (``b_ends_path``: ``b`` is the path's last hop, so an exit head there may be fused)."""
    return a.server == b.server and a.role != "exit" and (b.role != "exit" or b_ends_path)


def runs(hops: Sequence[Hop], *, through_exit: bool = False) -> Iterator[tuple[Hop, ...]]:
    """The maximal fusable runs of ``hops`` (of any length, in order); ``through_exit``: a
    terminal exit head joins the run before it."""
    start = 0
    for index in range(1, len(hops) + 1):
        if index == len(hops) or not can_fuse(
            hops[index - 1], hops[index], b_ends_path=through_exit and index == len(hops) - 1
        ):
            yield tuple(hops[start:index])
            start = index


@dataclass(frozen=True)
class Segment:
    name: str
    server: str
    hops: tuple[Hop, ...]

    @property
    def models(self) -> tuple[str, ...]:
        return tuple(h.triton_model for h in self.hops)


def catalog_segments(catalog: PathCatalog) -> list[Segment]:
    """Every segment the catalog's paths can use: each run whole (through a terminal exit head
    too), and every suffix of the original path's runs (of two hops or more), where a request
    that falls back or continues after an exit enters it mid-run. (A routing table whose
    fallback is another path resumes that path hop by hop up to its next run.)"""
    out: dict[str, Segment] = {}

    def add(hops: Sequence[Hop]) -> None:
        if len(hops) > 1:
            name = segment_name([h.triton_model for h in hops])
            out.setdefault(name, Segment(name, hops[0].server, tuple(hops)))

    for entry in catalog.paths:
        for through_exit in (False, True):
            for run in runs(entry.hops, through_exit=through_exit):
                add(run)
    for run in runs(catalog.path(catalog.original_path).hops):
        for start in range(1, len(run) - 1):
            add(run[start:])
    return sorted(out.values(), key=lambda s: s.name)


def render_segment_config(segment: Segment, max_batch_size: int) -> str:
    """The segment's ``config.pbtxt``: an ensemble of its hops, batching like its blocks."""
    return render_ensemble_config(
        segment.name,
        [(h.triton_model, h.input.name, h.output.name) for h in segment.hops],
        segment.hops[0].input,
        segment.hops[-1].output,
        max_batch_size,
    )
