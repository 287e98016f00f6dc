"""The path executor: runs one request through the hops of a path, over real Triton servers.

A path from the catalog is a list of hops (a block, a link or an exit head, each a Triton
model on the local or the host provider's server). The executor compiles every path once into
a plan that holds everything a request needs (the hop's address, tensor names, its metric
children, the hops an unconfident sample continues with, how much of it it shares with the
fallback path), so the per-request work is: pick a path, then for each hop build one
``ModelInferRequest`` whose ``raw_input_contents`` is the previous hop's
``raw_output_contents``.

Behaviour, in the order a request meets it:

- **Choice.** A path pinned by the client (``braid_path``), else the per-sample router (the
  DIMEE hook) if one is installed and has an opinion, else the routing table's weights.
- **Early exit.** A path ending in an exit head always exits there unless the table sets a
  threshold for that block; with a threshold, samples whose max-softmax confidence reaches it
  exit and the rest continue through the original path's blocks after the exit block, all
  within the same request (a batch is split and reassembled in order).
- **Fallback.** A hop the fallback path does not use (a host hop, or a link) that fails, or
  whose server is cooling down after a failure, or that is expected to make the request miss
  the latency bound L_T (or the client's deadline) while the fallback would not, sends the
  request back to the fallback path (the catalog's original path by default), resuming from
  the last hop both paths share, so work already done is not repeated.
- **Retry after time.** A path left for time is only left on the gateway's *expectation* of its
  hops, which only calls update; so every ``retry_after_s`` one request (whose own deadline
  allows it) takes the path anyway, and its measurements replace the stale estimates. A host
  that was slow and is fast again gets its traffic back instead of being avoided forever.
- **Deadlines.** The client's budget (gRPC deadline, REST header or ``timeout`` parameter;
  a default otherwise, so nothing waits forever) becomes each hop's timeout: the time left.
  Host hops are also capped by ``host_timeout_s`` so a hung host leaves time to fall back.
- **Coalescing.** Requests that reach the same hop while it is busy share one Triton call
  (``braid.dataplane.batching``): the gateway's cost is per RPC, not per sample.
- **Fusion.** Consecutive hops that the executor need not stop between (same server, no exit
  head, all on the fallback path or all off it) are called as one Triton ensemble, a
  *segment* (``braid.render.segments``), when their server has it ready; otherwise hop by
  hop. A segment's time is shared among its hops in proportion to what each is expected to
  take, so per-hop metrics and expectations keep their meaning.

A new routing table is swapped in as one reference: each request reads it once at its start
and keeps it to the end, so a reload never affects a request in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc
import numpy as np
from prometheus_client import Counter, Histogram
from tritonclient.grpc import service_pb2

from braid.api.catalog import Hop, PathCatalog, PathEntry
from braid.api.common import TensorSpec
from braid.api.routing import Endpoints, RoutingTable, single_path_table
from braid.dataplane.batching import HopAnswer, HopBatcher
from braid.dataplane.errors import InferenceError, Reason
from braid.dataplane.metrics import GatewayMetrics, default_metrics
from braid.dataplane.pool import TritonPool
from braid.dataplane.routing import RoutingTableError, WeightedChoice
from braid.dataplane.tensors import (
    InferRequest,
    InferResponse,
    Tensor,
    max_softmax,
    scatter_rows,
    take_rows,
    validate_request,
)
from braid.logs import log_event
from braid.render.segments import segment_name

logger = logging.getLogger(__name__)

GATEWAY_TIER = "local"
"""The gateway runs beside the local provider's server: tensors to or from a host cross tiers."""


class SampleRouter(Protocol):
    """Per-sample tier routing (DIMEE): which path each sample of a batch should take.

    Called with the request's input as a batch-first numpy view (read-only) and the routing
    table in force; returns one path id per sample, or ``None`` to leave the request to the
    table's weights. It runs on the event loop, so it must be cheap (a nearest-centroid
    lookup on an embedding is; a forward pass is not).
    """

    def route(self, inputs: np.ndarray[Any, Any], table: RoutingTable) -> Sequence[str] | None:
        """Path ids, one per sample, or ``None``."""
        ...


