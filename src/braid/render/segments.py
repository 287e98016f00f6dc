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

- an exit head is never fused (the executor reads its logits to decide who leaves);
- a hop the fallback path does not use (*fallback-safe*: a host hop or a link) is not fused
  with one it does use, because the latency check and the fallback are decided before the
  first fallback-safe hop;
- a request that falls back resumes the fallback path after the last hop both share, from any
  point of it, so every suffix of a run (of two hops or more) is a segment too.
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


def can_fuse(a: Hop, b: Hop, fallback_models: frozenset[str]) -> bool:
    """Whether hop ``b`` may run in the same ensemble call as the hop ``a`` just before it."""
    return (
        a.server == b.server
        and a.role != "exit"
        and b.role != "exit"
        and (a.triton_model in fallback_models) == (b.triton_model in fallback_models)
    )


def runs(hops: Sequence[Hop], fallback_models: frozenset[str]) -> Iterator[tuple[Hop, ...]]:
    """The maximal fusable runs of ``hops`` (of any length, in order)."""
    start = 0
    for index in range(1, len(hops) + 1):
        if index == len(hops) or not can_fuse(hops[index - 1], hops[index], fallback_models):
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
    """Every segment the catalog's paths can use: each run's suffixes of two hops or more."""
    fallback_models = frozenset(h.triton_model for h in catalog.path(catalog.original_path).hops)
    out: dict[str, Segment] = {}
    for entry in catalog.paths:
        for run in runs(entry.hops, fallback_models):
            for start in range(len(run) - 1):
                tail = run[start:]
                name = segment_name([h.triton_model for h in tail])
                out.setdefault(name, Segment(name, tail[0].server, tail))
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
