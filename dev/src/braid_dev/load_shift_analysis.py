"""What the load-shift benchmark (``bench/load_shift.py``) records and how it reads it (pure).

An *episode* is a light phase then a heavy phase; every response names the path that served
it (``braid_path`` in its parameters), so the switch time is read from traffic, not from the
controller's decision: from the heavy phase's start to the first request served by a path
other than the one serving at the end of the light phase, not counting requests the gateway
served by falling back (``braid_fallback``), which are counted apart. A *pair* is a controlled and a
fixed episode at one operating point; over repeats, each figure is a median with an
order-statistic interval (``braid_dev.benchstats``).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from braid.api.v1alpha1.offloadpolicy import OffloadPolicyStatus
from braid.policy.decision import Decision
from braid_dev.benchstats import median_interval


@dataclass(frozen=True)
class Sample:
    sent: float
    latency_s: float
    correct: int
    """How many of the request's samples were classified right."""
    samples: int
    phase: str
    ok: bool
    path: str | None
    """The path the gateway says served it (``braid_path`` in the response parameters)."""
    fallback: str | None = None
    """Why the gateway left the routed path for its fallback (``braid_fallback``), if it did:
    such a request is served by the fallback path, but the controller did not move it."""


@dataclass
class Episode:
    """One light -> heavy run, controlled or fixed, and what it recorded."""

    scenario: str
    mode: str
    fraction: float | None
    repeat: int
    heavy_start: float = 0.0
    samples: list[Sample] = field(default_factory=list)
    decisions: list[tuple[float, str]] = field(default_factory=list)
    """(time, the controller's primary path) at every round: when it *decided*."""

    def sink(self, decision: Decision, _status: OffloadPolicyStatus) -> None:
        if decision.active:
            primary = max(decision.active, key=lambda p: p.weight).id
            self.decisions.append((time.time(), primary))


def summarise_episode(episode: Episode) -> dict[str, Any]:
    """Heavy-phase latency and accuracy, and when the served path changed."""
    light = sorted((s for s in episode.samples if s.phase == "light" and s.ok), key=_sent)
    heavy_all = sorted((s for s in episode.samples if s.phase == "heavy"), key=_sent)
    heavy = [s for s in heavy_all if s.ok]
    tail = light[len(light) // 2 :]
    light_path = Counter(s.path for s in tail).most_common(1)[0][0] if tail else None
    # A fallback (a hop's timeout, the latency check) serves the fallback path without the
    # routing having moved: it is not a switch.
    moved = next((s for s in heavy if s.path != light_path and s.fallback is None), None)
    decided = next(
        (t for t, p in episode.decisions if t >= episode.heavy_start and p != light_path), None
    )
    latencies = [s.latency_s * 1e3 for s in heavy]
    return {
        "mode": episode.mode,
        "repeat": episode.repeat,
        "light_path": light_path,
        "heavy_served_by": dict(Counter(str(s.path) for s in heavy)),
        "heavy_fallbacks": dict(Counter(s.fallback for s in heavy if s.fallback is not None)),
        "switch_s": None if moved is None else round(moved.sent - episode.heavy_start, 3),
        "decision_switch_s": None if decided is None else round(decided - episode.heavy_start, 3),
        "heavy_p50_ms": round(float(np.percentile(latencies, 50)), 3) if latencies else None,
        "heavy_p99_ms": round(float(np.percentile(latencies, 99)), 3) if latencies else None,
        "heavy_accuracy": round(
            sum(s.correct for s in heavy_all) / max(sum(s.samples for s in heavy_all), 1), 4
        ),
        "heavy_requests": len(heavy_all),
        "errors": sum(not s.ok for s in episode.samples),
    }


def _sent(sample: Sample) -> float:
    return sample.sent


def summarise_point(pairs: list[tuple[dict[str, Any], dict[str, Any]]]) -> dict[str, Any]:
    """(controlled, fixed) episode summaries of one operating point, over its repeats."""
    usable = [(c, f) for c, f in pairs if c["heavy_p50_ms"] and f["heavy_p50_ms"]]

    def over(values: list[float]) -> dict[str, Any] | None:
        return median_interval(values).as_dict() if values else None

    switches = [c["switch_s"] for c, _ in pairs if c["switch_s"] is not None]
    decisions = [c["decision_switch_s"] for c, _ in pairs if c["decision_switch_s"] is not None]
    return {
        "p50_ratio": over([c["heavy_p50_ms"] / f["heavy_p50_ms"] for c, f in usable]),
        "p99_ratio": over([c["heavy_p99_ms"] / f["heavy_p99_ms"] for c, f in usable]),
        "accuracy_drop_pt": over(
            [100 * (f["heavy_accuracy"] - c["heavy_accuracy"]) for c, f in pairs]
        ),
        "switched": f"{len(switches)}/{len(pairs)}",
        "switch_s": over(switches),
        "decision_switch_s": over(decisions),
        "fixed_moved": sum(f["switch_s"] is not None for _, f in pairs),
        "episodes": [{"controlled": c, "fixed": f} for c, f in pairs],
    }
