"""The path controller's decision: ``choose_paths(catalog, metrics, policy, state) -> Decision``.

Pure, after Ray Serve's autoscaling policy: the controller loop gathers ``Metrics`` from
Prometheus, calls this, and writes the result; everything that makes a decision stick
(hysteresis margin, minimum dwell, the last good decision) travels in ``PolicyState`` so it is
tested like the rest. ``metrics.at`` is the clock: nothing here reads the time.

How measured load becomes CoDE's terms is ``braid.policy.load_model``.

Choice: eq. 2 over the feasible candidates (the rule of ``braid.policy.cost.choose_path``,
computed for every candidate at once by ``braid.policy.pricing``; what makes a path
infeasible, with its reason, is ``braid.policy.feasibility``); when none is feasible the
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

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from braid.api.catalog import PathCatalog
from braid.api.v1alpha1.offloadpolicy import OffloadPolicySpec
from braid.policy.load_model import RHO_CLIP as RHO_CLIP
from braid.policy.load_model import ControlSettings as ControlSettings
from braid.policy.load_model import Metrics as Metrics
from braid.policy.load_model import TierMetrics as TierMetrics
from braid.policy.load_model import utilisation
from braid.policy.pricing import (
    TIERS,
    Array,
    Assessments,
    IntArray,
    RankedPaths,
    background_of,
    calibrate,
    price_paths,
)
from braid.policy.pricing import PathAssessment as PathAssessment
from braid.policy.pricing import compile_catalog as compile_catalog

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
class Decision:
    """The outcome of one round; ``state`` is what the next round must be given.

    ``code`` is the CamelCase reason of the outcome (a condition's reason), ``reason`` the
    sentence that explains it; ``load`` is each tier's utilisation F(p) was priced at.
    ``assessments`` builds each ``PathAssessment`` when read (``assessment`` finds one by id).
    """

    active: tuple[WeightedPath, ...]
    assessments: Sequence[PathAssessment]
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

    def assessment(self, path_id: str) -> PathAssessment | None:
        """The assessment of ``path_id`` this round, without building the others."""
        return find_assessment(self.assessments, path_id)


def find_assessment(assessments: Sequence[PathAssessment], path_id: str) -> PathAssessment | None:
    if isinstance(assessments, Assessments):
        return assessments.get(path_id)
    return next((a for a in assessments if a.id == path_id), None)


def _keep(
    state: PolicyState,
    catalog: PathCatalog,
    assessments: Sequence[PathAssessment],
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


SPLIT_CHUNK = 256
"""Paths whose room a split weighs at once: a split mostly ends in the first few."""


def split_weights(
    ranked: RankedPaths,
    metrics: Metrics,
    settings: ControlSettings,
    scale: Mapping[str, float],
    background: Mapping[str, float],
) -> tuple[WeightedPath, ...]:
    """Weights for ``ranked`` (best first): each takes what its tiers' headroom allows.

    The headroom of a tier is ``max_utilisation`` minus its background load (what the tier
    does besides this model's routed traffic to ``ranked``). Traffic no path has room for
    goes to the first path: every tier is saturated then, and the cheapest path is the least
    bad place for it. A path with room for no more than 0.1 % of the traffic is passed over;
    on saturated tiers that is every path, so rooms are weighed as arrays (``SPLIT_CHUNK``
    paths at a time) with the very operations of a path-by-path loop
    (``tests/unit/reference_decision.py`` keeps that loop as the reference).
    """
    offered = metrics.offered_rps
    if offered <= 0:
        return (WeightedPath(ranked.compiled.ids[ranked.best], 1.0),)
    ids = ranked.compiled.ids
    cap = [settings.capacity.get(t, 1.0) for t in TIERS]
    limit = settings.max_utilisation
    headroom = [limit - background[t] if t in background else limit for t in TIERS]
    work = ranked.tier_work_s(scale)
    left = 1.0

    def shares(rows: IntArray) -> tuple[list[Array], Array]:
        """Each path's demand per tier and the share its tiers' headroom allows it now."""
        demand = [offered * work[i][rows] / cap[i] for i in range(len(TIERS))]
        with np.errstate(divide="ignore", invalid="ignore"):
            per_tier = [
                np.where(d != 0, max(headroom[i], 0.0) / d, np.inf) for i, d in enumerate(demand)
            ]
        room = np.minimum.reduce(per_tier)
        room = np.where(np.isinf(room) & (demand[0] == 0) & (demand[1] == 0), left, room)
        return demand, np.minimum(left, room)

    weights: dict[str, float] = {}
    first = ranked.best
    rows: IntArray = np.array([first], dtype=np.int64)
    pos, past_first = 0, False
    while left > 1e-9:
        if pos >= len(rows):
            if past_first:
                break
            # Headroom and what is left only shrink, so a path with no room now never gets
            # any: only the others need ranking (none, when every tier is saturated).
            others = ranked.members[ranked.members != first]
            _, now = shares(others)
            rows, pos, past_first = ranked.ranked(others[now > 1e-3]), 0, True
            continue
        chunk = rows[pos : pos + SPLIT_CHUNK]
        demand, share = shares(chunk)
        takers = np.flatnonzero(share > 1e-3)
        if takers.size == 0:
            pos += len(chunk)
            continue
        j = int(takers[0])
        taken = float(share[j])
        weights[ids[int(chunk[j])]] = taken
        left -= taken
        for i in range(len(TIERS)):
            headroom[i] -= taken * float(demand[i][j])
        pos += j + 1
    if left > 1e-9:
        weights[ids[first]] = weights.get(ids[first], 0.0) + left
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
    compiled = compile_catalog(catalog)
    scale = calibrate(compiled, metrics.tiers)
    priced = price_paths(catalog, metrics, policy, settings, scale)
    assessments = Assessments(priced)
    load = priced.load
    load_info = {"local": load.local, "host": load.host}
    original = compiled.index.get(catalog.original_path)

    if "local" not in metrics.tiers or original is None or not priced.priced[original]:
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
    unmeasured_active = [
        p.id
        for p in state.active
        if (row := compiled.index.get(p.id)) is not None
        and priced.is_candidate[row]
        and not priced.priced[row]
    ]
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
    degraded = bool(priced.priced[priced.candidates].sum() < len(priced.candidates))

    ranked = priced.ranked_choice()
    if ranked is not None:
        best = compiled.ids[ranked.best]
        in_ranked = np.zeros(len(compiled.ids), dtype=np.bool_)
        in_ranked[ranked.members] = True
        background = background_of(compiled, in_ranked, metrics, settings, scale)
        proposal = split_weights(ranked, metrics, settings, scale, background=background)
        reason, code = f"cheapest feasible path: {best}", "CheapestFeasible"
    elif (fastest := priced.best_effort()) is not None:
        path = compiled.ids[fastest]
        proposal = (WeightedPath(path, 1.0),)
        reason = f"no path meets L_T: {path}, the lowest modelled latency (best effort)"
        code = "BestEffort"
    else:
        proposal = (WeightedPath(catalog.original_path, 1.0),)
        reason, code = (
            "no path meets L_T (or every other is infeasible): original path",
            ("NoFeasiblePath"),
        )

    cost_of = assessments.get
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
        current_cost = cost_of(current)
        challenger = cost_of(new_primary)
        new_cost = challenger.cost if challenger is not None else None
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
    cost_of: Callable[[str], PathAssessment | None],
    current: str,
    proposed: str,
    now: float,
) -> PolicyState:
    """Remember since when ``proposed`` has been cheaper than ``current`` without a break."""
    new, old = cost_of(proposed), cost_of(current)
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
