"""The controller's pure pieces: samples -> Metrics, the status patch, the routing-file sink."""

from __future__ import annotations

from pathlib import Path

from braid.api.common import Condition, ObjectRef
from braid.api.routing import RoutingTable
from braid.api.v1alpha1.offloadpolicy import OffloadPolicySpec, OffloadPolicyStatus
from braid.controller.loop import routing_file_sink
from braid.controller.metrics import MetricQueries, metrics_from_samples
from braid.dataplane.promql import PromSample
from braid.kube.policy_status import status_patch
from braid.policy.cost import Network
from braid.policy.decision import Metrics, PolicyState, TierMetrics, choose_paths
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
    routing_file_sink(catalog, spec, out)(decision, decision.to_status())
    table = RoutingTable.model_validate_json(out.read_text())
    assert [p.id for p in table.paths] == [p.id for p in decision.active]
    assert table.fallback_path == catalog.original_path
    assert table.generation == 1
