from __future__ import annotations

from braid.render.conditions import condition_status, set_condition


def test_transition_time_moves_only_when_status_flips() -> None:
    c1 = set_condition([], "Ready", False, "Pending", "waiting", now="t1", generation=1)
    c2 = set_condition(c1, "Ready", False, "Pending", "still waiting", now="t2", generation=2)
    assert c2[0]["lastTransitionTime"] == "t1"
    assert c2[0]["message"] == "still waiting"
    assert c2[0]["observedGeneration"] == 2
    c3 = set_condition(c2, "Ready", True, "Available", "ok", now="t3")
    assert c3[0]["lastTransitionTime"] == "t3"
    assert condition_status(c3, "Ready") == "True"


def test_other_conditions_are_kept_and_order_is_stable() -> None:
    c = set_condition([], "Ready", True, "A", "", now="t")
    c = set_condition(c, "Degraded", None, "B", "", now="t")
    assert [x["type"] for x in c] == ["Degraded", "Ready"]
    assert condition_status(c, "Degraded") == "Unknown"
    assert condition_status(c, "Missing") is None
