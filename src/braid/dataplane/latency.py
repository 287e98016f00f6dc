"""What the gateway expects each hop to take, and when that is reason to leave a path.

The expectation of a hop is an EWMA of the times the gateway observed, seeded from the
catalog's compute time plus one RPC. It decides the "would miss the latency bound" fallback,
and only calls update it; so a path left for time would never be measured again. Every
``retry_after_s`` one request (whose own deadline allows it) takes the path anyway, and its
measurements *replace* the stale expectations: a host that was slow and is fast again gets
its traffic back instead of being avoided forever.

The clock is injected (``time.perf_counter`` in the gateway, the same clock its deadlines
use), so the retry rhythm and the staleness of a measurement are tested without waiting.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

Clock = Callable[[], float]

EWMA_WEIGHT = 0.2
"""How far one fresh measurement moves an expectation."""


def fall_back_for_time(
    expected_path_s: float, expected_fallback_s: float, remaining_s: float
) -> bool:
    """Whether to leave a path before its first fallback-safe hop because of time.

    Only when the path is expected to miss the time left (to L_T or the client's deadline)
    *and* the fallback is expected to be quicker: falling back to something slower would
    miss the bound too, and cost the work already done.
    """
    return expected_path_s > remaining_s and expected_fallback_s < expected_path_s


class Call(Protocol):
    """Anything naming the Triton model it calls (a compiled hop)."""

    @property
    def model(self) -> str: ...


class TimeVerdict(enum.Enum):
    """What the latency model says about taking a path's fallback-safe hops now."""

    GO = "go"
    """The path is expected to fit (or the fallback would be no quicker)."""
    LEAVE = "leave"
    """The path is expected to miss the bound; the fallback would not."""
    RETRY = "retry"
    """Expected to miss, but its expectation is stale: go, and measure it afresh."""


class LatencyModel:
    """Expected time per hop (Triton model), learnt from what the gateway observes."""

    def __init__(self, *, retry_after_s: float = 5.0, clock: Clock = time.perf_counter) -> None:
        self.retry_after_s = retry_after_s
        self.clock = clock
        self._expected: dict[str, float] = {}
        self._seeded: dict[str, float] = {}
        """Each hop's seed, kept: the fixed proportions a fused segment's time is shared in."""
        self._observed_at: dict[str, float] = {}
        """When each hop's expectation was last measured: one older than ``retry_after_s`` is
        stale, and a new measurement replaces it instead of moving it by a fifth."""
        self._retry_at: dict[str, float] = {}
        """Per path left for time: when one request may try it again."""

    def seed(self, model: str, seconds: float) -> None:
        """The expectation of ``model`` before any call was observed (kept if one exists)."""
        self._expected.setdefault(model, seconds)
        self._seeded.setdefault(model, seconds)

    def expected(self, model: str) -> float:
        return self._expected[model]

    def expected_s(self, calls: Iterable[Call]) -> float:
        """Expected time of ``calls`` one after the other."""
        return sum(self._expected[c.model] for c in calls)

    def shares(self, calls: Sequence[Call], elapsed: float) -> list[float]:
        """``elapsed``, the time of one call that ran ``calls`` as a fused segment, shared
        among them in proportion to their seeds (the catalog's compute time plus one RPC).

        Not in proportion to the learnt expectations: those are learnt from these shares, so
        a hop given a larger share would expect more and be given more of the next segment's
        time. Where segments share hops the shares then drift apart for good: in a queued
        load-shift run two blocks of a seven-block segment took 99 % of its time, the other
        five ~0, and the controller, reading those per-hop times, priced the original path
        as the fastest and moved a saturated load back onto it.
        """
        weights = [self._seeded.get(c.model, self._expected[c.model]) for c in calls]
        total = sum(weights)
        if total <= 0:
            return [elapsed / len(calls)] * len(calls)
        return [elapsed * w / total for w in weights]

    def learn(self, model: str, elapsed: float, done: float, fresh: bool = False) -> None:
        """Move the expectation of ``model``'s calls towards one that took ``elapsed``,
        finished at ``done``; ``fresh`` (a retry's measurement) replaces it outright."""
        expected = self._expected[model]
        last = self._observed_at.get(model)
        if fresh or last is None or done - last > self.retry_after_s:
            self._expected[model] = elapsed
        else:
            self._expected[model] = expected + EWMA_WEIGHT * (elapsed - expected)
        self._observed_at[model] = done

    def verdict(
        self,
        path_id: str,
        expected_path_s: float,
        expected_fallback_s: float,
        limit: float,
        client_deadline: float | None,
    ) -> TimeVerdict:
        """Whether to take ``path_id``'s remaining hops, expected to take ``expected_path_s``,
        with the request's nearest bound at ``limit`` (clock time) and the client's own
        deadline at ``client_deadline`` (``None``: the client set none).

        The first time a path is left for time starts its retry clock; after
        ``retry_after_s`` one request retries it (and starts the clock again), unless even
        the stale expectation would make it miss its client's deadline: a retry may miss
        L_T, never the deadline.
        """
        now = self.clock()
        if not fall_back_for_time(expected_path_s, expected_fallback_s, limit - now):
            self._retry_at.pop(path_id, None)
            return TimeVerdict.GO
        due = self._retry_at.get(path_id)
        if due is None:
            self._retry_at[path_id] = now + self.retry_after_s
            return TimeVerdict.LEAVE
        if now < due:
            return TimeVerdict.LEAVE
        if client_deadline is not None and expected_path_s > client_deadline - now:
            return TimeVerdict.LEAVE
        self._retry_at[path_id] = now + self.retry_after_s
        return TimeVerdict.RETRY
