"""The path controller's decision: ``choose_paths(catalog, metrics, policy, state) -> Decision``.

Pure, after Ray Serve's autoscaling policy: the controller loop gathers ``Metrics`` from
Prometheus, calls this, and writes the result; everything that makes a decision stick
(hysteresis margin, minimum dwell, the last good decision) travels in ``PolicyState`` so it is
tested like the rest. ``metrics.at`` is the clock: nothing here reads the time.

How measured load becomes CoDE's terms (units of ``braid.policy.cost``):

- a tier's utilisation ``ρ`` is its Triton servers' busy time per second
  (``rate(nv_inference_compute_infer_duration_us)``) over its ``capacity`` (concurrent
  executions it sustains, e.g. cores), clipped below 1;
- a path's expected ``T_cp`` on a tier is the sum of its hops' catalog service times there,
  scaled by the tier's calibration (measured / catalog compute of the models that saw
  traffic, see ``calibration``), plus the time it queues: each hop's own M/D/1 wait from its
  model's measured utilisation and execution time (``hop_wait_us``), or, when the servers
  report no per-model figures, CoDE's tier-wide M/M/1 stretch ``1 / (1 - ρ)``;
- prices follow the load too: ``c_l`` and ``c_h`` are multiplied by the same factors, so an
  idle tier's time is nearly free and a saturated tier's time dominates F(p).

Choice: eq. 2 over the measured candidates (``braid.policy.cost.choose_path``); when no path
meets ``L_T`` the original path takes all traffic (it needs no host). A path whose tiers have
no measurement is never chosen; with no local measurement at all, or with an active path's
tier unmeasured, the last decision stays and the decision is marked degraded. When the chosen
path alone would push a tier past ``max_utilisation``, traffic is split: the cheapest feasible
paths in turn take as much as their tiers' headroom allows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from braid.api.catalog import Hop, PathCatalog, PathEntry
from braid.api.common import Condition
from braid.api.v1alpha1.offloadpolicy import (
    ActivePath,
    OffloadPolicySpec,
    OffloadPolicyStatus,
    PathCost,
)
from braid.policy.cost import (
    Candidate,
    Load,
    Network,
    PathFigures,
    choose_path,
    cost_terms,
    figures_from_entry,
    loaded_coefficients,
    under_load,
)

RHO_CLIP = 0.95
"""Utilisation used for the M/M/1 stretch is clipped here: beyond it the model says nothing."""
WEIGHT_DECIMALS = 3
WEIGHT_TOLERANCE = 0.1
"""A split is rewritten only when some weight moves by more than this (weights flap too)."""


@dataclass(frozen=True)
class TierMetrics:
    """One tier's servers as measured over the last window."""

    busy: float
    """Busy executions per second of wall time: Σ compute µs per second / 1e6."""
    compute_us: Mapping[str, float] = field(default_factory=dict)
    """Measured mean compute time per inference by Triton model (models with traffic);
    used to calibrate the catalog's times, never as a path's time on its own."""
    model_busy: Mapping[str, float] = field(default_factory=dict)
    """Busy executions per second of wall time by Triton model (its instance's utilisation)."""
    exec_us: Mapping[str, float] = field(default_factory=dict)
    """Mean compute time per execution by Triton model: a batch of 64 from another tenant
    is one execution, and it is what a request arriving behind it waits for."""


@dataclass(frozen=True)
class Metrics:
    """What the controller measured at ``at`` (seconds since the epoch)."""

    at: float
    tiers: Mapping[str, TierMetrics] = field(default_factory=dict)
    """By server role (local, host); a tier absent here is unmeasured."""
    path_rps: Mapping[str, float] = field(default_factory=dict)
    """Requests per second the gateway routed to each path of the model."""
    network: Network = field(default_factory=Network)
    hop_us: Mapping[str, float] = field(default_factory=dict)
    """Mean time of one call to each Triton model as the gateway saw it (models it called
    in the window): queueing, compute, the server's scheduling and the transport, measured."""

    @property
    def offered_rps(self) -> float:
        return sum(self.path_rps.values())


