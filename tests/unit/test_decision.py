"""The path controller's pure decision: hysteresis, dwell, L_T, missing metrics, splits."""

from __future__ import annotations

import pytest

from braid.api.catalog import PathCatalog
from braid.api.common import ObjectRef
from braid.api.v1alpha1.offloadpolicy import (
    CostCoefficients,
    HostRef,
    Hysteresis,
    OffloadPolicySpec,
)
from braid.controller.status import policy_status
from braid.policy.decision import (
    ControlSettings,
    Metrics,
    PolicyState,
    TierMetrics,
    WeightedPath,
    choose_paths,
    normalise,
)
from braid_dev import synthetic as syn

NOW = 1_000_000.0


@pytest.fixture(scope="module")
def catalog() -> PathCatalog:
    """The synthetic pair with accuracies that make the trade-off real.

    Skip loses a point, the exit ten; cross keeps the original's accuracy but pays host time
    and two crossings. Idle, the original is cheapest; with the local tier loaded, cross is.
    """
    modules, shapes = syn._modules()
    base = syn.build_catalog(modules, shapes)
    accuracy = {syn.ORIGINAL: 0.9, syn.SKIP: 0.89, syn.CROSS: 0.9, syn.EXIT: 0.8}
    paths = [
        p.model_copy(update={"metrics": p.metrics.model_copy(update={"accuracy": accuracy[p.id]})})
        for p in base.paths
    ]
    return base.model_copy(update={"paths": paths, "baseline_accuracy": 0.9})


def policy(
    *,
    bound_us: int = 1_000_000,
    margin: float = 0.1,
    dwell: int = 30,
    c_local: float = 1e-3,
    hosts: tuple[str, ...] = (syn.HOST,),
) -> OffloadPolicySpec:
    return OffloadPolicySpec(
        model_ref=ObjectRef(name="toy"),
        cost=CostCoefficients(c_local=c_local, c_host=1e-3),
        latency_bound_microseconds=bound_us,
        all_paths=True,
        allowed_hosts=[HostRef(namespace="provider-b", model=h) for h in hosts],
        hysteresis=Hysteresis(cost_margin=margin, min_dwell_seconds=dwell),
    )


def metrics(
    local: float | None = 0.05,
    host: float | None = 0.05,
    *,
    at: float = NOW,
    rps: dict[str, float] | None = None,
) -> Metrics:
    tiers = {}
    if local is not None:
        tiers["local"] = TierMetrics(busy=local)
    if host is not None:
        tiers["host"] = TierMetrics(busy=host)
    return Metrics(at=at, tiers=tiers, path_rps=rps or {})


def on(path: str, since: float = NOW - 3600) -> PolicyState:
    return PolicyState(active=(WeightedPath(path, 1.0),), since=since, generation=1)


def test_first_decision_idle_takes_the_original(catalog: PathCatalog) -> None:
    d = choose_paths(catalog, metrics(), policy(), PolicyState())
    assert d.primary == syn.ORIGINAL
    assert d.changed
    assert not d.degraded
    assert d.state.generation == 1
    assert d.state.since == NOW
    assert {a.id for a in d.assessments} == {p.id for p in catalog.paths}


def test_a_loaded_local_tier_moves_traffic_to_the_host(catalog: PathCatalog) -> None:
    d = choose_paths(catalog, metrics(local=0.9), policy(), on(syn.ORIGINAL))
    assert d.primary == syn.CROSS
    assert d.changed
    assert d.load["local"] == pytest.approx(0.9)


def test_hysteresis_holds_a_path_that_is_only_a_little_dearer(catalog: PathCatalog) -> None:
    loaded = metrics(local=0.9)
    assert choose_paths(catalog, loaded, policy(margin=0.1), on(syn.ORIGINAL)).primary == syn.CROSS
    held = choose_paths(catalog, loaded, policy(margin=0.9), on(syn.ORIGINAL))
    assert held.primary == syn.ORIGINAL
    assert not held.changed
    assert "margin" in held.reason


