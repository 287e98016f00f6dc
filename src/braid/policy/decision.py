"""The path controller's decision: ``choose_paths(catalog, metrics, policy, state) -> Decision``.

Pure, after Ray Serve's autoscaling policy: the controller loop gathers ``Metrics`` from
Prometheus, calls this, and writes the result; everything that makes a decision stick
(hysteresis margin, minimum dwell, the last good decision) travels in ``PolicyState`` so it is
tested like the rest. ``metrics.at`` is the clock: nothing here reads the time.

How measured load becomes CoDE's terms is ``braid.policy.load_model``.

Choice: eq. 2 over the feasible candidates (``braid.policy.cost.choose_path``; what makes a
path infeasible, with its reason, is ``braid.policy.feasibility``); when none is feasible the
original path takes all traffic (it needs no host). A path whose tiers have no measurement is
never chosen; with no local measurement at all, or with an active path's tier unmeasured, the
last decision stays and the decision is marked degraded. When the chosen path alone would
push a tier past ``max_utilisation``, traffic is split: the cheapest feasible paths in turn
take as much as their tiers' headroom allows.

Hysteresis: a cheaper path takes over when it is cheaper by the cost margin and the active
split has held for the dwell time. A path that stays cheaper than the active one, in every
round, for the dwell time takes over too, margin or not: without that a path just inside the
margin (F = 3.10 against the original's 2.82 at light load) held traffic off the more
accurate original for good. With a dwell of 0 only the margin applies.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from braid.api.catalog import PathCatalog, PathEntry
from braid.api.v1alpha1.offloadpolicy import InfeasibleReason, OffloadPolicySpec
from braid.policy.cost import (
    Candidate,
    Load,
    PathFigures,
    choose_path,
    cost_terms,
    figures_from_entry,
    loaded_coefficients,
)
from braid.policy.feasibility import Infeasible, after_costing, before_costing
from braid.policy.load_model import RHO_CLIP as RHO_CLIP
from braid.policy.load_model import ControlSettings as ControlSettings
from braid.policy.load_model import Metrics as Metrics
from braid.policy.load_model import TierMetrics as TierMetrics
from braid.policy.load_model import (
    background_utilisation,
    calibration,
    hop_overhead_us,
    loaded_figures,
    tier_work_s,
    utilisation,
)

WEIGHT_DECIMALS = 3
WEIGHT_TOLERANCE = 0.1
"""A split is rewritten only when some weight moves by more than this (weights flap too)."""


@dataclass(frozen=True)
class WeightedPath:
    id: str
    weight: float


@dataclass(frozen=True)
class PolicyState:
    """What a decision leaves for the next one: the active split and since when it holds."""

    active: tuple[WeightedPath, ...] = ()
    since: float | None = None
    generation: int = 0
    busy: tuple[tuple[str, float], ...] = ()
    """Smoothed busy time per tier (see ``ControlSettings.smoothing``)."""
    model_busy: tuple[tuple[str, float], ...] = ()
    """Smoothed busy time per ``tier/model``, the same way."""
    hop_us: tuple[tuple[str, float], ...] = ()
    """Smoothed observed call time per Triton model, the same way."""
    rho_at: tuple[tuple[str, float], ...] = ()
    """Each tier's utilisation when the active split was decided (see ``step_threshold``)."""
    challenger: str | None = None
    """A path cheaper than the active one in every round since ``challenger_since``."""
    challenger_since: float | None = None

    @property
    def primary(self) -> str | None:
        return max(self.active, key=lambda p: p.weight).id if self.active else None


@dataclass(frozen=True)
class PathAssessment:
    """One candidate as this round saw it: F(p), its terms, and whether it may be chosen.

    ``cost`` is None only for a path without metrics; ``stretch`` is, per tier, the loaded
    compute time over the catalog's idle one (the queueing the cost was priced with).
    """

    id: str
    cost: float | None
    feasible: bool
    latency_us: float | None
    terms: Mapping[str, float]
    reason: InfeasibleReason | None = None
    message: str | None = None
    stretch: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Decision:
    """The outcome of one round; ``state`` is what the next round must be given.

    ``code`` is the CamelCase reason of the outcome (a condition's reason), ``reason`` the
    sentence that explains it; ``load`` is each tier's utilisation F(p) was priced at.
    """

    active: tuple[WeightedPath, ...]
    assessments: tuple[PathAssessment, ...]
    changed: bool
    degraded: bool
    reason: str
    state: PolicyState
    load: Mapping[str, float] = field(default_factory=dict)
    code: str = "CheapestFeasible"
    at: float | None = None

    @property
    def primary(self) -> str:
        return max(self.active, key=lambda p: p.weight).id


