"""The path executor: runs one request through the hops of a path, over real Triton servers.

A path from the catalog is a list of hops (a block, a link or an exit head, each a Triton
model on the local or the host provider's server). Every path is compiled once
(``braid.dataplane.compiler``) into a plan that holds everything a request needs (the hop's
address, tensor names, its metric children, the hops an unconfident sample continues with,
how much of it it shares with the fallback path), so the per-request work is: pick a path,
then for each hop build one ``ModelInferRequest`` whose ``raw_input_contents`` is the
previous hop's ``raw_output_contents``.

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
- **Fusion.** Consecutive hops on one server that the executor need not stop between (no exit
  head inside the path; one that ends it when every sample leaves there) are called as one
  Triton ensemble, a *segment* (``braid.render.segments``), when their server has it ready;
  otherwise hop by hop. A segment that holds a fallback-safe hop (a local skip link) is
  fallback-safe as a whole: the latency check is made before it, and its failure falls back
  from the last output the gateway saw. A segment's time is shared among its hops in
  proportion to what each is expected to take, so per-hop metrics and expectations keep
  their meaning.

A new routing table is swapped in as one reference: each request reads it once at its start
and keeps it to the end, so a reload never affects a request in flight.

The executor is the third of three parts (CONVENTIONS.md, "Data plane"): the catalog is
compiled into paths and their calls are planned by ``braid.dataplane.compiler`` (pure), what
each hop is expected to take is ``braid.dataplane.latency``'s (with an injected clock), and
this module only runs a plan: it picks the path, runs its calls (``braid.dataplane.hop_calls``),
exits early, falls back, and swaps routing tables; ``braid.dataplane.health`` probes the
servers.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from braid.api.catalog import PathCatalog
from braid.api.routing import Endpoints, RoutingTable, single_path_table
from braid.dataplane.batching import HopBatcher
from braid.dataplane.compiler import (
    CompiledCatalog,
    CompiledHop,
    CompiledPath,
    PlanPart,
    SegmentPlanner,
)
from braid.dataplane.dimee import SampleFeedback, SampleRouter
from braid.dataplane.errors import InferenceError, Reason
from braid.dataplane.health import ReadinessMonitor
from braid.dataplane.hop_calls import HopCaller, HopError, Run
from braid.dataplane.latency import LatencyModel, TimeVerdict
from braid.dataplane.metrics import GatewayMetrics, default_metrics
from braid.dataplane.pool import TritonPool
from braid.dataplane.routing import WeightedChoice
from braid.dataplane.tensors import (
    InferRequest,
    InferResponse,
    ModelSignature,
    Tensor,
    max_softmax,
    scatter_rows,
    take_rows,
    validate_request,
)
from braid.logs import log_event

logger = logging.getLogger(__name__)

MAX_CLIENT_BUDGET_S = 3600.0
"""A client's time budget is honoured up to an hour. Larger ones (a fuzzer sent 10**30 µs)
overflowed gRPC's deadline arithmetic into a deadline already passed: a 504 for a client who
asked to wait longer than anyone."""


@dataclass(frozen=True)
class ExecutorOptions:
    """How an executor calls its hops; the same for every model of a gateway."""

    default_timeout_s: float = 30.0
    """A request's budget when the client sets none, so nothing waits forever."""
    host_timeout_s: float = 2.0
    """The most a host hop may take, so a hung host leaves time to fall back."""
    max_batch_size: int = 64
    """Capped at start by the smallest limit of the Triton models called."""
    rpc_overhead_s: float = 0.0005
    """Added to a hop's catalog compute time for its first expectation."""
    probe_interval_s: float = 1.0
    retry_after_s: float = 5.0
    """How long a path left for time stays left before one request measures it again."""
    coalesce: bool = True
    """Share one Triton call among the requests reaching a busy hop."""
    max_in_flight_per_hop: int = 1
    fuse: bool = True
    """Call runs of hops as one ensemble (segment) where the server has it ready."""