def test_dwell_holds_a_fresh_decision(catalog: PathCatalog) -> None:
    loaded = metrics(local=0.9)
    young = choose_paths(catalog, loaded, policy(dwell=30), on(syn.ORIGINAL, since=NOW - 10))
    assert young.primary == syn.ORIGINAL
    assert not young.changed
    assert young.state.since == NOW - 10
    old = choose_paths(catalog, loaded, policy(dwell=30), on(syn.ORIGINAL, since=NOW - 31))
    assert old.primary == syn.CROSS
    assert old.state.since == NOW


def test_no_flap_at_steady_load(catalog: PathCatalog) -> None:
    state = PolicyState()
    changes = 0
    for i in range(100):
        d = choose_paths(catalog, metrics(local=0.9, at=NOW + i), policy(dwell=0), state)
        changes += d.changed
        state = d.state
    assert changes == 1


def test_an_unmeetable_bound_takes_the_fastest_path_best_effort(catalog: PathCatalog) -> None:
    """No path meets L_T: holding the original, the slowest path under local load, would
    saturate it further; the pool's fastest path sheds the most (``cost.choose_path``'s best
    effort). PathsChosen stays False, since the bound is still not met."""
    d = choose_paths(catalog, metrics(local=0.9), policy(bound_us=1), on(syn.ORIGINAL))
    assert not any(a.feasible for a in d.assessments)
    latency = {a.id: a.latency_us for a in d.assessments if a.latency_us is not None}
    assert latency[syn.CROSS] < latency[syn.ORIGINAL]
    assert [p.id for p in d.active] == [syn.CROSS]
    assert d.code == "BestEffort"
    assert "L_T" in d.reason
    status = policy_status(d, None, now=NOW, generation=1)
    chosen = next(c for c in status.conditions if c.type == "PathsChosen")
    assert (chosen.status, chosen.reason) == ("False", "BestEffort")


def test_a_best_effort_path_must_be_in_eq2s_pool(catalog: PathCatalog) -> None:
    """Best effort looks only at the original and the paths cheaper than it: with host time
    priced out of reach the cross path is dearer, and the original is held."""
    spec = policy(bound_us=1)
    spec = spec.model_copy(update={"cost": spec.cost.model_copy(update={"c_host": 1e6})})
    d = choose_paths(catalog, metrics(local=0.05), spec, on(syn.ORIGINAL))
    assert [p.id for p in d.active] == [syn.ORIGINAL]
    assert d.code == "BestEffort"


def test_prometheus_unreachable_keeps_the_last_decision(catalog: PathCatalog) -> None:
    state = on(syn.CROSS)
    d = choose_paths(catalog, None, policy(), state)
    assert d.active == state.active
    assert d.degraded
    assert not d.changed
    assert d.state == state
    status = policy_status(d, None, now=NOW, generation=1)
    degraded = next(c for c in status.conditions if c.type == "Degraded")
    assert degraded.status == "True"
    assert degraded.reason == "MetricsUnavailable"


def test_a_missing_local_tier_keeps_the_last_decision(catalog: PathCatalog) -> None:
    d = choose_paths(catalog, metrics(local=None), policy(), on(syn.CROSS))
    assert d.primary == syn.CROSS
    assert d.degraded


def test_an_unmeasured_host_is_never_jumped_to(catalog: PathCatalog) -> None:
    d = choose_paths(catalog, metrics(local=0.9, host=None), policy(), on(syn.ORIGINAL))
    assert syn.CROSS not in {p.id for p in d.active}
    cross = next(a for a in d.assessments if a.id == syn.CROSS)
    assert (cross.feasible, cross.reason, cross.cost) == (False, "MetricsMissing", None)
    assert d.degraded


def test_an_active_path_losing_its_host_metrics_is_kept(catalog: PathCatalog) -> None:
    d = choose_paths(catalog, metrics(host=None), policy(), on(syn.CROSS))
    assert d.primary == syn.CROSS
    assert d.degraded
    assert not d.changed


