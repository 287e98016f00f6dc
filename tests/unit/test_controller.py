"""The controller's pure pieces: samples -> Metrics, the status patch, the routing-file sink."""

from __future__ import annotations

from pathlib import Path

import pytest

from braid.api.common import Condition, ObjectRef
from braid.api.routing import RoutingTable
from braid.api.v1alpha1.offloadpolicy import OffloadPolicySpec, OffloadPolicyStatus
from braid.controller.loop import routing_file_sink
from braid.controller.metrics import MetricQueries, metrics_from_samples
from braid.controller.status import StatusGate, path_change, policy_status, runner_up
from braid.dataplane.promql import PromSample
from braid.kube.policy_status import status_patch
from braid.policy.cost import Network
from braid.policy.decision import (
    Decision,
    Metrics,
    PathAssessment,
    PolicyState,
    TierMetrics,
    WeightedPath,
    choose_paths,
)
from braid_dev import synthetic as syn


def sample(value: float, **labels: str) -> PromSample:
    return PromSample(labels=labels, value=value)


def test_samples_become_tier_busy_time_and_per_model_compute() -> None:
    m = metrics_from_samples(
        10.0,
        up=[sample(1, tier="local"), sample(0, tier="host")],
        compute=[
            sample(400_000, tier="local", model="toy.b0"),
            sample(100_000, tier="local", model="other"),
            sample(5, tier="host", model="toyhost.b1"),
        ],
        count=[sample(1000, tier="local", model="toy.b0")],
        paths=[sample(50, path=syn.ORIGINAL), sample(0, path=syn.CROSS)],
        network=Network(),
    )
    assert set(m.tiers) == {"local"}
    assert m.tiers["local"].busy == 0.5
    assert m.tiers["local"].compute_us == {"toy.b0": 400.0}
    assert m.path_rps == {syn.ORIGINAL: 50}


def test_executions_give_each_model_its_utilisation_and_execution_time() -> None:
    """40 batched executions per second of 10 ms each: the model is 40 % busy, S = 10 ms."""
    m = metrics_from_samples(
        10.0,
        up=[sample(1, tier="local")],
        compute=[sample(400_000, tier="local", model="toy.b0")],
        count=[sample(2560, tier="local", model="toy.b0")],
        paths=[],
        network=Network(),
        executions=[sample(40, tier="local", model="toy.b0")],
    )
    local = m.tiers["local"]
    assert local.model_busy == {"toy.b0": 0.4}
    assert local.exec_us == {"toy.b0": 10_000.0}
    assert local.compute_us == {"toy.b0": 156.25}


def test_the_gateways_hop_timings_become_mean_call_times() -> None:
    m = metrics_from_samples(
        10.0,
        up=[sample(1, tier="local")],
        compute=[],
        count=[],
        paths=[],
        network=Network(),
        hop_seconds=[sample(0.5, hop="toy.b0"), sample(0.1, hop="idle")],
        hop_calls=[sample(50, hop="toy.b0"), sample(0, hop="idle")],
    )
    assert m.hop_us == {"toy.b0": 10_000.0}


def test_queries_select_the_model_and_window() -> None:
    q = MetricQueries(model="toy", window="2s")
    assert 'model="toy"' in q.path_rps
    assert "[2s]" in q.compute_us_per_s


def test_the_status_patch_keeps_the_operators_conditions() -> None:
    status = OffloadPolicyStatus(
        active_path="a",
        conditions=[Condition(type="Degraded", status="False")],
    )
    current = {
        "conditions": [
            {"type": "Ready", "status": "True"},
            {"type": "Degraded", "status": "True"},
        ],
        "routingConfigMap": "x",
    }
    patch = status_patch(status, current)
    assert patch["activePath"] == "a"
    assert "routingConfigMap" not in patch
    assert [c["type"] for c in patch["conditions"]] == ["Ready", "Degraded"]
    assert patch["conditions"][1]["status"] == "False"


def test_the_routing_sink_writes_the_decided_split(tmp_path: Path) -> None:
    modules, shapes = syn._modules()
    catalog = syn.build_catalog(modules, shapes)
    spec = OffloadPolicySpec(
        model_ref=ObjectRef(name="toy"), latency_bound_microseconds=10_000, all_paths=True
    )
    metrics = Metrics(at=5.0, tiers={"local": TierMetrics(0.1), "host": TierMetrics(0.1)})
    decision = choose_paths(catalog, metrics, spec, PolicyState())
    out = tmp_path / "routing.json"
    routing_file_sink(catalog, spec, out)(
        decision, policy_status(decision, None, now=5.0, generation=1)
    )
    table = RoutingTable.model_validate_json(out.read_text())
    assert [p.id for p in table.paths] == [p.id for p in decision.active]
    assert table.fallback_path == catalog.original_path
    assert table.generation == 1