@dataclass(slots=True)
class _Outcome:
    data: bytes
    shape: tuple[int, ...]
    served_by: str
    exits: int = 0
    fallback: str | None = None
    side: bytes | None = None
    """The last hop's side output (``SampleFeedback``), when it was asked for."""


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
        options: ExecutorOptions | None = None,
        metrics: GatewayMetrics | None = None,
        sample_router: SampleRouter | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.options = options if options is not None else ExecutorOptions()
        self.catalog = catalog
        self.endpoints = endpoints
        self.model = catalog.local_model
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
        self.max_batch_size = self.options.max_batch_size
        self._batchers: dict[tuple[str, str], HopBatcher] = {}
        self.compiled = CompiledCatalog(catalog, endpoints, self.metrics, self._batcher)
        self.paths = self.compiled.paths
        self.skipped = self.compiled.skipped
        self.planner = SegmentPlanner(self._batcher, fuse=self.options.fuse)
        self.latency = LatencyModel(retry_after_s=self.options.retry_after_s)
        for entry in catalog.paths:
            for hop in entry.hops:
                self.latency.seed(
                    hop.triton_model, hop.compute_us * 1e-6 + self.options.rpc_overhead_s
                )
        table = table if table is not None else single_path_table(self.model, catalog.original_path)
        self._fallback = self.compiled.check_table(table)
        self._table = table
        self._choice = WeightedChoice.of(table)
        caller = HopCaller(
            pool,
            self.latency,
            self.planner,
            host_timeout_s=self.options.host_timeout_s,
            coalesce=self.options.coalesce,
        )
        # Bound once: the hot path calls them per hop.
        self._call, self._call_step = caller.call, caller.call_step
        self.monitor = ReadinessMonitor(
            self.compiled, self.planner, pool, interval_s=self.options.probe_interval_s
        )
        self._publish_table()

    def _batcher(
        self, address: str, model: str, input_name: str, input_datatype: str, output_name: str
    ) -> HopBatcher:
        """The one batcher of ``model`` at ``address`` (the compiler's ``BatcherFor``)."""
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
                max_in_flight=self.options.max_in_flight_per_hop,
                calls_counter=self.metrics.triton_calls.labels(self.model, model),
                side_output=self._side_outputs.get(model),
            )
            self._batchers[(address, model)] = batcher
        return batcher

    # -- routing table -------------------------------------------------------------------

    @property
    def table(self) -> RoutingTable:
        return self._table

    def update_table(self, table: RoutingTable) -> None:
        """Swap in a new routing table; requests in flight finish with the one they started with.

        Raises ``RoutingTableError`` (and keeps the current table) when ``table`` is unusable.
        """
        fallback = self.compiled.check_table(table)
        choice = WeightedChoice.of(table)
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
            inputs=(self.compiled.input_spec,),
            outputs=(self.compiled.output_spec,),
            max_batch_size=self.max_batch_size,
        )

    @property
    def ready(self) -> bool:
        """Ready when every model of the fallback path answered ready at the last probe:
        then any request can be served, whatever happens to hosts."""
        return self.monitor.serves(self._fallback)

    async def probe(self) -> None:
        """Probe the servers now (``start`` keeps probing every ``probe_interval_s``)."""
        await self.monitor.probe()

    async def start(self) -> None:
        """Open the channels, learn the batch limit, probe once and keep probing."""
        needed = self.compiled.addresses()
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
        await self.monitor.probe()
        self.monitor.start()
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
        await self.monitor.close()

    # -- the hot path --------------------------------------------------------------------

    async def infer(self, request: InferRequest) -> InferResponse:
        """Serve one request; raises ``InferenceError`` with the reason on failure (the
        service counts it: ``InferenceService.record_error``)."""
        start = time.perf_counter()
        table = self._table
        output = self.compiled.output_spec
        batch = validate_request(
            request, (self.compiled.input_spec,), (output,), self.max_batch_size
        )
        tensor = request.inputs[0]
        budget = (
            min(request.timeout_s, MAX_CLIENT_BUDGET_S)
            if request.timeout_s is not None
            else self.options.default_timeout_s
        )
        run = Run(
            table=table,
            start=start,
            deadline=start + budget,
            client_deadline=request.timeout_s is not None,
            bound_deadline=(
                start + table.latency_bound_us * 1e-6 if table.latency_bound_us else None
            ),
        )
        routed, outcome = await self._route(request, tensor, batch, run)
        elapsed = time.perf_counter() - start
        path = self.paths.get(routed)
        if path is not None:
            path.request_duration.observe(elapsed)
        else:
            self.metrics.request_duration.labels(self.model, routed).observe(elapsed)
        return InferResponse(
            model=self.model,
            id=request.id,
            outputs=[Tensor(output.name, output.datatype, outcome.shape, outcome.data)],
            path=routed,
            served_by=outcome.served_by,
            exits=outcome.exits,
            fallback=outcome.fallback,
        )

    async def _route(
        self, request: InferRequest, tensor: Tensor, batch: int, run: Run
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
        self, ids: Sequence[str], tensor: Tensor, batch: int, run: Run
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

    def _fallback_reason(
        self, path: CompiledPath, index: int, step: CompiledHop, run: Run
    ) -> str | None:
        """Why to leave ``path`` before its fallback-safe ``step`` (a hop or a segment that
        starts at hop ``index``) untried, if at all."""
        if not self.pool.available(step.address):
            return "endpoint_down"
        # The latency check is made once, before the call that runs the first fallback-safe
        # hop (a segment may start with hops the fallback shares).
        if path.divergence is None or not index <= path.divergence < index + step.span:
            return None
        limit = run.bound_deadline
        if run.client_deadline:
            limit = run.deadline if limit is None else min(limit, run.deadline)
        if limit is None:
            return None
        fallback = self._fallback
        resume = min(index, self.compiled.shared_with(path, fallback))
        end = path.exit_index if path.exit_index is not None else len(path.hops)
        verdict = self.latency.verdict(
            path.id,
            self.latency.expected_s(path.hops[index : end + 1]),
            self.latency.expected_s(fallback.hops[resume:]),
            limit,
            run.deadline if run.client_deadline else None,
        )
        if verdict is TimeVerdict.LEAVE:
            return "latency_bound"
        if verdict is TimeVerdict.RETRY:
            run.retrying = True
        return None

    async def _run_path(
        self, path: CompiledPath, data: bytes, shape: tuple[int, ...], batch: int, run: Run
    ) -> _Outcome:
        path.samples.inc(batch)
        outputs: dict[int, tuple[bytes, tuple[int, ...]]] = {}
        """Hop index -> its output, for the hops whose output the gateway saw (not the inner
        hops of a segment)."""
        current, current_shape = data, shape
        side: bytes | None = None
        for index, hop in self.planner.plan(path, self._plan_part(path, run), 0):
            if index == path.exit_index:
                return await self._exit(path, hop, current, current_shape, batch, run)
            if hop.fallback_safe:
                reason = self._fallback_reason(path, index, hop, run)
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
            outputs[index + hop.span - 1] = (current, current_shape)
        if path.out_crossing is not None:
            path.out_crossing.inc(len(current))
        if path.exits is not None:
            # The exit head ran inside the last segment (``through_exit``): every sample left.
            path.exits.inc(batch)
            return _Outcome(current, current_shape, served_by=path.id, side=side, exits=batch)
        return _Outcome(current, current_shape, served_by=path.id, side=side)

    @staticmethod
    def _plan_part(path: CompiledPath, run: Run) -> PlanPart:
        """``through_exit`` when every sample leaves at the path's terminal exit head (no
        threshold for it in this request's table, or nowhere to continue): the head may then
        run in the same call as the hops before it."""
        if path.exit_index is None or path.exit_index != len(path.hops) - 1:
            return "hops"
        assert path.exit_block is not None
        if run.table.threshold(path.exit_block) is None or not path.continuation:
            return "through_exit"
        return "hops"

    async def _exit(
        self,
        path: CompiledPath,
        hop: CompiledHop,
        features: bytes,
        features_shape: tuple[int, ...],
        batch: int,
        run: Run,
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
        self, path: CompiledPath, data: bytes, shape: tuple[int, ...], run: Run
    ) -> tuple[bytes, tuple[int, ...]]:
        """Unconfident samples: the original path's blocks after the exit block."""
        for _, hop in self.planner.plan(path, "continuation", 0):
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
        run: Run,
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
        shared = min(index, self.compiled.shared_with(path, fallback))
        resume = max((i + 1 for i in outputs if i < shared), default=0)
        current, current_shape = outputs[resume - 1] if resume > 0 else (data, shape)
        for _, hop in self.planner.plan(fallback, "hops", resume):
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
