"""Logs a person can read: client libraries at WARNING, even when braid's own are at DEBUG."""

from __future__ import annotations

import logging

import pytest

from braid.logs import CLIENT_LIBRARIES, kv, setup_logging

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("level", [logging.INFO, logging.DEBUG])
def test_client_libraries_log_at_warning(level: int) -> None:
    setup_logging(level)
    assert set(CLIENT_LIBRARIES) >= {"httpx", "httpcore", "urllib3", "kubernetes"}
    for name in CLIENT_LIBRARIES:
        assert not logging.getLogger(name).isEnabledFor(logging.INFO), name
        assert logging.getLogger(name).isEnabledFor(logging.WARNING), name


def test_an_event_is_one_line_of_key_value_pairs() -> None:
    line = kv("controller.decision", old="a/original", new="a/exit/3", reason="load step")
    assert line == "controller.decision old=a/original new=a/exit/3 reason='load step'"
    assert "\n" not in line