def assessed(id_: str, cost: float | None, feasible: bool = True) -> PathAssessment:
    return PathAssessment(id_, cost, feasible, 1000.0, {})


def decided(
    primary: str, *, code: str = "CheapestFeasible", reason: str = "cheapest", changed: bool = False
) -> Decision:
    return Decision(
        active=(WeightedPath(primary, 1.0),),
        assessments=(assessed("a", 2.8236104497), assessed("b", 3.1), assessed("c", 1e8, False)),
        changed=changed,
        degraded=False,
        reason=reason,
        state=PolicyState(active=(WeightedPath(primary, 1.0),), since=0.0),
        code=code,
    )


def test_conditions_move_their_transition_time_only_when_their_status_flips() -> None:
    first = policy_status(decided("a"), None, now=1000.0, generation=1)
    chosen = {c.type: c for c in first.conditions}
    assert chosen["PathsChosen"].last_transition_time == "1970-01-01T00:16:40Z"
    assert chosen["PathsChosen"].message == "cheapest"
    # Each condition carries its own message, and the generation it observed.
    assert chosen["Degraded"].status == "False"
    assert chosen["Degraded"].reason == "MetricsFresh"
    assert "cheapest" not in chosen["Degraded"].message
    assert {c.observed_generation for c in first.conditions} == {1}
    later = policy_status(decided("b", reason="holding b"), first, now=2000.0, generation=2)
    kept = {c.type: c for c in later.conditions}
    assert kept["PathsChosen"].last_transition_time == "1970-01-01T00:16:40Z"
    assert kept["PathsChosen"].message == "holding b"
    assert kept["PathsChosen"].observed_generation == 2
    none = policy_status(decided("a", code="NoFeasiblePath"), later, now=3000.0, generation=2)
    flipped = {c.type: c for c in none.conditions}
    assert flipped["PathsChosen"].status == "False"
    assert flipped["PathsChosen"].last_transition_time == "1970-01-01T00:50:00Z"
    assert flipped["Degraded"].last_transition_time == "1970-01-01T00:16:40Z"


def test_costs_are_rounded_and_the_runner_up_and_margin_are_shown() -> None:
    status = policy_status(decided("a"), None, now=0.0, generation=1)
    assert status.cost == 2.824
    assert status.runner_up == "b"
    assert status.margin == pytest.approx(0.098, abs=1e-3)
    assert next(c for c in status.costs if c.id == "c").cost == 1e8
    # Held on a dearer path by hysteresis: the margin is negative.
    best, margin = runner_up(decided("b").assessments, "b")
    assert best is not None
    assert best.id == "a"
    assert margin is not None
    assert margin < 0


def test_the_status_is_written_on_change_and_not_more_often_than_needed() -> None:
    gate = StatusGate(min_interval_s=5.0, refresh_s=60.0)
    s0 = policy_status(decided("a"), None, now=0.0, generation=1)
    assert gate.due(s0, None, None, 0.0)
    same = policy_status(decided("a"), s0, now=1.0, generation=1)
    assert not gate.due(same, s0, 0.0, 1.0)
    assert not gate.due(same, s0, 0.0, 59.0)
    assert gate.due(same, s0, 0.0, 60.0)  # refreshed: costs do not go stale
    # A condition that flips waits for the minimum interval...
    flipped = policy_status(decided("a", code="NoFeasiblePath"), s0, now=2.0, generation=1)
    assert not gate.due(flipped, s0, 0.0, 2.0)
    assert gate.due(flipped, s0, 0.0, 5.0)
    # ... noise in a reason or the runner-up waits for the refresh...
    held = policy_status(decided("a", code="WithinCostMargin"), s0, now=2.0, generation=1)
    assert not gate.due(held, s0, 0.0, 30.0)
    # ... a path change does not: the operator renders the routing from it.
    moved = policy_status(decided("b", changed=True), s0, now=1.0, generation=1)
    assert gate.due(moved, s0, 0.0, 1.0)


def test_a_path_change_is_told_with_both_costs() -> None:
    d = decided("b", changed=True, code="LoadStep", reason="cheapest feasible path: b")
    costs = {a.id: a for a in d.assessments}
    change = path_change("a", d, costs)
    assert change is not None
    assert (change.old, change.new) == ("a", "b")
    assert "a (F=2.824) -> b (F=3.1)" in change.message
    assert "LoadStep" in change.message
    assert path_change("b", d, costs) is None
    assert path_change("a", decided("b"), costs) is None


def test_the_status_patch_removes_what_the_controller_no_longer_reports() -> None:
    status = OffloadPolicyStatus(active_path="a", runner_up=None)
    patch = status_patch(status, None)
    assert "runnerUp" in patch
    assert patch["runnerUp"] is None
