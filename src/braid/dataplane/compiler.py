"""The path compiler: a catalog and its endpoints in, the plans a request runs out.

Pure: nothing here waits, sends or reads a file, so it is tested without servers. Compiling
resolves once what every request of a path would otherwise look up (each hop's address,
tensor names, metric children, the hops an unconfident sample continues with, the first hop
the fallback does not use); planning turns a compiled path, from any hop on, into the calls
that run it, fusing consecutive hops into a segment (``braid.render.segments``) where the
server has that ensemble ready. A routing table is checked against the compiled paths here
too, so a table the executor could not run is refused before it is swapped in.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from prometheus_client import Counter, Histogram

from braid.api.catalog import Hop, PathCatalog, PathEntry
from braid.api.common import TensorSpec
from braid.api.routing import Endpoints, RoutingTable
from braid.dataplane.batching import HopBatcher
from braid.dataplane.metrics import GatewayMetrics
from braid.dataplane.routing import RoutingTableError
from braid.logs import log_event
from braid.render.segments import segment_name

logger = logging.getLogger(__name__)

GATEWAY_TIER = "local"
"""The gateway runs beside the local provider's server: tensors to or from a host cross tiers."""

BatcherFor = Callable[[str, str, str, str, str], HopBatcher]
"""``(address, model, input_name, input_datatype, output_name)`` -> the batcher of that model
at that address, one per pair however many path positions call it."""

PlanPart = Literal["hops", "through_exit", "continuation"]
"""Which hops of a compiled path a plan runs: its own (``through_exit``: with a terminal exit
head fused into the segment before it, for a request where every sample leaves there), or the
continuation after its exit."""

Plan = tuple[tuple[int, "CompiledHop"], ...]
"""The calls that run a path's hops from some index on: (index of the first hop, hop or
segment)."""


class CatalogError(ValueError):
    """The catalog cannot be served: hops that do not chain, a path ending in a different
    output than the model's, an exit head that is not last."""


def shared_prefix(a: Sequence[str], b: Sequence[str]) -> int:
    """How many leading hops (Triton model names) two paths have in common."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _same(a: TensorSpec, b: TensorSpec) -> bool:
    return a.datatype == b.datatype and list(a.shape) == list(b.shape)


def check_path(entry: PathEntry, model_in: TensorSpec, model_out: TensorSpec) -> list[str]:
    """Problems that make ``entry`` unservable by the executor (empty when it is fine)."""
    problems = []
    hops = entry.hops
    if not _same(hops[0].input, model_in):
        problems.append(f"{entry.id}: first hop takes {hops[0].input}, the model takes {model_in}")
    for prev, cur in itertools.pairwise(hops):
        if not _same(prev.output, cur.input):
            problems.append(
                f"{entry.id}: {prev.triton_model} gives {prev.output.datatype}{prev.output.shape}"
                f" but {cur.triton_model} takes {cur.input.datatype}{cur.input.shape}"
            )
    if not _same(hops[-1].output, model_out):
        problems.append(f"{entry.id}: ends in {hops[-1].output}, the model gives {model_out}")
    exits = [i for i, h in enumerate(hops) if h.role == "exit"]
    if exits and exits != [len(hops) - 1]:
        problems.append(f"{entry.id}: an exit head must be the last hop")
    if exits and len(hops) < 2:
        problems.append(f"{entry.id}: an exit head needs a block before it")
    return problems


@dataclass(frozen=True, eq=False)
class CompiledHop:
    """One hop of one path position, with everything a call needs resolved up front."""

    model: str
    role: str
    server: str
    address: str
    input_name: str
    input_datatype: str
    output_name: str
    output_datatype: str
    fallback_safe: bool
    """The fallback path does not use this model: its failure can be answered by falling back."""
    duration: Histogram
    in_crossing: Counter | None
    """Counts the input's bytes when it arrives from another tier's server."""
    batcher: HopBatcher
    """Shared by every path position that calls this model at this address."""
    parts: tuple[CompiledHop, ...] = ()
    """For a fused segment: the hops it runs (its own ``duration`` is not observed)."""

    @property
    def span(self) -> int:
        """How many of the path's hops this call runs (a segment: its parts)."""
        return len(self.parts) or 1


@dataclass(frozen=True, eq=False)
class CompiledPath:
    id: str
    kind: str
    hops: tuple[CompiledHop, ...]
    exit_index: int | None
    exit_block: int | None
    continuation: tuple[CompiledHop, ...]
    """The original path's hops after the exit block: where unconfident samples go on."""
    divergence: int | None
    """Index of the first fallback-safe hop: where the latency check is made."""
    out_crossing: Counter | None
    request_duration: Histogram
    samples: Counter
    exits: Counter | None
    fallbacks: dict[str, Counter] = field(default_factory=dict)

    @property
    def models(self) -> frozenset[str]:
        return frozenset(h.model for h in self.hops)


