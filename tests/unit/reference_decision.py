"""The decision as it was before ``braid.policy.pricing``: one path at a time, in Python.

Kept only as the reference the array form is checked against (``test_pricing.py``): every
line below is the scalar rule the controller ran, with ``cost.choose_path`` choosing, so a
difference between the two is a bug in one of them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from braid.api.catalog import PathCatalog, PathEntry
from braid.api.v1alpha1.offloadpolicy import CostCoefficients, OffloadPolicySpec
from braid.policy.cost import (
    Candidate,
    Load,
    PathFigures,
    choose_path,
    cost_terms,
    figures_from_entry,
    loaded_coefficients,
)
from braid.policy.decision import (
    ControlSettings,
    Decision,
    Metrics,
    PathAssessment,
    PolicyState,
    WeightedPath,
    _keep,
    _moved,
    _track_challenger,
    normalise,
)
from braid.policy.feasibility import Infeasible, after_costing, before_costing
from braid.policy.load_model import (
    background_utilisation,
    calibration,
    hop_overhead_us,
    loaded_figures,
    tier_work_s,
    utilisation,
)


def candidate_entries(catalog: PathCatalog, policy: OffloadPolicySpec) -> list[PathEntry]:
    """The policy's candidate paths that the catalog has, the original path always among them."""
    wanted = None if policy.all_paths or not policy.candidate_paths else set(policy.candidate_paths)
    return [
        p
        for p in catalog.paths
        if wanted is None or p.id in wanted or p.id == catalog.original_path
    ]


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


def reference_best_effort(
    catalog: PathCatalog,
    runnable: list[PathFigures],
    coefficients: CostCoefficients,
    bound: float,
) -> str | None:
    """``choose_path``'s best effort over the paths only ``L_T`` rules out: the lowest
    latency of eq. 2's pool, when none meets the bound and the original is among them."""
    if catalog.original_path not in {f.path_id for f in runnable}:
        return None
    choice = choose_path(
        runnable, catalog.original_path, catalog.baseline_accuracy, coefficients, bound
    )
    return None if choice.within_bound else choice.path_id


def reference_assess(
    catalog: PathCatalog,
    metrics: Metrics,
    policy: OffloadPolicySpec,
    settings: ControlSettings,
) -> tuple[tuple[PathAssessment, ...], list[PathFigures], list[PathFigures], Load]:
    """Every candidate's cost and feasibility, the figures of those eq. 2 may choose, and of
    those only ``L_T`` rules out (best effort's candidates)."""
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
    runnable = [f for _, f, why in priced if why is None or why.reason == "OverLatencyBound"]
    return tuple(assessed + unpriced), choosable, runnable, load


def reference_decide(
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
    assessments, figures, runnable, load = reference_assess(catalog, metrics, policy, settings)
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
    elif (
        not choice.within_bound
        and (fastest := reference_best_effort(catalog, runnable, coefficients, bound)) is not None
    ):
        proposal = (WeightedPath(fastest, 1.0),)
        reason = f"no path meets L_T: {fastest}, the lowest modelled latency (best effort)"
        code = "BestEffort"
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
    state = _track_challenger(state, cost_of.get, current, new_primary, now)
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
