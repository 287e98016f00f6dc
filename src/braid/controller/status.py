"""A decision as the ``OffloadPolicy`` status a platform engineer reads; when to write it. Pure.

Three things live here, all without I/O so they are unit-tested like the decision:

- ``policy_status``: every candidate's F(p) with its terms, per-tier load and stretch, why
  an infeasible path is infeasible, the runner-up and the margin, and two conditions
  (``PathsChosen``, ``Degraded``) that follow ``metav1.Condition`` through
  ``braid.render.conditions.set_condition``: a transition time that moves only when the
  status flips, each condition with its own message, ``observedGeneration`` on each;
- ``StatusGate``: write on change, at most every ``min_interval_s`` unless traffic moves,
  and at least every ``refresh_s`` so the costs shown do not go stale;
- ``path_change``: what an Event tells ``kubectl describe`` when the active path changes.

Figures are rounded to ``SIGNIFICANT_DIGITS``: ``F = 2.824`` reads, ``2.8236104497`` does
not, and it keeps the rounding noise of a steady load out of the status.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from braid.api.v1alpha1.offloadpolicy import (
    ActivePath,
    CostTerms,
    OffloadPolicyStatus,
    PathCost,
    TierLoad,
    TierStretch,
)
from braid.policy.decision import Decision, PathAssessment
from braid.render.conditions import set_condition

SIGNIFICANT_DIGITS = 4
PATHS_CHOSEN = "PathsChosen"
DEGRADED = "Degraded"
HELD = frozenset({"MetricsUnavailable", "LocalTierUnmeasured", "ActivePathUnmeasured"})
"""Decision codes that keep the last split because the controller could not see enough."""
UNMET_BOUND = frozenset({"NoFeasiblePath", "BestEffort"})
"""Decision codes of a round where no path met L_T (``PathsChosen`` is False)."""


def sig(value: float, digits: int = SIGNIFICANT_DIGITS) -> float:
    """``value`` to ``digits`` significant digits (0 stays 0)."""
    return float(f"{value:.{digits}g}")


def rfc3339(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def path_cost(a: PathAssessment) -> PathCost:
    terms = None
    if a.terms:
        terms = CostTerms(**{k: sig(v) for k, v in a.terms.items()})
    stretch = None
    if a.stretch:
        stretch = TierStretch(**{k: sig(v) for k, v in a.stretch.items()})
    return PathCost(
        id=a.id,
        cost=sig(a.cost) if a.cost is not None else None,
        feasible=a.feasible,
        reason=a.reason,
        message=a.message,
        latency_microseconds=round(a.latency_us) if a.latency_us is not None else None,
        stretch=stretch,
        terms=terms,
    )


def runner_up(
    assessments: Sequence[PathAssessment], active: str
) -> tuple[PathAssessment | None, float | None]:
    """The cheapest feasible path besides ``active``, and how much dearer it is (a fraction)."""
    costed = {a.id: a for a in assessments if a.cost is not None}
    others = sorted(
        (a for a in costed.values() if a.feasible and a.id != active),
        key=lambda a: (a.cost, a.id),
    )
    if not others:
        return None, None
    best, current = others[0], costed.get(active)
    if current is None or current.cost is None or best.cost is None or current.cost <= 0:
        return best, None
    return best, (best.cost - current.cost) / current.cost


def _paths_chosen(decision: Decision) -> tuple[bool | None, str]:
    if decision.code in HELD:
        return None, decision.code
    if decision.code in UNMET_BOUND:
        return False, decision.code
    return True, decision.code


def _degraded(decision: Decision) -> tuple[bool, str, str]:
    missing = [a for a in decision.assessments if a.reason == "MetricsMissing"]
    if decision.code in HELD:
        return True, decision.code, decision.reason
    if missing:
        names = ", ".join(a.id for a in missing)
        return True, "PathsUnmeasured", f"{len(missing)} candidates without metrics: {names}"
    return False, "MetricsFresh", f"every tier measured; {len(decision.assessments)} paths priced"


def policy_status(
    decision: Decision,
    previous: OffloadPolicyStatus | None,
    *,
    now: float,
    generation: int | None,
) -> OffloadPolicyStatus:
    """The status that explains ``decision``; conditions carry over from ``previous``."""
    when = rfc3339(now)
    primary = decision.assessment(decision.primary)
    second, margin = runner_up(decision.assessments, decision.primary)
    conditions: list[dict[str, Any]] = [
        c.model_dump(by_alias=True, exclude_none=True) for c in (previous or _EMPTY).conditions
    ]
    chosen, chosen_code = _paths_chosen(decision)
    conditions = set_condition(
        conditions, PATHS_CHOSEN, chosen, chosen_code, decision.reason, when, generation
    )
    degraded, degraded_code, degraded_message = _degraded(decision)
    conditions = set_condition(
        conditions, DEGRADED, degraded, degraded_code, degraded_message, when, generation
    )
    load = [
        TierLoad(tier=tier, utilisation=sig(rho), price_factor=sig(1.0 / (1.0 - rho)))
        for tier, rho in sorted(decision.load.items())
    ]
    return OffloadPolicyStatus(
        observed_generation=previous.observed_generation if previous else None,
        active_path=decision.primary,
        active_paths=[ActivePath(id=p.id, weight=p.weight) for p in decision.active],
        cost=sig(primary.cost) if primary is not None and primary.cost is not None else None,
        runner_up=second.id if second else None,
        margin=round(margin, 3) if margin is not None else None,
        load=load,
        costs=[path_cost(a) for a in decision.assessments],
        candidate_paths=previous.candidate_paths if previous else None,
        routing_config_map=previous.routing_config_map if previous else None,
        last_decision_time=when,
        conditions=conditions,  # type: ignore[arg-type]  # pydantic validates the dicts
    )


_EMPTY = OffloadPolicyStatus()


def significant(status: OffloadPolicyStatus) -> tuple[Any, ...]:
    """What a reader must see within ``StatusGate.min_interval_s`` when it changes: the split,
    which candidates are feasible and why not, each condition's status and generation.

    Costs, the runner-up, reasons and messages follow the load's noise: at a steady load the
    runner-up swapped between two near-equal paths and ``PathsChosen`` between "holding" and
    "within the margin" every few rounds (2.9 writes per policy per minute in
    ``bench/sim_scale.py``). They are written with the next change or refresh instead.
    """
    return (
        tuple((p.id, p.weight) for p in status.active_paths),
        tuple((c.id, c.feasible, c.reason) for c in status.costs),
        tuple((c.type, c.status, c.observed_generation) for c in status.conditions),
    )


@dataclass(frozen=True)
class StatusGate:
    """When a status goes to the API server: on change, not more often than needed."""

    min_interval_s: float = 5.0
    """Least time between two writes that do not move traffic (a flickering reason)."""
    refresh_s: float = 60.0
    """Most time between two writes: costs and messages go stale otherwise."""

    def due(
        self,
        new: OffloadPolicyStatus,
        last: OffloadPolicyStatus | None,
        last_at: float | None,
        now: float,
    ) -> bool:
        if last is None or last_at is None:
            return True
        if [(p.id, p.weight) for p in new.active_paths] != [
            (p.id, p.weight) for p in last.active_paths
        ]:
            return True  # the operator renders routing from it: never hold a switch back
        elapsed = now - last_at
        if elapsed >= self.refresh_s:
            return True
        return elapsed >= self.min_interval_s and significant(new) != significant(last)


@dataclass(frozen=True)
class PathChange:
    """One switch of the active path, as an Event tells it."""

    old: str
    new: str
    reason: str
    message: str


def path_change(
    previous_primary: str | None, decision: Decision, costs: Mapping[str, PathAssessment]
) -> PathChange | None:
    """The Event for a decision that moved the active path; None when it stayed."""
    if not decision.changed or previous_primary is None or previous_primary == decision.primary:
        return None

    def f(path: str) -> str:
        a = costs.get(path)
        return f"{sig(a.cost)}" if a is not None and a.cost is not None else "n/a"

    message = (
        f"{previous_primary} (F={f(previous_primary)}) -> {decision.primary} "
        f"(F={f(decision.primary)}), {decision.code}: {decision.reason}"
    )
    return PathChange(previous_primary, decision.primary, decision.code, message)