class SampleFeedback(Protocol):
    """A ``SampleRouter`` that learns from the answers (DIMEE's Ours-D): the gateway brings
    back one extra output of each path in ``feedback_outputs`` (path id -> output name of
    its last hop) and hands it to ``observe`` once the path answered, on the event loop,
    with the samples that path served (batch-first, in request order). Paths that fell
    back are not observed: the fallback's model is not the one the router chose.
    """

    @property
    def feedback_outputs(self) -> Mapping[str, str]: ...

    def observe(self, inputs: np.ndarray[Any, Any], path: str, side: bytes) -> None: ...


class HopError(Exception):
    """A hop's server refused or failed a call; the executor decides between fallback and error."""

    def __init__(self, hop: CompiledHop, code: grpc.StatusCode, detail: str) -> None:
        super().__init__(f"{hop.model} at {hop.address}: {code.name}: {detail}")
        self.hop = hop
        self.code = code
        self.detail = detail

    @property
    def transport(self) -> bool:
        """The server could not be reached or did not answer in time (not a model error)."""
        return self.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)

    def to_error(self) -> InferenceError:
        reason = Reason.UPSTREAM_UNAVAILABLE if self.transport else Reason.UPSTREAM_ERROR
        return InferenceError(reason, str(self))


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


@dataclass(slots=True)
class _Run:
    """Per-request state that every hop of the request consults."""

    table: RoutingTable
    start: float
    deadline: float
    client_deadline: bool
    bound_deadline: float | None
    retrying: bool = False
    """This request retries a path left for time: its measurements replace the estimates."""


@dataclass(slots=True)
class _Outcome:
    data: bytes
    shape: tuple[int, ...]
    served_by: str
    exits: int = 0
    fallback: str | None = None
    side: bytes | None = None
    """The last hop's side output (``SampleFeedback``), when it was asked for."""


@dataclass(frozen=True)
class ModelSignature:
    """What the gateway publishes about a model (KServe v2 model metadata)."""

    name: str
    versions: tuple[str, ...]
    platform: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    max_batch_size: int


MAX_CLIENT_BUDGET_S = 3600.0
"""A client's time budget is honoured up to an hour. Larger ones (a fuzzer sent 10**30 µs)
overflowed gRPC's deadline arithmetic into a deadline already passed: a 504 for a client who
asked to wait longer than anyone."""


def fall_back_for_time(
    expected_path_s: float, expected_fallback_s: float, remaining_s: float
) -> bool:
    """Whether to leave a path before its first fallback-safe hop because of time.

    Only when the path is expected to miss the time left (to L_T or the client's deadline)
    *and* the fallback is expected to be quicker: falling back to something slower would
    miss the bound too, and cost the work already done.
    """
    return expected_path_s > remaining_s and expected_fallback_s < expected_path_s


def shared_prefix(a: Sequence[str], b: Sequence[str]) -> int:
    """How many leading hops (Triton model names) two paths have in common."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


class CatalogError(ValueError):
    """The catalog cannot be served: hops that do not chain, a path ending in a different
    output than the model's, an exit head that is not last."""


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


