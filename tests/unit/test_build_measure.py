"""The figures a build puts in its catalog: a module without a measured time is an error."""

from __future__ import annotations

import pytest

from braid.tooling.measure import MissingTimingError, compute_us


def test_a_measured_time_is_rounded_as_the_catalog_shows_it() -> None:
    assert compute_us({"fmnist-cnn.b0": 41.2371, "fmnist-cnn.b1": 0.0}, "fmnist-cnn.b0") == 41.24
    assert compute_us({"fmnist-cnn.b1": 0.0}, "fmnist-cnn.b1") == 0.0  # measured as free


def test_a_missing_time_raises_instead_of_passing_for_free() -> None:
    with pytest.raises(MissingTimingError, match=r"fmnist-cnn\.b2"):
        compute_us({"fmnist-cnn.b0": 41.2}, "fmnist-cnn.b2")