def candidate_entries(catalog: PathCatalog, policy: OffloadPolicySpec) -> list[PathEntry]:
    """The policy's candidate paths that the catalog has, the original path always among them."""
    wanted = None if policy.all_paths or not policy.candidate_paths else set(policy.candidate_paths)
    return [
        p
        for p in catalog.paths
        if wanted is None or p.id in wanted or p.id == catalog.original_path
    ]


def _keep(
    state: PolicyState,
    catalog: PathCatalog,
    assessments: tuple[PathAssessment, ...],
    *,
    degraded: bool,
    reason: str,
    load: Mapping[str, float],
    code: str,
    at: float | None,
) -> Decision:
    active = state.active or (WeightedPath(catalog.original_path, 1.0),)
    kept = PolicyState(
        active=active,
        since=state.since,
        generation=state.generation,
        rho_at=state.rho_at,
        challenger=state.challenger,
        challenger_since=state.challenger_since,
    )
    return Decision(active, assessments, False, degraded, reason, kept, load, code, at)


def split_weights(
    ranked: Sequence[PathEntry],
    metrics: Metrics,
    settings: ControlSettings,
    scale: Mapping[str, float] | None = None,
) -> tuple[WeightedPath, ...]:
    """Weights for ``ranked`` (best first): each takes what its tiers' headroom allows.

    The headroom of a tier is ``max_utilisation`` minus its background load (what the tier
    does besides this model's routed traffic). Traffic no path has room for goes to the first
    path: every tier is saturated then, and the cheapest path is the least bad place for it.
    """
    if not ranked:
        raise ValueError("no path to weigh")
    offered = metrics.offered_rps
    if offered <= 0:
        return (WeightedPath(ranked[0].id, 1.0),)
    headroom = {
        tier: settings.max_utilisation - busy
        for tier, busy in background_utilisation(ranked, metrics, settings, scale).items()
    }
    left = 1.0
    weights: dict[str, float] = {}
    for entry in ranked:
        if left <= 1e-9:
            break
        demand = {
            tier: offered * seconds / settings.capacity.get(tier, 1.0)
            for tier, seconds in tier_work_s(entry, scale).items()
        }
        room = min(
            (
                max(headroom.get(t, settings.max_utilisation), 0.0) / d
                for t, d in demand.items()
                if d
            ),
            default=left,
        )
        share = min(left, room)
        if share <= 1e-3:
            continue
        weights[entry.id] = share
        left -= share
        for tier, d in demand.items():
            headroom[tier] = headroom.get(tier, settings.max_utilisation) - share * d
    if left > 1e-9:
        weights[ranked[0].id] = weights.get(ranked[0].id, 0.0) + left
    return normalise(weights)


def normalise(weights: Mapping[str, float]) -> tuple[WeightedPath, ...]:
    """Weights rounded to ``WEIGHT_DECIMALS`` that sum to exactly 1, largest first."""
    items = sorted(((w, i) for i, w in weights.items() if w > 0), key=lambda t: (-t[0], t[1]))
    total = sum(w for w, _ in items)
    rounded = [(round(w / total, WEIGHT_DECIMALS), i) for w, i in items]
    rounded = [(w, i) for w, i in rounded if w > 0] or [(1.0, items[0][1])]
    first = round(1.0 - sum(w for w, _ in rounded[1:]), WEIGHT_DECIMALS)
    return (WeightedPath(rounded[0][1], first), *tuple(WeightedPath(i, w) for w, i in rounded[1:]))


def _moved(old: Sequence[WeightedPath], new: Sequence[WeightedPath]) -> bool:
    a = {p.id: p.weight for p in old}
    b = {p.id: p.weight for p in new}
    return any(abs(a.get(k, 0.0) - b.get(k, 0.0)) > WEIGHT_TOLERANCE for k in set(a) | set(b))


def choose_paths(
    catalog: PathCatalog,
    metrics: Metrics | None,
    policy: OffloadPolicySpec,
    state: PolicyState,
    settings: ControlSettings | None = None,
) -> Decision:
    """One decision round; ``metrics=None`` means Prometheus could not be read."""
    settings = settings or ControlSettings()
    busy, model_busy, hop_us = state.busy, state.model_busy, state.hop_us
    if metrics is not None:
        tier_prev, model_prev = dict(state.busy), dict(state.model_busy)
        hop_prev = dict(state.hop_us)
        hops = {h: smooth(v, hop_prev.get(h), settings) for h, v in metrics.hop_us.items()}
        hop_us = tuple(sorted(hops.items()))
        tiers = {}
        for t, m in metrics.tiers.items():
            models = {
                name: smooth(value, model_prev.get(f"{t}/{name}"), settings)
                for name, value in m.model_busy.items()
            }
            tiers[t] = replace(
                m, busy=smooth(m.busy, tier_prev.get(t), settings), model_busy=models
            )
        metrics = replace(metrics, tiers=tiers, hop_us=hops)
        busy = tuple(sorted((t, m.busy) for t, m in tiers.items()))
        model_busy = tuple(
            sorted((f"{t}/{name}", v) for t, m in tiers.items() for name, v in m.model_busy.items())
        )
    decision = _decide(catalog, metrics, policy, state, settings)
    return replace(
        decision,
        state=replace(decision.state, busy=busy, model_busy=model_busy, hop_us=hop_us),
    )


