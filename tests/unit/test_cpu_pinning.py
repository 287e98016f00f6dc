"""Choosing the CPU ``braid gateway --pin-cpu`` pins to."""

from __future__ import annotations

import pytest

from braid.dataplane.cpu_pinning import choose_cpu


@pytest.mark.parametrize(
    ("spec", "allowed", "cpu"),
    [("auto", {3, 1, 2}, 1), ("2", {0, 1, 2, 3}, 2), ("0", {0}, 0)],
)
def test_a_cpu_of_the_allowed_set_is_chosen(spec: str, allowed: set[int], cpu: int) -> None:
    assert choose_cpu(spec, allowed) == cpu


@pytest.mark.parametrize(
    ("spec", "allowed", "named"),
    [
        ("4", {0, 1, 2, 3}, "0-3"),  # outside the pod's cpuset
        ("1", {0, 2, 3, 7}, "0,2-3,7"),
        ("first", {0, 1}, "0-1"),
        ("-1", {0, 1}, "0-1"),
    ],
)
def test_a_cpu_outside_the_allowed_set_is_refused_naming_the_set(
    spec: str, allowed: set[int], named: str
) -> None:
    with pytest.raises(ValueError, match=f"--pin-cpu.*'auto' or one of .*: {named}$"):
        choose_cpu(spec, allowed)