@dataclass(frozen=True)
class ControlSettings:
    """Knobs of the controller that are not part of the policy's spec."""

    capacity: Mapping[str, float] = field(default_factory=lambda: {"local": 1.0, "host": 1.0})
    """Concurrent executions each tier sustains (its ρ is busy / capacity)."""
    max_utilisation: float = 0.8
    """A tier the chosen path would push past this gets a split."""
    smoothing: float = 0.5
    """Weight of a *falling* busy-time measurement in its running mean (1: no smoothing).

    The queueing stretch and the load-following prices both grow like ``1 / (1 - ρ)``, so
    scrape-to-scrape noise in ``ρ`` near saturation swings F(p) by more than any sensible
    cost margin; averaging ``ρ`` over a few rounds is what keeps a steady load steady.
    """
    attack: float = 1.0
    """Weight of a *rising* measurement. Like the HPA's scale-up / scale-down asymmetry: a
    load step is believed at once (a saturated tier hurts every request until the switch),
    a drop only after a few rounds, so the smoothed ``ρ`` follows the peaks of a noisy
    steady load rather than its troughs and the decision holds still."""
    model_instances: float = 1.0
    """Instances per Triton model: a model's utilisation is its busy time over this."""
    step_threshold: float = 0.25
    """A load step: some tier's utilisation rose this much since the active split was
    decided. The split was chosen for a lighter load, so the dwell is waived until a round
    re-decides (the cost margin still applies); the dwell holds a steady load still.

    Only a rise waives it. A fall is often the split's own doing (a path with fewer blocks
    takes load off the tier it leaves): waiving the dwell then let the controller swing back
    to a dearer path, whose load brought the step back, and so on (two flaps in 35 s when
    the provider's own traffic was the load). A fall only moves the reference level, so
    the next rise is measured from where the load now is."""


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

    @property
    def primary(self) -> str | None:
        return max(self.active, key=lambda p: p.weight).id if self.active else None


@dataclass(frozen=True)
class PathAssessment:
    """One candidate as this round saw it: F(p), its terms, and whether it meets ``L_T``."""

    id: str
    cost: float
    feasible: bool
    latency_us: float
    terms: Mapping[str, float]