class CompiledCatalog:
    """Every servable path of one local model's catalog, compiled against ``endpoints``.

    Paths with a hop nobody serves, or whose hops do not chain, are left out with the reason
    in ``skipped``; the catalog is refused (``CatalogError``) when its original path is one.
    """

    def __init__(
        self,
        catalog: PathCatalog,
        endpoints: Endpoints,
        metrics: GatewayMetrics,
        batcher_for: BatcherFor,
    ) -> None:
        self.catalog = catalog
        self.model = catalog.local_model
        self.endpoints = endpoints
        self.metrics = metrics
        self._batcher_for = batcher_for
        original = catalog.path(catalog.original_path)
        self.input_spec = original.hops[0].input
        self.output_spec = original.hops[-1].output
        self.paths: dict[str, CompiledPath] = {}
        self.skipped: dict[str, str] = {}
        self._shared: dict[tuple[str, str], int] = {}
        self._compile_all(original)
        if catalog.original_path not in self.paths:
            reason = self.skipped.get(catalog.original_path, "not compiled")
            raise CatalogError(f"the original path cannot be served: {reason}")

    def _compile_all(self, original: PathEntry) -> None:
        original_models = [h.triton_model for h in original.hops]
        for entry in self.catalog.paths:
            problems = check_path(entry, self.input_spec, self.output_spec)
            missing = [
                h.triton_model
                for h in entry.hops
                if self.endpoints.address(h.triton_model, h.server) is None
            ]
            if missing:
                problems.append(f"{entry.id}: no endpoint serves {missing}")
            if problems:
                self.skipped[entry.id] = "; ".join(problems)
                log_event(
                    logger,
                    "executor.path_skipped",
                    level=logging.WARNING,
                    model=self.model,
                    path=entry.id,
                    why=self.skipped[entry.id],
                )
                continue
            self.paths[entry.id] = self._compile(entry, original, original_models)

    def _compile_hops(
        self, hops: Sequence[Hop], fallback_models: frozenset[str], previous_server: str
    ) -> tuple[CompiledHop, ...]:
        out = []
        prev = previous_server
        for hop in hops:
            address = self.endpoints.address(hop.triton_model, hop.server)
            assert address is not None  # checked by the caller
            crossing = (
                self.metrics.bytes_crossed.labels(self.model, prev, hop.server)
                if hop.server != prev
                else None
            )
            batcher = self._batcher_for(
                address, hop.triton_model, hop.input.name, hop.input.datatype, hop.output.name
            )
            out.append(
                CompiledHop(
                    model=hop.triton_model,
                    role=hop.role,
                    server=hop.server,
                    address=address,
                    input_name=hop.input.name,
                    input_datatype=hop.input.datatype,
                    output_name=hop.output.name,
                    output_datatype=hop.output.datatype,
                    fallback_safe=hop.triton_model not in fallback_models,
                    duration=self.metrics.hop_duration.labels(
                        self.model, hop.triton_model, hop.server
                    ),
                    in_crossing=crossing,
                    batcher=batcher,
                )
            )
            prev = hop.server
        return tuple(out)

    def _compile(
        self, entry: PathEntry, original: PathEntry, original_models: list[str]
    ) -> CompiledPath:
        fallback_models = frozenset(original_models)
        hops = self._compile_hops(entry.hops, fallback_models, GATEWAY_TIER)
        exit_index = next((i for i, h in enumerate(entry.hops) if h.role == "exit"), None)
        continuation: tuple[CompiledHop, ...] = ()
        exit_block = entry.exit_after
        if exit_index is not None:
            before = entry.hops[exit_index - 1]
            if before.triton_model in original_models:
                at = original_models.index(before.triton_model)
                continuation = self._compile_hops(
                    original.hops[at + 1 :], fallback_models, before.server
                )
            if exit_block is None:
                exit_block = exit_index - 1
        divergence = next((i for i, h in enumerate(hops) if h.fallback_safe), None)
        last = entry.hops[-1]
        return CompiledPath(
            id=entry.id,
            kind=entry.kind,
            hops=hops,
            exit_index=exit_index,
            exit_block=exit_block,
            continuation=continuation,
            divergence=divergence,
            out_crossing=(
                self.metrics.bytes_crossed.labels(self.model, last.server, GATEWAY_TIER)
                if last.server != GATEWAY_TIER
                else None
            ),
            request_duration=self.metrics.request_duration.labels(self.model, entry.id),
            samples=self.metrics.samples.labels(self.model, entry.id),
            exits=(
                self.metrics.exits.labels(self.model, entry.id, str(exit_block))
                if exit_index is not None
                else None
            ),
        )

    # -- routing tables ------------------------------------------------------------------

    def fallback(self, table: RoutingTable) -> CompiledPath:
        """The path ``table`` falls back to (the catalog's original unless it names one)."""
        return self.paths[table.fallback_path or self.catalog.original_path]

    def check_table(self, table: RoutingTable) -> CompiledPath:
        """The fallback path of ``table``; ``RoutingTableError`` when it cannot be run here."""
        if table.model != self.model:
            raise RoutingTableError(f"routing table is for {table.model!r}, not {self.model!r}")
        unknown = table.unknown_paths(self.paths)
        if unknown:
            detail = "; ".join(f"{i}: {self.skipped.get(i, 'not in the catalog')}" for i in unknown)
            raise RoutingTableError(f"routing table names paths this gateway cannot run: {detail}")
        fallback = self.fallback(table)
        if fallback.exit_index is not None or any(h.server != GATEWAY_TIER for h in fallback.hops):
            raise RoutingTableError(
                f"fallback path {fallback.id} must run on the local server without an exit"
            )
        return fallback

    def shared_with(self, path: CompiledPath, fallback: CompiledPath) -> int:
        """How many leading hops ``path`` shares with ``fallback`` (cached per pair)."""
        key = (path.id, fallback.id)
        n = self._shared.get(key)
        if n is None:
            n = shared_prefix([h.model for h in path.hops], [h.model for h in fallback.hops])
            self._shared[key] = n
        return n

    def addresses(self) -> dict[str, set[str]]:
        """Every address the compiled paths call, with the models they need there."""
        out: dict[str, set[str]] = {}
        for path in self.paths.values():
            for hop in (*path.hops, *path.continuation):
                out.setdefault(hop.address, set()).add(hop.model)
        return out


