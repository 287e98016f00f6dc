"""One call of one hop (or fused segment), with the request's deadline and the hop's timeout.

The executor decides *which* hops to call; this module makes each call: it turns the time left
to the request's deadline into the call's timeout (capped for hops the fallback can replace,
so a hung host leaves time to fall back), tells a request's own deadline passing from a server
that failed, marks failed servers down, and hands every measured time to the latency model.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import grpc

from braid.api.routing import RoutingTable
from braid.dataplane.batching import HopAnswer
from braid.dataplane.compiler import CompiledHop, SegmentPlanner
from braid.dataplane.errors import InferenceError, Reason
from braid.dataplane.latency import LatencyModel
from braid.dataplane.pool import TritonPool
from braid.logs import log_event

logger = logging.getLogger(__name__)


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


@dataclass(slots=True)
class Run:
    """Per-request state that every hop of the request consults."""

    table: RoutingTable
    start: float
    deadline: float
    client_deadline: bool
    bound_deadline: float | None
    retrying: bool = False
    """This request retries a path left for time: its measurements replace the estimates."""


class HopCaller:
    """Calls hops through their batchers over ``pool``; one per executor."""

    def __init__(
        self,
        pool: TritonPool,
        latency: LatencyModel,
        planner: SegmentPlanner,
        *,
        host_timeout_s: float,
        coalesce: bool,
    ) -> None:
        self.pool = pool
        self.latency = latency
        self.planner = planner
        self.host_timeout_s = host_timeout_s
        self.coalesce = coalesce

    async def call(
        self, hop: CompiledHop, data: bytes, shape: tuple[int, ...], run: Run
    ) -> HopAnswer:
        now = time.perf_counter()
        remaining = run.deadline - now
        if remaining <= 0:
            raise self.deadline_error(run, hop)
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
                raise self.deadline_error(run, hop) from None
            failure = HopError(hop, code, exc.details() or "")
            if failure.transport:
                self.pool.mark_down(hop.address, f"{code.name}: {exc.details()}")
            raise failure from None
        except TimeoutError:
            # A coalesced member's own wait ran out: the same bound test as above (asyncio's
            # clock is not perf_counter either).
            if timeout >= remaining or time.perf_counter() >= run.deadline:
                raise self.deadline_error(run, hop) from None
            raise HopError(hop, grpc.StatusCode.DEADLINE_EXCEEDED, "no answer in time") from None
        except ValueError as exc:
            raise HopError(hop, grpc.StatusCode.INTERNAL, str(exc)) from None
        done = time.perf_counter()
        elapsed = done - now
        latency = self.latency
        if hop.parts:
            # A segment's time is shared among its hops in fixed proportions (their seeds),
            # so per-hop metrics and expectations keep their meaning (``LatencyModel.shares``).
            for part, share in zip(hop.parts, latency.shares(hop.parts, elapsed), strict=True):
                part.duration.observe(share)
                latency.learn(part.model, share, done, run.retrying)
        else:
            hop.duration.observe(elapsed)
            latency.learn(hop.model, elapsed, done, run.retrying)
        return out

    async def call_step(
        self, step: CompiledHop, data: bytes, shape: tuple[int, ...], run: Run
    ) -> HopAnswer:
        """Call a hop or a segment; a segment the server refuses (not a transport failure:
        it may have been unloaded) is run hop by hop instead, and not used until the next
        probe finds it ready."""
        if not step.parts:
            return await self.call(step, data, shape, run)
        try:
            return await self.call(step, data, shape, run)
        except HopError as failure:
            if failure.transport:
                raise
            log_event(logger, "executor.segment_refused", level=logging.WARNING, error=failure)
            self.planner.refuse(step)
        answer = HopAnswer(data, shape)
        for part in step.parts:
            answer = await self.call(part, answer.data, answer.shape, run)
        return answer

    def deadline_error(self, run: Run, hop: CompiledHop) -> InferenceError:
        budget = run.deadline - run.start
        who = "the client's" if run.client_deadline else "the gateway's default"
        return InferenceError(
            Reason.DEADLINE, f"{who} deadline of {budget * 1e3:.1f} ms passed before {hop.model}"
        )