@dataclass(frozen=True)
class Decision:
    """The outcome of one round; ``state`` is what the next round must be given."""

    active: tuple[WeightedPath, ...]
    assessments: tuple[PathAssessment, ...]
    changed: bool
    degraded: bool
    reason: str
    state: PolicyState
    load: Mapping[str, float] = field(default_factory=dict)

    @property
    def primary(self) -> str:
        return max(self.active, key=lambda p: p.weight).id

    def to_status(self, previous: OffloadPolicyStatus | None = None) -> OffloadPolicyStatus:
        """The ``OffloadPolicy`` status that explains this decision (F(p) of every candidate)."""
        when = datetime.fromtimestamp(self.state.since or 0.0, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        costs = {a.id: a for a in self.assessments}
        primary = costs.get(self.primary)
        degraded = Condition(
            type="Degraded",
            status="True" if self.degraded else "False",
            reason="MetricsMissing" if self.degraded else "MetricsFresh",
            message=self.reason,
        )
        ready = Condition(
            type="PathsChosen", status="True", reason="CostMinimised", message=self.reason
        )
        conditions = [_transition(c, previous, when) for c in (ready, degraded)]
        return OffloadPolicyStatus(
            observed_generation=previous.observed_generation if previous else None,
            active_path=self.primary,
            active_paths=[ActivePath(id=p.id, weight=p.weight) for p in self.active],
            cost=primary.cost if primary else None,
            costs=[
                PathCost(id=a.id, cost=a.cost, feasible=a.feasible, terms=dict(a.terms))
                for a in self.assessments
            ],
            candidate_paths=len(self.assessments),
            routing_config_map=previous.routing_config_map if previous else None,
            last_decision_time=when,
            conditions=conditions,
        )


def _transition(new: Condition, previous: OffloadPolicyStatus | None, now: str) -> Condition:
    """Keep the old transition time when the condition's status did not change."""
    for old in previous.conditions if previous else []:
        if old.type == new.type and old.status == new.status:
            return new.model_copy(update={"last_transition_time": old.last_transition_time})
    return new.model_copy(update={"last_transition_time": now})


def candidate_entries(catalog: PathCatalog, policy: OffloadPolicySpec) -> list[PathEntry]:
    """The policy's candidate paths that the catalog has, the original path always among them."""
    wanted = None if policy.all_paths or not policy.candidate_paths else set(policy.candidate_paths)
    return [
        p
        for p in catalog.paths
        if wanted is None or p.id in wanted or p.id == catalog.original_path
    ]


def calibration(catalog: PathCatalog, tiers: Mapping[str, TierMetrics]) -> dict[str, float]:
    """Per tier: measured over catalog compute time of the models that saw traffic.

    Served times differ from the build's bare-model medians (the server's overhead, CPU
    contention), but by a factor common to a tier's models. Scaling every hop's catalog time
    by it keeps paths comparable: using measured times only for the hops that carry traffic
    would make every path the gateway does not use look cheap, and the controller would
    chase them back and forth.
    """
    catalog_us: dict[str, float] = {}
    for entry in catalog.paths:
        for hop in entry.hops:
            catalog_us[hop.triton_model] = hop.compute_us
    out: dict[str, float] = {}
    for tier, m in tiers.items():
        pairs = [(us, catalog_us[name]) for name, us in m.compute_us.items() if name in catalog_us]
        measured = sum(us for us, _ in pairs)
        expected = sum(c for _, c in pairs)
        out[tier] = measured / expected if measured > 0 and expected > 0 else 1.0
    return out


def hop_wait_us(tier: TierMetrics | None, model: str, settings: ControlSettings) -> float:
    """Expected wait in ``model``'s queue: M/D/1, ``ρ S / (2 (1 - ρ))``.

    ``S`` is the model's mean execution time and ``ρ`` its instance's utilisation, both
    measured. A request queues behind whatever the model is executing for anyone (another
    tenant's batch included), so a path through models nobody else uses (a skip or a link
    model) waits for nothing even on a busy tier: the tier-wide M/M/1 stretch misses that.
    """
    if tier is None:
        return 0.0
    exec_us = tier.exec_us.get(model, 0.0)
    rho = min(max(tier.model_busy.get(model, 0.0) / settings.model_instances, 0.0), RHO_CLIP)
    return rho * exec_us / (2.0 * (1.0 - rho)) if exec_us > 0 else 0.0


def queueing_s(
    entry: PathEntry, metrics: Metrics, settings: ControlSettings
) -> dict[str, float] | None:
    """Seconds ``entry`` waits in queues on each tier, or ``None`` without per-model metrics."""
    if not any(m.model_busy for m in metrics.tiers.values()):
        return None
    waits: dict[str, float] = {}
    for hop in entry.hops:
        wait = hop_wait_us(metrics.tiers.get(hop.server), hop.triton_model, settings)
        waits[hop.server] = waits.get(hop.server, 0.0) + wait / 1e6
    return waits


def tier_work_s(entry: PathEntry, scale: Mapping[str, float] | None = None) -> dict[str, float]:
    """Seconds of service one request of ``entry`` needs on each tier (catalog x calibration)."""
    work: dict[str, float] = {}
    for hop in entry.hops:
        factor = scale.get(hop.server, 1.0) if scale else 1.0
        work[hop.server] = work.get(hop.server, 0.0) + hop.compute_us * factor / 1e6
    return work


def utilisation(metrics: Metrics, settings: ControlSettings) -> dict[str, float]:
    return {
        tier: m.busy / max(settings.capacity.get(tier, 1.0), 1e-9)
        for tier, m in metrics.tiers.items()
    }


def modelled_hop_us(
    hop: Hop, metrics: Metrics, scale: Mapping[str, float], settings: ControlSettings
) -> float:
    """A call's time from the model alone: calibrated compute plus the M/D/1 wait."""
    compute = hop.compute_us * scale.get(hop.server, 1.0)
    return compute + hop_wait_us(metrics.tiers.get(hop.server), hop.triton_model, settings)


def hop_overhead_us(
    catalog: PathCatalog, metrics: Metrics, scale: Mapping[str, float], settings: ControlSettings
) -> dict[str, float]:
    """Per tier: what an observed call took beyond its modelled time, averaged over the
    models the gateway called. It is what every call pays and the model does not see: the
    gRPC round trip, and on a busy machine the wait for a CPU to run the model's process.
    A hop nobody calls yet is priced at its modelled time plus its tier's overhead."""
    seen: dict[str, list[float]] = {}
    done: set[str] = set()
    for entry in catalog.paths:
        for hop in entry.hops:
            observed = metrics.hop_us.get(hop.triton_model)
            if observed is None or hop.triton_model in done:
                continue
            done.add(hop.triton_model)
            extra = observed - modelled_hop_us(hop, metrics, scale, settings)
            seen.setdefault(hop.server, []).append(max(extra, 0.0))
    return {tier: sum(v) / len(v) for tier, v in seen.items()}


def _figures(
    entry: PathEntry,
    metrics: Metrics,
    rho: Mapping[str, float],
    scale: Mapping[str, float],
    settings: ControlSettings,
    overhead: Mapping[str, float],
) -> tuple[PathFigures, Load]:
    """The path's loaded figures: calibrated service time plus the time spent queueing.

    When the gateway reports its calls, each hop costs what its calls took (a hop not called
    yet: its modelled time plus its tier's ``overhead``); else, with per-model Triton
    metrics, calibrated compute plus each hop's own M/D/1 wait (``hop_wait_us``); with
    neither, the tier-wide M/M/1 stretch of CoDE's model (``under_load``).
    """
    base = figures_from_entry(entry, metrics.network)
    load = Load(
        local=min(max(rho.get("local", 0.0), 0.0), RHO_CLIP),
        host=min(max(rho.get("host", 0.0), 0.0), RHO_CLIP),
    )
    if metrics.hop_us:
        times: dict[str, float] = {}
        for hop in entry.hops:
            observed = metrics.hop_us.get(hop.triton_model)
            t = (
                observed
                if observed is not None
                else modelled_hop_us(hop, metrics, scale, settings) + overhead.get(hop.server, 0.0)
            )
            times[hop.server] = times.get(hop.server, 0.0) + t
        return replace(
            base, t_local_us=times.get("local", 0.0), t_host_us=times.get("host", 0.0)
        ), load
    work = tier_work_s(entry, scale)
    waits = queueing_s(entry, metrics, settings)
    measured = replace(
        base,
        t_local_us=work.get("local", 0.0) * 1e6,
        t_host_us=work.get("host", 0.0) * 1e6,
    )
    if waits is None:
        return under_load(measured, load), load
    return replace(
        measured,
        t_local_us=measured.t_local_us + waits.get("local", 0.0) * 1e6,
        t_host_us=measured.t_host_us + waits.get("host", 0.0) * 1e6,
    ), load


def _measured(entry: PathEntry, metrics: Metrics) -> bool:
    return all(hop.server in metrics.tiers for hop in entry.hops)


def _keep(
    state: PolicyState,
    catalog: PathCatalog,
    assessments: tuple[PathAssessment, ...],
    *,
    degraded: bool,
    reason: str,
    load: Mapping[str, float],
) -> Decision:
    active = state.active or (WeightedPath(catalog.original_path, 1.0),)
    kept = PolicyState(
        active=active, since=state.since, generation=state.generation, rho_at=state.rho_at
    )
    return Decision(active, assessments, False, degraded, reason, kept, load)


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
    rho = utilisation(metrics, settings)
    routed: dict[str, float] = {}
    for path_id, rps in metrics.path_rps.items():
        entry = next((e for e in ranked if e.id == path_id), None)
        if entry is None:
            continue
        for tier, seconds in tier_work_s(entry, scale).items():
            routed[tier] = routed.get(tier, 0.0) + rps * seconds
    headroom = {
        tier: settings.max_utilisation
        - max(rho.get(tier, 0.0) - routed.get(tier, 0.0) / settings.capacity.get(tier, 1.0), 0.0)
        for tier in set(rho) | set(routed)
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


def _decide(
    catalog: PathCatalog,
    metrics: Metrics | None,
    policy: OffloadPolicySpec,
    state: PolicyState,
    settings: ControlSettings,
) -> Decision:
    if metrics is None:
        return _keep(state, catalog, (), degraded=True, reason="metrics unavailable", load={})
    rho = utilisation(metrics, settings)
    entries = candidate_entries(catalog, policy)
    by_id = {e.id: e for e in entries}
    measured = [e for e in entries if _measured(e, metrics)]

    scale = calibration(catalog, metrics.tiers)
    figures: list[PathFigures] = []
    load = Load()
    overhead = hop_overhead_us(catalog, metrics, scale, settings) if metrics.hop_us else {}
    for entry in measured:
        f, load = _figures(entry, metrics, rho, scale, settings, overhead)
        figures.append(f)
    coefficients = loaded_coefficients(policy.cost, load.local_factor, load.host_factor)
    bound = float(policy.latency_bound_microseconds)
    assessments = tuple(
        PathAssessment(
            id=f.path_id,
            cost=sum(terms.values()),
            feasible=f.latency_us <= bound,
            latency_us=f.latency_us,
            terms=terms,
        )
        for f in figures
        for terms in [cost_terms(f, catalog.baseline_accuracy, coefficients)]
    )
    load_info = {"local": load.local, "host": load.host}

    if "local" not in metrics.tiers or catalog.original_path not in {e.id for e in measured}:
        return _keep(
            state,
            catalog,
            assessments,
            degraded=True,
            reason="local tier unmeasured",
            load=load_info,
        )
    unmeasured_active = [
        p.id for p in state.active if p.id in by_id and p.id not in {e.id for e in measured}
    ]
    if unmeasured_active:
        return _keep(
            state,
            catalog,
            assessments,
            degraded=True,
            reason=f"active paths unmeasured: {', '.join(unmeasured_active)}",
            load=load_info,
        )
    degraded = len(measured) < len(entries)

    choice = choose_path(
        figures, catalog.original_path, catalog.baseline_accuracy, coefficients, bound
    )
    if choice.within_bound:
        pool: list[Candidate] = [
            c
            for c in choice.ranked
            if c.within_bound
            and (c.cheaper_than_original or c.figures.path_id == catalog.original_path)
        ]
        best = choice.path_id
        ranked_entries = [by_id[best]] + [
            by_id[c.figures.path_id] for c in pool if c.figures.path_id != best
        ]
        proposal = split_weights(ranked_entries, metrics, settings, scale)
        reason = f"cheapest within L_T: {best}"
    else:
        proposal = (WeightedPath(catalog.original_path, 1.0),)
        reason = "no path meets L_T: original path"

    cost_of = {a.id: a for a in assessments}
    now = metrics.at
    rho_now = tuple(sorted((t, min(max(r, 0.0), 1.0)) for t, r in rho.items()))
    if not state.rho_at:
        # A split kept since before the first measurement: the load it holds for is this one.
        state = replace(state, rho_at=rho_now)
    if not state.active:
        new_state = PolicyState(proposal, now, state.generation + 1, rho_at=rho_now)
        return Decision(proposal, assessments, True, degraded, reason, new_state, load_info)

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

    def keep(why: str) -> Decision:
        return _keep(state, catalog, assessments, degraded=degraded, reason=why, load=load_info)

    if stepped:
        # The split was decided for another load: no dwell. The margin still applies, so
        # near-equal paths do not trade places while the load ramps.
        dwelt = True
        reason = f"{reason} (load step)"
        if new_primary == current and not _moved(state.active, proposal):
            # Re-decided for the new load and kept: the step is spent.
            kept = keep(f"holding {current}: {reason}")
            return replace(kept, state=replace(kept.state, rho_at=rho_now))
    if new_primary != current:
        current_cost = cost_of.get(current)
        margin_ok = (
            current_cost is None
            or not current_cost.feasible
            or cost_of[new_primary].cost
            <= (1.0 - policy.hysteresis.cost_margin) * current_cost.cost
        )
        if not margin_ok:
            return keep(f"{new_primary} within the cost margin of {current}")
        if not dwelt:
            return keep(f"dwelling on {current}")
    elif not _moved(state.active, proposal) or not dwelt:
        return keep(f"holding {current}: {reason}")
    new_state = PolicyState(proposal, now, state.generation + 1, rho_at=rho_now)
    return Decision(proposal, assessments, True, degraded, reason, new_state, load_info)
