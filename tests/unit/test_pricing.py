"""The array form of the decision against the scalar one it replaced, on random catalogs.

``choose_paths`` prices every candidate with ``braid.policy.pricing``; ``reference_decision``
is the one-path-at-a-time code it replaced. Hypothesis draws catalogs (shared models with
clashing catalog times, ties in every figure, hosts allowed or not), measurements (tiers
missing, saturated, per-model figures, gateway call times, routed traffic) and states
(active splits, dwell, challengers), and both must decide the same: the same split, code,
reason and new state, and the same assessment of every path (costs within float rounding,
reasons and messages word for word).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from braid.api.catalog import Crossing, Hop, PathCatalog, PathEntry
from braid.api.common import ObjectRef
from braid.api.v1alpha1.offloadpolicy import (
    CostCoefficients,
    HostRef,
    Hysteresis,
    OffloadPolicySpec,
)
from braid.policy import decision
from braid.policy.cost import Network
from braid.policy.decision import (
    ControlSettings,
    Decision,
    Metrics,
    PolicyState,
    TierMetrics,
    WeightedPath,
    choose_paths,
)
from braid.policy.pricing import round_costs
from braid_dev import synthetic as syn

from .reference_decision import reference_decide

MODELS = ("m0", "m1", "m2", "m3", "m4", "m5")
HOSTS = ("h1", "h2")
NOW = 1000.0


def _base() -> PathCatalog:
    modules, shapes = syn._modules()
    return syn.build_catalog(modules, shapes)


BASE = _base()
HOP = BASE.paths[0].hops[0]
ENTRY = BASE.paths[0]

small = st.sampled_from
times = small([0.0, 50.0, 100.0, 100.0, 250.5, 1000.0])


@st.composite
def hops(draw: Any) -> Hop:
    return HOP.model_copy(
        update={
            "triton_model": draw(small(MODELS)),
            "server": draw(small(["local", "local", "local", "host"])),
            "compute_us": draw(times),
        }
    )


@st.composite
def entries(draw: Any, path_id: str) -> PathEntry:
    path_hops = draw(st.lists(hops(), min_size=1, max_size=5))
    crossings = [
        Crossing(after_hop=0, source="local", target="host", bytes=draw(small([0, 400, 4096])))
        for _ in range(draw(st.integers(0, 2)))
    ]
    metrics = ENTRY.metrics.model_copy(
        update={
            "accuracy": draw(small([0.85, 0.9, 0.9, 0.92, 0.92])),
            "params_local": draw(small([0, 10_000, 200_000])),
            "params_host": draw(small([0, 10_000, 500_000])),
            "compute_us_local": draw(times),
            "compute_us_host": draw(times),
        }
    )
    return ENTRY.model_copy(
        update={
            "id": path_id,
            "hops": path_hops,
            "crossings": crossings,
            "metrics": metrics,
            "host_model": draw(st.none() | small(HOSTS)),
        }
    )


@st.composite
def catalogs(draw: Any) -> PathCatalog:
    n = draw(st.integers(1, 10))
    ids = [f"p{i}" for i in draw(st.permutations(range(n)))]
    paths = [draw(entries(i)) for i in ids]
    original = draw(st.integers(0, n - 1))
    if draw(st.integers(0, 3)):  # mostly all local, as an original path is
        local = [h.model_copy(update={"server": "local"}) for h in paths[original].hops]
        paths[original] = paths[original].model_copy(update={"hops": local})
    return BASE.model_copy(
        update={"paths": paths, "original_path": ids[original], "baseline_accuracy": 0.9}
    )


@st.composite
def tier_metrics(draw: Any) -> TierMetrics:
    def per_model(values: Any) -> dict[str, float]:
        drawn: dict[str, float] = draw(st.dictionaries(small(MODELS), values, max_size=3))
        return drawn

    return TierMetrics(
        busy=draw(small([0.0, 0.1, 0.5, 0.7, 0.9, 1.0, 1.4])),
        compute_us=per_model(small([80.0, 100.0, 300.0])),
        model_busy=draw(st.none() | st.just({})) or per_model(small([0.1, 0.5, 0.99])),
        exec_us=per_model(small([100.0, 2000.0])),
    )


@st.composite
def measurements(draw: Any, catalog: PathCatalog) -> Metrics:
    ids = [p.id for p in catalog.paths]
    return Metrics(
        at=NOW,
        tiers=draw(
            st.fixed_dictionaries(
                {"local": tier_metrics()} if draw(st.integers(0, 5)) else {},
                optional={"host": tier_metrics()},
            )
        ),
        path_rps=draw(
            st.dictionaries(small([*ids, "gone"]), small([1.0, 50.0, 400.0, 3000.0]), min_size=1)
            | st.just({})
        ),
        network=Network(rtt_us=draw(small([0.0, 200.0])), bandwidth_mbit_s=1000.0),
        hop_us=draw(st.none() | st.just({}))
        or draw(st.dictionaries(small(MODELS), small([90.0, 400.0]), max_size=3)),
    )


@st.composite
def policies(draw: Any, catalog: PathCatalog) -> OffloadPolicySpec:
    ids = [p.id for p in catalog.paths]
    hosts = draw(st.lists(st.none() | small(HOSTS), max_size=2))
    return OffloadPolicySpec(
        model_ref=ObjectRef(name="toy"),
        cost=CostCoefficients(
            a=draw(small([0.0, 40.0])),
            c_local=draw(small([1e-6, 1e-3])),
            c_host=draw(small([2e-5, 1e-3])),
        ),
        latency_bound_microseconds=draw(small([500, 3000, 1_000_000])),
        all_paths=draw(st.booleans()),
        candidate_paths=draw(st.lists(small(ids), unique=True)),
        allowed_hosts=[HostRef(namespace="b", model=h) for h in hosts],
        hysteresis=Hysteresis(
            cost_margin=draw(small([0.0, 0.1])), min_dwell_seconds=draw(small([0, 30]))
        ),
    )


@st.composite
def states(draw: Any, catalog: PathCatalog) -> PolicyState:
    ids = [p.id for p in catalog.paths]
    if draw(st.booleans()):
        return PolicyState()
    active = draw(st.lists(small([*ids, "gone"]), min_size=1, max_size=2, unique=True))
    weights = [1.0] if len(active) == 1 else [0.6, 0.4]
    return PolicyState(
        active=tuple(WeightedPath(i, w) for i, w in zip(active, weights, strict=True)),
        since=draw(small([None, NOW - 5, NOW - 100])),
        generation=3,
        rho_at=draw(small([(), (("local", 0.1),), (("local", 0.9), ("host", 0.2))])),
        challenger=draw(st.none() | small(ids)),
        challenger_since=draw(small([None, NOW - 5, NOW - 100])),
    )


@st.composite
def rounds(draw: Any) -> tuple[PathCatalog, Metrics, OffloadPolicySpec, PolicyState]:
    catalog = draw(catalogs())
    return catalog, draw(measurements(catalog)), draw(policies(catalog)), draw(states(catalog))


def _same_assessments(new: Decision, old: Decision) -> None:
    got, want = list(new.assessments), list(old.assessments)
    assert [a.id for a in got] == [a.id for a in want]
    for a, b in zip(got, want, strict=True):
        assert (a.feasible, a.reason, a.message) == (b.feasible, b.reason, b.message), a.id
        for field in ("cost", "latency_us", "terms", "stretch"):
            mine, theirs = getattr(a, field), getattr(b, field)
            assert (mine is None) == (theirs is None), (a.id, field)
            if theirs is not None:
                assert mine == pytest.approx(theirs, rel=1e-12, abs=0), (a.id, field)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rounds())
def test_the_array_decision_is_the_scalar_decision(
    case: tuple[PathCatalog, Metrics, OffloadPolicySpec, PolicyState],
) -> None:
    catalog, metrics, policy, state = case
    control = ControlSettings()
    new = choose_paths(catalog, metrics, policy, state, control)
    old = reference_decide(catalog, metrics, policy, state, control)
    event(f"{old.code}, {len(old.active)} active")
    assert (new.active, new.code, new.reason) == (old.active, old.code, old.reason)
    assert (new.changed, new.degraded, new.load, new.at) == (
        old.changed,
        old.degraded,
        old.load,
        old.at,
    )
    kept = ("active", "since", "generation", "rho_at", "challenger", "challenger_since")
    assert {k: getattr(new.state, k) for k in kept} == {k: getattr(old.state, k) for k in kept}
    _same_assessments(new, old)
    for a in old.assessments:
        assert new.assessment(a.id) == next(b for b in new.assessments if b.id == a.id)


@given(st.lists(st.floats(-1e9, 1e9, allow_nan=False) | small([0.5e-9, 2.5e-9, 1.0000000005])))
def test_costs_round_as_python_rounds(costs: list[float]) -> None:
    import numpy as np

    assert round_costs(np.array(costs, dtype=np.float64)).tolist() == [round(c, 9) for c in costs]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rounds(), small([400.0, 3000.0, 20_000.0]), small([1, 2, decision.SPLIT_CHUNK]))
def test_a_split_under_heavy_traffic_is_the_scalar_split(
    case: tuple[PathCatalog, Metrics, OffloadPolicySpec, PolicyState], rps: float, chunk: int
) -> None:
    """Traffic beyond a tier's headroom: the paths share it in rank order, or all saturated
    tiers pass every path over and the first takes it all, the same in both forms (with
    chunks small enough that a split crosses their edges)."""
    catalog, metrics, policy, _ = case
    better = [  # every other path more accurate, so the pool is large
        p
        if p.id == catalog.original_path
        else p.model_copy(update={"metrics": p.metrics.model_copy(update={"accuracy": 0.92})})
        for p in catalog.paths
    ]
    catalog = catalog.model_copy(update={"paths": better})
    policy = policy.model_copy(update={"all_paths": True, "latency_bound_microseconds": 10**6})
    heavy = Metrics(
        at=NOW,
        tiers=metrics.tiers,
        path_rps={catalog.original_path: rps},
        network=metrics.network,
        hop_us=metrics.hop_us,
    )
    default, decision.SPLIT_CHUNK = decision.SPLIT_CHUNK, chunk
    try:
        new = choose_paths(catalog, heavy, policy, PolicyState())
    finally:
        decision.SPLIT_CHUNK = default
    old = reference_decide(catalog, heavy, policy, PolicyState(), ControlSettings())
    event(f"{old.code}, {len(old.active)} active")
    assert (new.active, new.code, new.reason) == (old.active, old.code, old.reason)