def smooth(new: float, previous: float | None, settings: ControlSettings) -> float:
    """The running mean of a busy time: ``attack`` weighs a rise, ``smoothing`` a fall."""
    if previous is None:
        return new
    alpha = settings.attack if new > previous else settings.smoothing
    return alpha * new + (1 - alpha) * previous


def _assess(
    catalog: PathCatalog,
    metrics: Metrics,
    policy: OffloadPolicySpec,
    settings: ControlSettings,
) -> tuple[tuple[PathAssessment, ...], list[PathFigures], Load]:
    """Every candidate's cost and feasibility, and the figures of those eq. 2 may choose."""
    rho = utilisation(metrics, settings)
    entries = candidate_entries(catalog, policy)
    scale = calibration(catalog, metrics.tiers)
    overhead = hop_overhead_us(catalog, metrics, scale, settings) if metrics.hop_us else {}
    background = background_utilisation(entries, metrics, settings, scale)
    bound = float(policy.latency_bound_microseconds)
    priced: list[tuple[PathFigures, PathFigures, Infeasible | None]] = []
    unpriced: list[PathAssessment] = []
    load = Load()
    for entry in entries:
        why = before_costing(entry, policy, set(metrics.tiers))
        if why is not None and why.reason == "MetricsMissing":
            unpriced.append(
                PathAssessment(entry.id, None, False, None, {}, why.reason, why.message)
            )
            continue
        idle = figures_from_entry(entry, metrics.network)
        f, load = loaded_figures(entry, metrics, rho, scale, settings, overhead, idle)
        why = why or after_costing(entry, f.latency_us, bound, background)
        priced.append((idle, f, why))
    coefficients = loaded_coefficients(policy.cost, load.local_factor, load.host_factor)
    assessed: list[PathAssessment] = []
    for idle, f, why in priced:
        terms = cost_terms(f, catalog.baseline_accuracy, coefficients)
        stretch = {
            tier: loaded / base
            for tier, loaded, base in (
                ("local", f.t_local_us, idle.t_local_us),
                ("host", f.t_host_us, idle.t_host_us),
            )
            if base > 0
        }
        assessed.append(
            PathAssessment(
                id=f.path_id,
                cost=sum(terms.values()),
                feasible=why is None,
                latency_us=f.latency_us,
                terms=terms,
                reason=why.reason if why else None,
                message=why.message if why else None,
                stretch=stretch,
            )
        )
    # Eq. 2 chooses among the feasible paths; the original is always among them (it is the
    # fallback), so a saturated original still takes traffic when nothing else may.
    choosable = [f for _, f, why in priced if why is None or f.path_id == catalog.original_path]
    return tuple(assessed + unpriced), choosable, load


