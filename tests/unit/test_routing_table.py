"""The routing table: parsing, checks, the weighted choice and the file watcher."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from braid.api.common import ObjectRef
from braid.api.routing import (
    Endpoints,
    ExitRule,
    PathWeight,
    RoutingTable,
    routing_table_from_policy,
    single_path_table,
)
from braid.api.v1alpha1.offloadpolicy import (
    ActivePath,
    ExitThreshold,
    OffloadPolicySpec,
    OffloadPolicyStatus,
)
from braid.dataplane.routing import (
    RoutingTableError,
    RoutingTableWatcher,
    WeightedChoice,
    parse_routing_table,
    write_routing_table,
)


def table(**weights: float) -> RoutingTable:
    return RoutingTable(model="m", paths=[PathWeight(id=k, weight=v) for k, v in weights.items()])


def test_pick_gives_each_path_its_share_of_the_unit_interval() -> None:
    choice = WeightedChoice.of(table(a=1, b=3))
    # u in [0, 0.25) -> a, [0.25, 1) -> b: 1000 evenly spaced u give exactly 250 / 750.
    picks = [choice.pick(i / 1000) for i in range(1000)]
    assert picks.count("a") == 250
    assert picks.count("b") == 750
    assert choice.shares() == {"a": 0.25, "b": 0.75}


def test_zero_weight_paths_never_take_traffic() -> None:
    choice = WeightedChoice.of(table(a=0, b=2, c=0))
    assert {choice.pick(i / 100) for i in range(100)} == {"b"}
    assert choice.pick(0.999999) == "b"


def test_pick_refuses_u_outside_unit_interval() -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        WeightedChoice.of(table(a=1)).pick(1.0)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"model": "m", "paths": []}, "paths"),
        ({"model": "m", "paths": [{"id": "a", "weight": 0}]}, "sum to 0"),
        ({"model": "m", "paths": [{"id": "a", "weight": -1}]}, "weight"),
        ({"model": "m", "paths": [{"id": "a", "weight": 1}, {"id": "a", "weight": 1}]}, "twice"),
        ({"model": "m", "paths": [{"id": "a", "weight": 1}], "extra": 1}, "extra"),
        (
            {
                "model": "m",
                "paths": [{"id": "a", "weight": 1}],
                "exits": [{"block": 1, "confidence": 1.5}],
            },
            "confidence",
        ),
        ({"model": "m", "paths": [{"id": "a", "weight": 1}], "schema_version": 2}, "schema"),
    ],
)
def test_invalid_tables_are_refused_with_the_field(
    document: dict[str, object], message: str
) -> None:
    with pytest.raises(RoutingTableError, match=message):
        parse_routing_table(json.dumps(document))


def test_unknown_paths_are_refused_when_the_catalog_is_known() -> None:
    text = json.dumps({"model": "m", "paths": [{"id": "a", "weight": 1}], "fallback_path": "z"})
    assert parse_routing_table(text).paths[0].id == "a"
    with pytest.raises(RoutingTableError, match=r"\['z'\]"):
        parse_routing_table(text, known_paths=["a", "b"])


def test_threshold_lookup_by_block() -> None:
    t = RoutingTable(
        model="m",
        paths=[PathWeight(id="a", weight=1)],
        exits=[ExitRule(block=1, confidence=0.8)],
    )
    assert t.threshold(1) == 0.8
    assert t.threshold(2) is None


def test_table_from_policy_takes_weights_thresholds_and_bound() -> None:
    spec = OffloadPolicySpec(
        model_ref=ObjectRef(name="m"),
        latency_bound_microseconds=5000,
        all_paths=True,
        early_exits=[ExitThreshold(block=2, confidence=0.9)],
    )
    status = OffloadPolicyStatus(
        active_paths=[ActivePath(id="m/skip", weight=0.7), ActivePath(id="m/original", weight=0.3)]
    )
    t = routing_table_from_policy(spec, status, model="m", original_path="m/original", generation=4)
    assert [(p.id, p.weight) for p in t.paths] == [("m/skip", 0.7), ("m/original", 0.3)]
    assert t.threshold(2) == 0.9
    assert t.latency_bound_us == 5000
    assert t.fallback_path == "m/original"
    assert t.generation == 4
    # No decision yet: everything on the original path.
    assert routing_table_from_policy(spec, None, model="m", original_path="m/original").paths == [
        PathWeight(id="m/original", weight=1)
    ]


def test_endpoints_prefer_a_model_override() -> None:
    e = Endpoints(servers={"local": "l:1", "host": "h:1"}, models={"x": "x:9"})
    assert e.address("x", "host") == "x:9"
    assert e.address("y", "host") == "h:1"
    assert e.address("y", "edge") is None


def test_watcher_applies_new_tables_and_keeps_the_last_good_one(tmp_path: Path) -> None:
    path = tmp_path / "routing.json"
    seen: list[RoutingTable] = []
    watcher = RoutingTableWatcher(path, seen.append, known_paths=["a", "b"])
    assert not watcher.check()  # no file yet
    write_routing_table(single_path_table("m", "a"), path)
    assert watcher.check()
    assert not watcher.check()  # unchanged
    path.write_text("{not json")
    assert not watcher.check()
    assert watcher.rejected == 1
    write_routing_table(table(a=1, b=1), path)
    assert watcher.check()
    assert [len(t.paths) for t in seen] == [1, 2]


def test_watcher_follows_a_configmap_style_symlink_swap(tmp_path: Path) -> None:
    """Kubelet updates a ConfigMap volume by pointing ``..data`` at a new directory."""
    seen: list[RoutingTable] = []
    for name, t in (("v1", single_path_table("m", "a")), ("v2", table(a=1, b=1))):
        write_routing_table(t, tmp_path / name / "routing.json")
    data = tmp_path / "..data"
    data.symlink_to(tmp_path / "v1")
    (tmp_path / "routing.json").symlink_to(data / "routing.json")
    watcher = RoutingTableWatcher(tmp_path / "routing.json", seen.append)
    assert watcher.check()
    tmp_link = tmp_path / "..data_tmp"
    tmp_link.symlink_to(tmp_path / "v2")
    os.replace(tmp_link, data)
    assert watcher.check()
    assert [len(t.paths) for t in seen] == [1, 2]