def _fusable(a: CompiledHop, b: CompiledHop, *, b_ends_path: bool) -> bool:
    """``braid.render.segments.can_fuse`` for compiled hops, plus: same address, and no side
    output (the ensemble would not return it)."""
    return (
        a.address == b.address
        and a.role != "exit"
        and (b.role != "exit" or b_ends_path)
        and a.batcher.side_output is None
        and b.batcher.side_output is None
    )


class SegmentPlanner:
    """Plans a compiled path's calls: the longest ready segment at each point, else the hop.

    What is ready is what the servers last said (``set_ready``, from the executor's probe);
    plans are cached until that changes, so planning costs a dictionary lookup per request.
    """

    def __init__(self, batcher_for: BatcherFor, *, fuse: bool = True) -> None:
        self._batcher_for = batcher_for
        self.fuse = fuse
        self._ready: dict[str, frozenset[str]] = {}
        self._segments: dict[tuple[str, int], CompiledHop] = {}
        self._plans: dict[tuple[str, str, int], Plan] = {}
        """(path, part, first index) -> its calls."""

    def ready_models(self, address: str) -> frozenset[str]:
        """The models ``address`` answered ready at the last probe (none before one)."""
        return self._ready.get(address, frozenset())

    def set_ready(self, address: str, models: frozenset[str]) -> None:
        """Record what ``address`` has ready; plans are redrawn when that changed (a segment
        may have come or gone)."""
        if models != self._ready.get(address):
            self._plans.clear()
        self._ready[address] = models

    def set_down(self, address: str) -> None:
        """``address`` did not answer: nothing there is ready."""
        if self._ready.get(address):
            self._plans.clear()
        self._ready[address] = frozenset()

    def refuse(self, segment: CompiledHop) -> None:
        """The server refused ``segment``: plan without it until a probe finds it ready."""
        self._ready[segment.address] = self.ready_models(segment.address) - {segment.model}
        self._plans.clear()

    def plan(self, path: CompiledPath, part: PlanPart, start: int) -> Plan:
        """The calls that run ``path``'s ``part`` from hop ``start`` on."""
        key = (path.id, part, start)
        plan = self._plans.get(key)
        if plan is not None:
            return plan
        hops = path.continuation if part == "continuation" else path.hops
        through_exit = part == "through_exit"
        steps: list[tuple[int, CompiledHop]] = []
        i = start
        while i < len(hops):
            end = i + 1
            while (
                self.fuse
                and end < len(hops)
                and _fusable(
                    hops[end - 1], hops[end], b_ends_path=through_exit and end == len(hops) - 1
                )
            ):
                end += 1
            step = next(
                (s for n in range(end, i + 1, -1) if (s := self._segment(hops[i:n])) is not None),
                hops[i],
            )
            steps.append((i, step))
            i += step.span
        plan = self._plans[key] = tuple(steps)
        return plan

    def _segment(self, parts: Sequence[CompiledHop]) -> CompiledHop | None:
        """The segment that runs ``parts``, if their server has it ready."""
        first, last = parts[0], parts[-1]
        name = segment_name([p.model for p in parts])
        if name not in self._ready.get(first.address, frozenset()):
            return None
        # Per path position (like the hops it runs, e.g. its bytes-crossed counter); the batcher
        # is per model and address, shared.
        key = (name, id(first))
        segment = self._segments.get(key)
        if segment is None:
            segment = CompiledHop(
                model=name,
                role="segment",
                server=first.server,
                address=first.address,
                input_name=first.input_name,
                input_datatype=first.input_datatype,
                output_name=last.output_name,
                output_datatype=last.output_datatype,
                # One of its hops can be replaced by the fallback: so can the call.
                fallback_safe=any(p.fallback_safe for p in parts),
                duration=first.duration,
                in_crossing=first.in_crossing,
                batcher=self._batcher_for(
                    first.address, name, first.input_name, first.input_datatype, last.output_name
                ),
                parts=tuple(parts),
            )
            self._segments[key] = segment
        return segment