def test_a_path_that_would_saturate_its_tier_is_split(catalog: PathCatalog) -> None:
    # 2,000 req/s routed to the original: the local tier is busy with them; cross would put
    # 0.3 ms x 2,000 = 0.6 s/s on a host tier of capacity 0.5: more than it can take.
    settings = ControlSettings(capacity={"local": 1.0, "host": 0.5}, max_utilisation=0.8)
    m = Metrics(
        at=NOW,
        tiers={"local": TierMetrics(busy=0.9), "host": TierMetrics(busy=0.05)},
        path_rps={syn.ORIGINAL: 2000.0},
    )
    d = choose_paths(catalog, m, policy(), on(syn.ORIGINAL), settings)
    assert len(d.active) >= 2
    assert d.active[0].id == syn.CROSS
    assert sum(p.weight for p in d.active) == pytest.approx(1.0, abs=1e-9)
    assert all(0 < p.weight < 1 for p in d.active)


@pytest.mark.parametrize(
    "weights", [{"a": 1.0, "b": 1.0, "c": 1.0}, {"a": 0.2, "b": 0.0001}, {"a": 5.0}]
)
def test_weights_sum_to_one(weights: dict[str, float]) -> None:
    split = normalise(weights)
    assert sum(p.weight for p in split) == pytest.approx(1.0, abs=1e-9)
    assert split[0].weight == max(p.weight for p in split)


def test_status_explains_every_candidate(catalog: PathCatalog) -> None:
    d = choose_paths(catalog, metrics(local=0.9), policy(), on(syn.ORIGINAL))
    status = policy_status(d, None, now=NOW, generation=1)
    assert status.active_path == syn.CROSS
    assert status.active_paths[0].weight == 1.0
    assert {c.id for c in status.costs} == {p.id for p in catalog.paths}
    assert all(c.terms is not None for c in status.costs)
    assert status.last_decision_time == "1970-01-12T13:46:40Z"


def test_smoothing_damps_noisy_utilisation(catalog: PathCatalog) -> None:
    """ρ jumping 0 <-> 0.9 each round: unsmoothed it would flap; smoothed it settles."""

    def changes(smoothing: float) -> int:
        state, count = PolicyState(), 0
        settings = ControlSettings(smoothing=smoothing)
        for i in range(40):
            m = metrics(local=0.9 if i % 2 else 0.0, at=NOW + i)
            d = choose_paths(catalog, m, policy(dwell=0, margin=0.05), state, settings)
            count += d.changed
            state = d.state
        return count

    assert changes(1.0) > 10
    assert changes(0.3) <= 2


def test_a_load_step_is_believed_at_once_and_a_drop_slowly(catalog: PathCatalog) -> None:
    """Attack 1, release 0.5: the first loaded round already sees the full ρ."""
    settings = ControlSettings(smoothing=0.5)
    state = choose_paths(catalog, metrics(local=0.05), policy(), PolicyState(), settings).state
    up = choose_paths(catalog, metrics(local=0.95, at=NOW + 1), policy(), state, settings)
    assert dict(up.state.busy)["local"] == pytest.approx(0.95)
    down = choose_paths(catalog, metrics(local=0.05, at=NOW + 2), policy(), up.state, settings)
    assert dict(down.state.busy)["local"] == pytest.approx(0.5)


def test_per_model_queueing_prefers_a_path_around_a_busy_model(catalog: PathCatalog) -> None:
    """Another tenant keeps ``toy.b1`` 90 % busy with long executions; the skip link avoids it.

    The tier as a whole is only half busy, so the tier-wide stretch barely separates the
    paths; the per-hop wait does, and the skip path's modelled latency shows why.
    """
    busy_b1 = TierMetrics(
        busy=0.95,
        model_busy={"toy.b0": 0.02, "toy.b1": 0.9, "toy.b2": 0.02, "toy.b3": 0.01},
        exec_us={"toy.b0": 100.0, "toy.b1": 5_000.0, "toy.b2": 100.0, "toy.b3": 100.0},
    )
    m = Metrics(
        at=NOW, tiers={"local": busy_b1, "host": TierMetrics(busy=0.05, model_busy={"x": 0.0})}
    )
    settings = ControlSettings(capacity={"local": 2.0, "host": 2.0})
    d = choose_paths(catalog, m, policy(dwell=0), on(syn.ORIGINAL), settings)
    latency = {a.id: a.latency_us for a in d.assessments}
    assert latency[syn.ORIGINAL] - latency[syn.SKIP] > 20_000  # 0.9 * 5 ms / (2 * 0.1)
    assert d.primary in (syn.SKIP, syn.CROSS)
    assert d.primary != syn.ORIGINAL


