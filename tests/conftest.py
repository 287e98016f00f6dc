"""Tier markers follow the folder a test lives in, so `-m unit|integration|e2e` selects tiers."""

from __future__ import annotations

from pathlib import Path

import pytest

# First, before any test module imports tritonclient (and so grpc): the gateways the tests
# start in this process then run on the grpc transport the gateway ships with (see
# braid.dataplane's docstring), not on grpc's default.
import braid.dataplane  # noqa: F401

_TIERS = ("unit", "integration", "e2e")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).parts
        for tier in _TIERS:
            if tier in parts:
                item.add_marker(getattr(pytest.mark, tier))
