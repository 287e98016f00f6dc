"""Small helpers shared by the e2e tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import pytest

T = TypeVar("T")


def wait_for(
    probe: Callable[[], T | None], what: str, timeout: float = 90.0, interval: float = 0.5
) -> T:
    """Poll ``probe`` until it returns something truthy; fail naming ``what`` on timeout.

    Controllers act asynchronously (scheduler, kwok, RBAC caches), so tests wait for the
    state a user would eventually see instead of sleeping a fixed time.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)