def test_a_load_step_re_decides_at_once_and_steady_noise_does_not(
    catalog: PathCatalog,
) -> None:
    """Dwell 30 s and a 10 % margin hold a steady load still; a step waives the dwell."""
    settings = ControlSettings(step_threshold=0.25)
    p = policy(dwell=30, margin=0.1, c_local=3e-3)
    idle = choose_paths(catalog, metrics(local=0.05), p, PolicyState(), settings)
    assert idle.primary == syn.ORIGINAL
    # One second later the local tier is saturated: within the dwell, yet the path changes.
    step = choose_paths(catalog, metrics(local=0.9, at=NOW + 1), p, idle.state, settings)
    assert step.changed
    assert step.primary != syn.ORIGINAL
    assert "load step" in step.reason
    # Steady heavy load with noise below the threshold: nothing moves within the dwell.
    state, changes = step.state, 0
    for i in range(20):
        m = metrics(local=0.8 if i % 2 else 0.95, at=NOW + 2 + i)
        d = choose_paths(catalog, m, p, state, settings)
        changes += d.changed
        state = d.state
    assert changes == 0


def test_observed_hop_times_price_every_hop_and_unseen_ones_pay_the_tiers_overhead(
    catalog: PathCatalog,
) -> None:
    """The gateway saw each original hop take 10 ms (a busy machine); the skip link was not
    called yet. It is priced at its modelled time plus the ~9.9 ms the called hops took
    beyond theirs, so the skip path is not taken for free, and a path of fewer called hops
    is cheaper by what those calls took."""
    original = catalog.path(syn.ORIGINAL)
    hop_us = {h.triton_model: 10_000.0 for h in original.hops}
    m = Metrics(
        at=NOW,
        tiers={"local": TierMetrics(busy=0.5), "host": TierMetrics(busy=0.0)},
        hop_us=hop_us,
    )
    d = choose_paths(catalog, m, policy(dwell=0), on(syn.ORIGINAL))
    latency = {a.id: a.latency_us for a in d.assessments}
    assert latency[syn.ORIGINAL] == pytest.approx(40_000.0, rel=1e-6)
    # The skip path replaces b1 by the unseen link: modelled (~100 µs) + overhead (~9,900).
    assert latency[syn.SKIP] == pytest.approx(40_000.0, rel=0.01)
    # The exit path has three hops, two of them seen, the head unseen.
    assert latency[syn.EXIT] == pytest.approx(30_000.0, rel=0.01)


def test_a_load_drop_after_a_switch_does_not_waive_the_dwell(catalog: PathCatalog) -> None:
    """The switch itself takes load off the tier (a path with fewer blocks): that fall must
    not let the controller swing back within the dwell, or its own decisions make it flap."""
    settings = ControlSettings(step_threshold=0.25, smoothing=1.0)
    p = policy(dwell=30, margin=0.1, c_local=3e-3)
    idle = choose_paths(catalog, metrics(local=0.05), p, PolicyState(), settings)
    step = choose_paths(catalog, metrics(local=0.9, at=NOW + 1), p, idle.state, settings)
    assert step.changed
    assert step.primary != syn.ORIGINAL
    # The new path leaves the tier half as busy; within the dwell nothing moves.
    relieved = choose_paths(catalog, metrics(local=0.3, at=NOW + 2), p, step.state, settings)
    assert not relieved.changed
    assert relieved.primary == step.primary
    assert "load step" not in relieved.reason
    # The reference level followed the fall: a new rise from there is a step again.
    again = choose_paths(catalog, metrics(local=0.95, at=NOW + 3), p, relieved.state, settings)
    assert dict(relieved.state.rho_at)["local"] == pytest.approx(0.3)
    assert "load step" in again.reason