class PathExecutor:
    """Executes the paths of one local model's catalog; one instance serves every request.

    ``endpoints`` resolves each hop to a Triton gRPC address; paths with a hop nobody serves
    are left out (and a routing table naming them is refused). ``rng`` makes the weighted
    choice reproducible in tests.
    """

    def __init__(
        self,
        catalog: PathCatalog,
        endpoints: Endpoints,
        pool: TritonPool,
        table: RoutingTable | None = None,
        *,
        metrics: GatewayMetrics | None = None,
        sample_router: SampleRouter | None = None,
        rng: random.Random | None = None,
        default_timeout_s: float = 30.0,
        host_timeout_s: float = 2.0,
        max_batch_size: int = 64,
        rpc_overhead_s: float = 0.0005,
        probe_interval_s: float = 1.0,
        retry_after_s: float = 5.0,
        coalesce: bool = True,
        max_in_flight_per_hop: int = 1,
        fuse: bool = True,
    ) -> None:
        self.catalog = catalog
        self.model = catalog.local_model
        self.endpoints = endpoints
        self.pool = pool
        self.metrics = metrics if metrics is not None else default_metrics()
        self.sample_router = sample_router
        feedback = getattr(sample_router, "feedback_outputs", None)
        self._feedback: SampleFeedback | None = (
            sample_router if feedback else None  # type: ignore[assignment]
        )
        self._side_outputs: dict[str, str] = (
            {
                entry.hops[-1].triton_model: feedback[entry.id]
                for entry in catalog.paths
                if entry.id in feedback
            }
            if feedback
            else {}
        )
        """Triton model -> the extra output its batcher asks for (the feedback's paths)."""
        self.rng = rng if rng is not None else random.Random()
        self.default_timeout_s = default_timeout_s
        self.host_timeout_s = host_timeout_s
        self.probe_interval_s = probe_interval_s
        self.retry_after_s = retry_after_s
        original = catalog.path(catalog.original_path)
        self.input_spec = original.hops[0].input
        self.output_spec = original.hops[-1].output
        self.max_batch_size = max_batch_size
        self.coalesce = coalesce
        self.max_in_flight_per_hop = max_in_flight_per_hop
        self.fuse = fuse
        self._batchers: dict[tuple[str, str], HopBatcher] = {}
        self._segments: dict[tuple[str, int], CompiledHop] = {}
        self._plans: dict[tuple[str, str, int], tuple[tuple[int, CompiledHop], ...]] = {}
        """(path, "hops" or "continuation", first index) -> its calls: (index, hop or segment)."""
        # Expected time per hop (EWMA of what the gateway observed, seeded from the catalog's
        # compute time plus one RPC): the basis of the "would miss the latency bound" check.
        self._expected: dict[str, float] = {}
        self._observed_at: dict[str, float] = {}
        """When each hop's expectation was last measured: one older than ``retry_after_s`` is
        stale, and a new measurement replaces it instead of moving it by a fifth."""
        self._retry_at: dict[str, float] = {}
        """Per path left for time: when one request may try it again."""
        self.paths: dict[str, CompiledPath] = {}
        self.skipped: dict[str, str] = {}
        for entry in catalog.paths:
            for hop in entry.hops:
                self._expected.setdefault(hop.triton_model, hop.compute_us * 1e-6 + rpc_overhead_s)
        self._compile_all()
        if catalog.original_path not in self.paths:
            reason = self.skipped.get(catalog.original_path, "not compiled")
            raise CatalogError(f"the original path cannot be served: {reason}")
        self._table = self._check_table(
            table if table is not None else single_path_table(self.model, catalog.original_path)
        )
        self._choice = WeightedChoice.of(self._table)
        self._fallback = self.paths[self._table.fallback_path or catalog.original_path]
        self._ready_models: dict[str, frozenset[str]] = {}
        self._shared: dict[tuple[str, str], int] = {}
        self._monitor: asyncio.Task[None] | None = None
        self._publish_table()

    # -- compilation ---------------------------------------------------------------------

    def _compile_all(self) -> None:
        original = self.catalog.path(self.catalog.original_path)
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
            self.paths[entry.id] = self._compile(entry, original_models)

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
            batcher = self._batcher(
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

    def _batcher(
        self, address: str, model: str, input_name: str, input_datatype: str, output_name: str
    ) -> HopBatcher:
        batcher = self._batchers.get((address, model))
        if batcher is None:
            batcher = HopBatcher(
                self.pool,
                address,
                model,
                input_name,
                input_datatype,
                output_name,
                max_batch_size=self.max_batch_size,
                max_in_flight=self.max_in_flight_per_hop,
                calls_counter=self.metrics.triton_calls.labels(self.model, model),
                side_output=self._side_outputs.get(model),
            )
            self._batchers[(address, model)] = batcher
        return batcher

    def _compile(self, entry: PathEntry, original_models: list[str]) -> CompiledPath:
        original = self.catalog.path(self.catalog.original_path)
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

    # -- fused segments ------------------------------------------------------------------

    @staticmethod
    def _fusable(a: CompiledHop, b: CompiledHop) -> bool:
        """``braid.render.segments.can_fuse`` for compiled hops, plus: same address, and no
        side output (the ensemble would not return it)."""
        return (
            a.address == b.address
            and a.role != "exit"
            and b.role != "exit"
            and a.fallback_safe == b.fallback_safe
            and a.batcher.side_output is None
            and b.batcher.side_output is None
        )

    def _segment(self, parts: Sequence[CompiledHop]) -> CompiledHop | None:
        """The segment that runs ``parts``, if their server has it ready."""
        first, last = parts[0], parts[-1]
        name = segment_name([p.model for p in parts])
        if name not in self._ready_models.get(first.address, frozenset()):
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
                fallback_safe=first.fallback_safe,
                duration=first.duration,
                in_crossing=first.in_crossing,
                batcher=self._batcher(
                    first.address, name, first.input_name, first.input_datatype, last.output_name
                ),
                parts=tuple(parts),
            )
            self._segments[key] = segment
        return segment

    def _plan(
        self, path: CompiledPath, which: str, hops: tuple[CompiledHop, ...], start: int
    ) -> tuple[tuple[int, CompiledHop], ...]:
        """The calls that run ``hops[start:]``: the longest ready segment at each point, else
        the hop alone. Cached until the servers' ready models change."""
        key = (path.id, which, start)
        plan = self._plans.get(key)
        if plan is not None:
            return plan
        steps: list[tuple[int, CompiledHop]] = []
        i = start
        while i < len(hops):
            end = i + 1
            while self.fuse and end < len(hops) and self._fusable(hops[end - 1], hops[end]):
                end += 1
            step = next(
                (s for n in range(end, i + 1, -1) if (s := self._segment(hops[i:n])) is not None),
                hops[i],
            )
            steps.append((i, step))
            i += len(step.parts) or 1
        plan = self._plans[key] = tuple(steps)
        return plan

    # -- routing table -------------------------------------------------------------------

    def _check_table(self, table: RoutingTable) -> RoutingTable:
        if table.model != self.model:
            raise RoutingTableError(f"routing table is for {table.model!r}, not {self.model!r}")
        unknown = table.unknown_paths(self.paths)
        if unknown:
            detail = "; ".join(f"{i}: {self.skipped.get(i, 'not in the catalog')}" for i in unknown)
            raise RoutingTableError(f"routing table names paths this gateway cannot run: {detail}")
        fallback = self.paths[table.fallback_path or self.catalog.original_path]
        if fallback.exit_index is not None or any(h.server != GATEWAY_TIER for h in fallback.hops):
            raise RoutingTableError(
                f"fallback path {fallback.id} must run on the local server without an exit"
            )
        return table

    @property
    def table(self) -> RoutingTable:
        return self._table

    def update_table(self, table: RoutingTable) -> None:
        """Swap in a new routing table; requests in flight finish with the one they started with.

        Raises ``RoutingTableError`` (and keeps the current table) when ``table`` is unusable.
        """
        table = self._check_table(table)
        choice = WeightedChoice.of(table)
        fallback = self.paths[table.fallback_path or self.catalog.original_path]
        # Three plain assignments with no await between them: atomic on the event loop.
        self._table, self._choice, self._fallback = table, choice, fallback
        self._publish_table()
        log_event(
            logger,
            "routing.applied",
            model=self.model,
            generation=table.generation,
            paths=",".join(f"{p.id}={p.weight:g}" for p in table.paths),
        )

    def _publish_table(self) -> None:
        self.metrics.routing_generation.labels(self.model).set(self._table.generation)
        shares = self._choice.shares()
        for path_id in self.paths:
            self.metrics.path_weight.labels(self.model, path_id).set(shares.get(path_id, 0.0))

    # -- metadata and health -------------------------------------------------------------

    def signature(self) -> ModelSignature:
        return ModelSignature(
            name=self.model,
            versions=("1",),
            platform="braid_path_executor",
            inputs=(self.input_spec,),
            outputs=(self.output_spec,),
            max_batch_size=self.max_batch_size,
        )

    def _addresses(self) -> dict[str, set[str]]:
        """Every address this executor calls, with the models it needs there."""
        out: dict[str, set[str]] = {}
        for path in self.paths.values():
            for hop in (*path.hops, *path.continuation):
                out.setdefault(hop.address, set()).add(hop.model)
        return out

    @property
    def ready(self) -> bool:
        """Ready when every model of the fallback path answered ready at the last probe:
        then any request can be served, whatever happens to hosts."""
        return all(
            hop.model in self._ready_models.get(hop.address, frozenset())
            for hop in self._fallback.hops
        )

    async def probe(self) -> None:
        """Ask every endpoint which models are ready; open or close its circuit accordingly."""
        needed = self._addresses()

        async def one(address: str, models: set[str]) -> None:
            try:
                response = await self.pool.stub(address).RepositoryIndex(
                    service_pb2.RepositoryIndexRequest(ready=True), timeout=1.0
                )
            except grpc.aio.AioRpcError as exc:
                if self._ready_models.get(address):
                    self._plans.clear()
                self._ready_models[address] = frozenset()
                self.pool.mark_down(address, f"probe: {exc.code().name}")
                return
            ready = frozenset(m.name for m in response.models if m.state == "READY")
            if ready != self._ready_models.get(address):
                self._plans.clear()  # a segment may have come or gone
            self._ready_models[address] = ready
            if models <= ready:
                self.pool.mark_up(address)
            else:
                self.pool.mark_down(address, f"probe: not ready: {sorted(models - ready)}")

        await asyncio.gather(*(one(a, m) for a, m in needed.items()))

    async def _probe_forever(self) -> None:
        while True:
            await asyncio.sleep(self.probe_interval_s)
            try:
                await self.probe()
            except Exception as exc:  # the monitor must outlive any one bad probe
                log_event(logger, "executor.probe_failed", level=logging.WARNING, error=exc)

    async def start(self) -> None:
        """Open the channels, learn the batch limit, probe once and keep probing."""
        needed = self._addresses()
        for address in needed:
            self.pool.open(address)
        limits = await asyncio.gather(
            *(self.pool.max_batch_size(a, m) for a, models in needed.items() for m in models)
        )
        known = [b for b in limits if b is not None and b > 0]
        if known:
            self.max_batch_size = min(self.max_batch_size, *known)
        for batcher in self._batchers.values():
            batcher.max_batch_size = self.max_batch_size
        await self.probe()
        if self._monitor is None:
            self._monitor = asyncio.get_running_loop().create_task(self._probe_forever())
        log_event(
            logger,
            "executor.started",
            model=self.model,
            paths=len(self.paths),
            skipped=len(self.skipped),
            endpoints=",".join(sorted(needed)),
            max_batch=self.max_batch_size,
            ready=self.ready,
        )

    async def close(self) -> None:
        if self._monitor is not None:
            self._monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._monitor
            self._monitor = None

    # -- the hot path --------------------------------------------------------------------

    def _count_error(self, exc: InferenceError) -> InferenceError:
        self.metrics.errors.labels(self.model, exc.reason.value).inc()
        exc.counted = True
        return exc

    async def infer(self, request: InferRequest) -> InferResponse:
        """Serve one request; raises ``InferenceError`` (counted) with the reason on failure."""
        start = time.perf_counter()
        table = self._table
        try:
            batch = validate_request(
                request, (self.input_spec,), (self.output_spec,), self.max_batch_size
            )
            tensor = request.inputs[0]
            budget = (
                min(request.timeout_s, MAX_CLIENT_BUDGET_S)
                if request.timeout_s is not None
                else self.default_timeout_s
            )
            run = _Run(
                table=table,
                start=start,
                deadline=start + budget,
                client_deadline=request.timeout_s is not None,
                bound_deadline=(
                    start + table.latency_bound_us * 1e-6 if table.latency_bound_us else None
                ),
            )
            routed, outcome = await self._route(request, tensor, batch, run)
        except InferenceError as exc:
            raise self._count_error(exc) from None
        except asyncio.CancelledError:
            self.metrics.errors.labels(self.model, Reason.CANCELLED.value).inc()
            raise
        elapsed = time.perf_counter() - start
        path = self.paths.get(routed)
        if path is not None:
            path.request_duration.observe(elapsed)
        else:
            self.metrics.request_duration.labels(self.model, routed).observe(elapsed)
        name = self.output_spec.name
        return InferResponse(
            model=self.model,
            id=request.id,
            outputs=[Tensor(name, self.output_spec.datatype, outcome.shape, outcome.data)],
            path=routed,
            served_by=outcome.served_by,
            exits=outcome.exits,
            fallback=outcome.fallback,
        )

    async def _route(
        self, request: InferRequest, tensor: Tensor, batch: int, run: _Run
    ) -> tuple[str, _Outcome]:
        if request.path is not None:
            path = self.paths.get(request.path)
            if path is None:
                why = self.skipped.get(request.path, "not in the catalog")
                raise InferenceError(
                    Reason.UNKNOWN_PATH,
                    f"model {self.model!r} cannot run path {request.path!r}: {why}",
                )
            return path.id, await self._run_path(path, tensor.data, tensor.shape, batch, run)
        if self.sample_router is not None:
            ids = self.sample_router.route(tensor.numpy(), run.table)
            if ids is not None:
                return await self._run_per_sample(ids, tensor, batch, run)
        path = self.paths[self._choice.pick(self.rng.random())]
        return path.id, await self._run_path(path, tensor.data, tensor.shape, batch, run)

    async def _run_per_sample(
        self, ids: Sequence[str], tensor: Tensor, batch: int, run: _Run
    ) -> tuple[str, _Outcome]:
        if len(ids) != batch:
            raise InferenceError(
                Reason.INTERNAL, f"the sample router returned {len(ids)} paths for {batch} samples"
            )
        groups: dict[str, list[int]] = {}
        for index, path_id in enumerate(ids):
            groups.setdefault(path_id, []).append(index)
        unknown = sorted(set(groups) - set(self.paths))
        if unknown:
            raise InferenceError(
                Reason.INTERNAL, f"the sample router chose unknown paths {unknown}"
            )
        if len(groups) == 1:
            path = self.paths[ids[0]]
            outcome = await self._run_path(path, tensor.data, tensor.shape, batch, run)
            self._observe(tensor, path.id, None, outcome)
            return path.id, outcome
        rows = {path_id: np.asarray(idx, dtype=np.intp) for path_id, idx in groups.items()}
        async with asyncio.TaskGroup() as tasks:
            pending = {
                path_id: tasks.create_task(
                    self._run_path(
                        self.paths[path_id],
                        take_rows(tensor.data, batch, r),
                        (len(r), *tensor.shape[1:]),
                        len(r),
                        run,
                    )
                )
                for path_id, r in rows.items()
            }
        outcomes = {path_id: task.result() for path_id, task in pending.items()}
        for path_id, outcome in outcomes.items():
            self._observe(tensor, path_id, rows[path_id], outcome)
        merged = scatter_rows([(rows[p], o.data) for p, o in outcomes.items()], batch)
        first = next(iter(outcomes.values()))
        served = ",".join(sorted({o.served_by for o in outcomes.values()}))
        fallbacks = sorted({o.fallback for o in outcomes.values() if o.fallback})
        return "per-sample", _Outcome(
            data=merged,
            shape=(batch, *first.shape[1:]),
            served_by=served,
            exits=sum(o.exits for o in outcomes.values()),
            fallback=",".join(fallbacks) or None,
        )

    def _observe(
        self, tensor: Tensor, path_id: str, rows: np.ndarray[Any, Any] | None, outcome: _Outcome
    ) -> None:
        """Hand a path's side output to the feedback router (synchronous: one atomic update)."""
        if self._feedback is None or outcome.side is None or outcome.fallback is not None:
            return
        inputs = tensor.numpy()
        self._feedback.observe(inputs if rows is None else inputs[rows], path_id, outcome.side)

    async def _call(
        self, hop: CompiledHop, data: bytes, shape: tuple[int, ...], run: _Run
    ) -> HopAnswer:
        now = time.perf_counter()
        remaining = run.deadline - now
        if remaining <= 0:
            raise self._deadline(run, hop)
        timeout = min(remaining, self.host_timeout_s) if hop.fallback_safe else remaining
        if hop.in_crossing is not None:
            hop.in_crossing.inc(len(data))
        try:
            if self.coalesce:
                out = await hop.batcher.call(data, shape, now + timeout)
            else:
                out = await hop.batcher.send(data, shape, now + timeout)
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            # When the call's deadline was the request's own, its passing says nothing about
            # the server: it must not mark the endpoint down for everyone (gRPC's timer may
            # fire a little before perf_counter reaches the deadline, so compare bounds, not
            # clocks).
            if code == grpc.StatusCode.DEADLINE_EXCEEDED and (
                timeout >= remaining or time.perf_counter() >= run.deadline
            ):
                raise self._deadline(run, hop) from None
            failure = HopError(hop, code, exc.details() or "")
            if failure.transport:
                self.pool.mark_down(hop.address, f"{code.name}: {exc.details()}")
            raise failure from None
        except TimeoutError:
            # A coalesced member's own wait ran out: the same bound test as above (asyncio's
            # clock is not perf_counter either).
            if timeout >= remaining or time.perf_counter() >= run.deadline:
                raise self._deadline(run, hop) from None
            raise HopError(hop, grpc.StatusCode.DEADLINE_EXCEEDED, "no answer in time") from None
        except ValueError as exc:
            raise HopError(hop, grpc.StatusCode.INTERNAL, str(exc)) from None
        done = time.perf_counter()
        elapsed = done - now
        if hop.parts:
            total = sum(self._expected[p.model] for p in hop.parts)
            for part in hop.parts:
                share = elapsed * self._expected[part.model] / total if total > 0 else 0.0
                part.duration.observe(share)
                self._learn(part.model, share, done, run)
        else:
            hop.duration.observe(elapsed)
            self._learn(hop.model, elapsed, done, run)
        return out

    def _learn(self, model: str, elapsed: float, done: float, run: _Run) -> None:
        """Move the expectation of ``model``'s calls towards one that took ``elapsed``."""
        expected = self._expected[model]
        last = self._observed_at.get(model)
        if run.retrying or last is None or done - last > self.retry_after_s:
            self._expected[model] = elapsed
        else:
            self._expected[model] = expected + 0.2 * (elapsed - expected)
        self._observed_at[model] = done

    async def _call_step(
        self, step: CompiledHop, data: bytes, shape: tuple[int, ...], run: _Run
    ) -> HopAnswer:
        """Call a hop or a segment; a segment the server refuses (not a transport failure:
        it may have been unloaded) is run hop by hop instead, and not used until the next
        probe finds it ready."""
        if not step.parts:
            return await self._call(step, data, shape, run)
        try:
            return await self._call(step, data, shape, run)
        except HopError as failure:
            if failure.transport:
                raise
            log_event(logger, "executor.segment_refused", level=logging.WARNING, error=failure)
            ready = self._ready_models.get(step.address, frozenset())
            self._ready_models[step.address] = ready - {step.model}
            self._plans.clear()
        answer = HopAnswer(data, shape)
        for part in step.parts:
            answer = await self._call(part, answer.data, answer.shape, run)
        return answer

    def _deadline(self, run: _Run, hop: CompiledHop) -> InferenceError:
        budget = run.deadline - run.start
        who = "the client's" if run.client_deadline else "the gateway's default"
        return InferenceError(
            Reason.DEADLINE, f"{who} deadline of {budget * 1e3:.1f} ms passed before {hop.model}"
        )

    def _shared_with(self, path: CompiledPath, fallback: CompiledPath) -> int:
        key = (path.id, fallback.id)
        n = self._shared.get(key)
        if n is None:
            n = shared_prefix([h.model for h in path.hops], [h.model for h in fallback.hops])
            self._shared[key] = n
        return n

    def _expected_s(self, hops: Sequence[CompiledHop]) -> float:
        return sum(self._expected[h.model] for h in hops)

    def _fallback_reason(self, path: CompiledPath, index: int, run: _Run) -> str | None:
        """Why to leave ``path`` before its fallback-safe hop ``index`` untried, if at all."""
        hop = path.hops[index]
        if not self.pool.available(hop.address):
            return "endpoint_down"
        if index != path.divergence:
            return None
        limits = [run.deadline] if run.client_deadline else []
        if run.bound_deadline is not None:
            limits.append(run.bound_deadline)
        if not limits:
            return None
        fallback = self._fallback
        resume = min(index, self._shared_with(path, fallback))
        remaining = min(limits) - time.perf_counter()
        end = path.exit_index if path.exit_index is not None else len(path.hops)
        expected = self._expected_s(path.hops[index : end + 1])
        if fall_back_for_time(expected, self._expected_s(fallback.hops[resume:]), remaining):
            return None if self._retry_now(path, expected, run) else "latency_bound"
        self._retry_at.pop(path.id, None)
        return None

    def _retry_now(self, path: CompiledPath, expected_s: float, run: _Run) -> bool:
        """Whether this request should try a path left for time, to measure it again.

        The first time a path is left for time starts its clock; after ``retry_after_s`` one
        request goes through (and starts the clock again), unless even the stale expectation
        would make it miss its client's deadline: the retry may miss L_T, never the deadline.
        """
        now = time.perf_counter()
        due = self._retry_at.get(path.id)
        if due is None:
            self._retry_at[path.id] = now + self.retry_after_s
            return False
        if now < due:
            return False
        if run.client_deadline and expected_s > run.deadline - now:
            return False
        self._retry_at[path.id] = now + self.retry_after_s
        run.retrying = True
        return True

    async def _run_path(
        self, path: CompiledPath, data: bytes, shape: tuple[int, ...], batch: int, run: _Run
    ) -> _Outcome:
        path.samples.inc(batch)
        outputs: dict[int, tuple[bytes, tuple[int, ...]]] = {}
        """Hop index -> its output, for the hops whose output the gateway saw (not the inner
        hops of a segment)."""
        current, current_shape = data, shape
        side: bytes | None = None
        for index, hop in self._plan(path, "hops", path.hops, 0):
            if index == path.exit_index:
                return await self._exit(path, hop, current, current_shape, batch, run)
            if hop.fallback_safe:
                reason = self._fallback_reason(path, index, run)
                if reason is not None:
                    return await self._fall_back(path, index, outputs, data, shape, run, reason)
                try:
                    current, current_shape, side = await self._call_step(
                        hop, current, current_shape, run
                    )
                except HopError as failure:
                    reason = "host_unavailable" if failure.transport else "host_error"
                    log_event(logger, "executor.hop_failed", level=logging.DEBUG, error=failure)
                    return await self._fall_back(path, index, outputs, data, shape, run, reason)
            else:
                try:
                    current, current_shape, side = await self._call_step(
                        hop, current, current_shape, run
                    )
                except HopError as failure:
                    raise failure.to_error() from None
            outputs[index + max(len(hop.parts), 1) - 1] = (current, current_shape)
        if path.out_crossing is not None:
            path.out_crossing.inc(len(current))
        return _Outcome(current, current_shape, served_by=path.id, side=side)

    async def _exit(
        self,
        path: CompiledPath,
        hop: CompiledHop,
        features: bytes,
        features_shape: tuple[int, ...],
        batch: int,
        run: _Run,
    ) -> _Outcome:
        """Run the exit head; confident samples leave, the rest go on through the original."""
        assert path.exits is not None
        assert path.exit_block is not None
        try:
            logits, logits_shape, _ = await self._call(hop, features, features_shape, run)
        except HopError as failure:
            raise failure.to_error() from None
        threshold = run.table.threshold(path.exit_block)
        if threshold is None or not path.continuation:
            path.exits.inc(batch)
            return _Outcome(logits, logits_shape, served_by=path.id, exits=batch)
        confident = max_softmax(logits, hop.output_datatype, batch) >= threshold
        taken = int(confident.sum())
        if taken == batch:
            path.exits.inc(batch)
            return _Outcome(logits, logits_shape, served_by=path.id, exits=batch)
        if taken == 0:
            out, out_shape = await self._continue(path, features, features_shape, run)
            return _Outcome(out, out_shape, served_by=path.id)
        rest_rows = np.flatnonzero(~confident)
        exit_rows = np.flatnonzero(confident)
        out, out_shape = await self._continue(
            path,
            take_rows(features, batch, rest_rows),
            (len(rest_rows), *features_shape[1:]),
            run,
        )
        path.exits.inc(taken)
        merged = scatter_rows(
            [(exit_rows, take_rows(logits, batch, exit_rows)), (rest_rows, out)], batch
        )
        return _Outcome(merged, (batch, *out_shape[1:]), served_by=path.id, exits=taken)

    async def _continue(
        self, path: CompiledPath, data: bytes, shape: tuple[int, ...], run: _Run
    ) -> tuple[bytes, tuple[int, ...]]:
        """Unconfident samples: the original path's blocks after the exit block."""
        for _, hop in self._plan(path, "continuation", path.continuation, 0):
            try:
                data, shape, _ = await self._call_step(hop, data, shape, run)
            except HopError as failure:
                raise failure.to_error() from None
        return data, shape

    async def _fall_back(
        self,
        path: CompiledPath,
        index: int,
        outputs: Mapping[int, tuple[bytes, tuple[int, ...]]],
        data: bytes,
        shape: tuple[int, ...],
        run: _Run,
        reason: str,
    ) -> _Outcome:
        """Finish on the fallback path, resuming after the last hop it shares with ``path``."""
        fallback = self._fallback
        counter = path.fallbacks.get(reason)
        if counter is None:
            counter = self.metrics.fallbacks.labels(self.model, path.id, reason)
            path.fallbacks[reason] = counter
        counter.inc()
        # Any output of the hops both paths share is an input the fallback can resume from:
        # the last one the gateway saw (a segment's inner outputs it did not).
        shared = min(index, self._shared_with(path, fallback))
        resume = max((i + 1 for i in outputs if i < shared), default=0)
        current, current_shape = outputs[resume - 1] if resume > 0 else (data, shape)
        for _, hop in self._plan(fallback, "hops", fallback.hops, resume):
            try:
                current, current_shape, _ = await self._call_step(hop, current, current_shape, run)
            except HopError as failure:
                raise failure.to_error() from None
        return _Outcome(current, current_shape, served_by=fallback.id, fallback=reason)


def executors_by_model(executors: Sequence[PathExecutor]) -> Mapping[str, PathExecutor]:
    out: dict[str, PathExecutor] = {}
    for executor in executors:
        if executor.model in out:
            raise ValueError(f"two executors serve model {executor.model!r}")
        out[executor.model] = executor
    return out