def _decide(
    catalog: PathCatalog,
    metrics: Metrics | None,
    policy: OffloadPolicySpec,
    state: PolicyState,
    settings: ControlSettings,
) -> Decision:
    if metrics is None:
        return _keep(
            state,
            catalog,
            (),
            degraded=True,
            reason="Prometheus could not be read: holding the last decision",
            load={},
            code="MetricsUnavailable",
            at=None,
        )
    now = metrics.at
    rho = utilisation(metrics, settings)
    entries = candidate_entries(catalog, policy)
    by_id = {e.id: e for e in entries}
    assessments, figures, load = _assess(catalog, metrics, policy, settings)
    measured = {a.id for a in assessments if a.cost is not None}
    load_info = {"local": load.local, "host": load.host}

    if "local" not in metrics.tiers or catalog.original_path not in measured:
        return _keep(
            state,
            catalog,
            assessments,
            degraded=True,
            reason="the local tier reports no metrics: holding the last decision",
            load=load_info,
            code="LocalTierUnmeasured",
            at=now,
        )
    unmeasured_active = [p.id for p in state.active if p.id in by_id and p.id not in measured]
    if unmeasured_active:
        return _keep(
            state,
            catalog,
            assessments,
            degraded=True,
            reason=f"active paths unmeasured, held: {', '.join(unmeasured_active)}",
            load=load_info,
            code="ActivePathUnmeasured",
            at=now,
        )
    degraded = len(measured) < len(entries)
    feasible = {a.id for a in assessments if a.feasible}

    bound = float(policy.latency_bound_microseconds)
    coefficients = loaded_coefficients(policy.cost, load.local_factor, load.host_factor)
    choice = choose_path(
        figures, catalog.original_path, catalog.baseline_accuracy, coefficients, bound
    )
    if choice.within_bound and choice.path_id in feasible:
        pool: list[Candidate] = [
            c
            for c in choice.ranked
            if c.figures.path_id in feasible
            and (c.cheaper_than_original or c.figures.path_id == catalog.original_path)
        ]
        best = choice.path_id
        ranked_entries = [by_id[best]] + [
            by_id[c.figures.path_id] for c in pool if c.figures.path_id != best
        ]
        scale = calibration(catalog, metrics.tiers)
        proposal = split_weights(ranked_entries, metrics, settings, scale)
        reason, code = f"cheapest feasible path: {best}", "CheapestFeasible"
    else:
        proposal = (WeightedPath(catalog.original_path, 1.0),)
        reason, code = (
            "no path meets L_T (or every other is infeasible): original path",
            ("NoFeasiblePath"),
        )

    cost_of = {a.id: a for a in assessments}
    rho_now = tuple(sorted((t, min(max(r, 0.0), 1.0)) for t, r in rho.items()))
    if not state.rho_at:
        # A split kept since before the first measurement: the load it holds for is this one.
        state = replace(state, rho_at=rho_now)
    if not state.active:
        new_state = PolicyState(proposal, now, state.generation + 1, rho_at=rho_now)
        return Decision(
            proposal, assessments, True, degraded, reason, new_state, load_info, code, now
        )

    current = state.primary
    assert current is not None
    new_primary = proposal[0].id
    dwell = policy.hysteresis.min_dwell_seconds
    dwelt = state.since is None or now - state.since >= dwell
    before = dict(state.rho_at)
    moves = [r - before[t] for t, r in rho_now if t in before]
    stepped = any(d >= settings.step_threshold for d in moves)
    if not stepped and any(-d >= settings.step_threshold for d in moves):
        state = replace(state, rho_at=rho_now)
    state = _track_challenger(state, cost_of, current, new_primary, now)
    cheaper_for_dwell = (
        dwell > 0
        and state.challenger == new_primary
        and state.challenger_since is not None
        and now - state.challenger_since >= dwell
    )

    def keep(why: str, code: str) -> Decision:
        return _keep(
            state,
            catalog,
            assessments,
            degraded=degraded,
            reason=why,
            load=load_info,
            code=code,
            at=now,
        )

    if stepped:
        # The split was decided for another load: no dwell. The margin still applies, so
        # near-equal paths do not trade places while the load ramps.
        dwelt = True
        reason, code = f"{reason} (load step)", "LoadStep"
        if new_primary == current and not _moved(state.active, proposal):
            # Re-decided for the new load and kept: the step is spent.
            kept = keep(f"holding {current}: {reason}", code)
            return replace(kept, state=replace(kept.state, rho_at=rho_now))
    if new_primary != current:
        current_cost = cost_of.get(current)
        new_cost = cost_of[new_primary].cost
        margin_ok = (
            current_cost is None
            or not current_cost.feasible
            or current_cost.cost is None
            or (
                new_cost is not None
                and new_cost <= (1.0 - policy.hysteresis.cost_margin) * current_cost.cost
            )
        )
        if not margin_ok and not cheaper_for_dwell:
            return keep(f"{new_primary} within the cost margin of {current}", "WithinCostMargin")
        if not dwelt:
            return keep(f"dwelling on {current}", "Dwelling")
        if not margin_ok:
            reason = f"{new_primary} cheaper than {current} for {dwell} s"
            code = "CheaperForDwell"
    elif not _moved(state.active, proposal) or not dwelt:
        return keep(f"holding {current}: {reason}", code)
    new_state = PolicyState(proposal, now, state.generation + 1, rho_at=rho_now)
    return Decision(proposal, assessments, True, degraded, reason, new_state, load_info, code, now)


def _track_challenger(
    state: PolicyState,
    cost_of: Mapping[str, PathAssessment],
    current: str,
    proposed: str,
    now: float,
) -> PolicyState:
    """Remember since when ``proposed`` has been cheaper than ``current`` without a break."""
    new, old = cost_of.get(proposed), cost_of.get(current)
    cheaper = (
        proposed != current
        and new is not None
        and old is not None
        and new.cost is not None
        and old.cost is not None
        and old.feasible
        and round(new.cost, 9) < round(old.cost, 9)
    )
    if not cheaper:
        return replace(state, challenger=None, challenger_since=None)
    if state.challenger == proposed and state.challenger_since is not None:
        return state
    return replace(state, challenger=proposed, challenger_since=now)