def test_each_infeasible_path_says_why(catalog: PathCatalog) -> None:
    """Over L_T, host not allowed, metrics missing, tier saturated: a reason, not a cost."""
    bound = choose_paths(catalog, metrics(), policy(bound_us=1), on(syn.ORIGINAL))
    assert {a.reason for a in bound.assessments} == {"OverLatencyBound"}
    assert all("L_T" in (a.message or "") for a in bound.assessments)

    banned = choose_paths(catalog, metrics(local=0.9), policy(hosts=()), on(syn.ORIGINAL))
    cross = next(a for a in banned.assessments if a.id == syn.CROSS)
    assert (cross.feasible, cross.reason) == (False, "HostNotAllowed")
    assert cross.cost is not None  # still priced, so a reader sees what it would cost
    assert banned.primary != syn.CROSS

    # The host tier is busier than its capacity with other work: nothing of ours fits.
    full = choose_paths(catalog, metrics(local=0.9, host=1.2), policy(), on(syn.ORIGINAL))
    cross = next(a for a in full.assessments if a.id == syn.CROSS)
    assert (cross.feasible, cross.reason) == (False, "TierSaturated")
    assert full.primary != syn.CROSS


def test_the_status_carries_terms_load_and_stretch_that_add_up(catalog: PathCatalog) -> None:
    d = choose_paths(catalog, metrics(local=0.6, host=0.2), policy(), on(syn.ORIGINAL))
    status = policy_status(d, None, now=NOW, generation=3)
    load = {t.tier: t for t in status.load}
    assert load["local"].utilisation == pytest.approx(0.6)
    assert load["local"].price_factor == pytest.approx(2.5)
    k = policy().cost
    for c in status.costs:
        assert c.terms is not None
        assert c.cost is not None
        assert c.stretch is not None
        assert sum(c.terms.model_dump().values()) == pytest.approx(c.cost, rel=1e-3)
        assert c.stretch.local == pytest.approx(2.5, rel=1e-3)  # tier-wide M/M/1 here
        idle = catalog.path(c.id).metrics.compute_us_local
        # c_l x price factor x (idle time x stretch): the local term is the load it saw.
        expected = k.c_local * load["local"].price_factor * idle * c.stretch.local
        assert c.terms.local_compute == pytest.approx(expected, rel=1e-3)


def test_a_path_cheaper_for_the_dwell_time_takes_over_inside_the_margin(
    catalog: PathCatalog,
) -> None:
    """Held on cross after a load peak: at light load the original is a little cheaper, less
    than the margin. Cheaper in every round for the dwell time, it takes traffic back."""
    p = policy(margin=0.9, dwell=10)
    state = on(syn.CROSS, since=NOW - 100)
    for i in range(10):
        d = choose_paths(catalog, metrics(at=NOW + i), p, state)
        assert d.primary == syn.CROSS, i
        assert "margin" in d.reason
        state = d.state
    back = choose_paths(catalog, metrics(at=NOW + 10), p, state)
    assert back.changed
    assert back.primary == syn.ORIGINAL
    assert back.code == "CheaperForDwell"


def test_a_break_in_being_cheaper_restarts_the_clock(catalog: PathCatalog) -> None:
    p = policy(margin=0.9, dwell=10)
    state = on(syn.CROSS, since=NOW - 100)
    for i in range(15):
        # Every fifth round the local tier is loaded and cross is the cheaper one.
        m = metrics(local=0.9 if i % 5 == 4 else 0.05, at=NOW + i)
        d = choose_paths(catalog, m, p, state, ControlSettings(smoothing=1.0))
        assert d.primary == syn.CROSS, i
        state = d.state


def test_with_no_dwell_only_the_margin_applies(catalog: PathCatalog) -> None:
    state = on(syn.CROSS, since=NOW - 100)
    for i in range(5):
        d = choose_paths(catalog, metrics(at=NOW + i), policy(margin=0.9, dwell=0), state)
        assert d.primary == syn.CROSS
        state = d.state
