"""How the load generator sorts a gateway's errors into refused (a clear answer) and lost."""

from __future__ import annotations

import pytest

from braid_dev.reliability.load import LOST, REFUSED, classify_error


@pytest.mark.parametrize(
    ("status", "message", "kind", "detail"),
    [
        (
            "StatusCode.UNAVAILABLE",
            "upstream_unavailable: toy.b0 at 127.0.0.1:1: down",
            REFUSED,
            "upstream_unavailable",
        ),
        (
            "StatusCode.UNAVAILABLE",
            "not_ready: the local server does not answer",
            REFUSED,
            "not_ready",
        ),
        (
            "StatusCode.INVALID_ARGUMENT",
            "bad_request: shape [2] is not [1, 8, 8]",
            REFUSED,
            "bad_request",
        ),
        (
            "StatusCode.DEADLINE_EXCEEDED",
            "deadline: the client's deadline of 10.0 ms passed",
            REFUSED,
            "deadline",
        ),
    ],
)
def test_errors_naming_their_reason_are_refusals(
    status: str, message: str, kind: str, detail: str
) -> None:
    assert classify_error(status, message) == (kind, detail)


@pytest.mark.parametrize(
    ("status", "message"),
    [
        ("StatusCode.DEADLINE_EXCEEDED", "Deadline Exceeded"),  # the client gave up: no answer
        ("StatusCode.UNAVAILABLE", "Socket closed"),  # a reset
        ("StatusCode.UNAVAILABLE", "failed to connect to all addresses"),
        ("StatusCode.INTERNAL", "internal: the sample router returned 3 paths for 2 samples"),
        ("StatusCode.INTERNAL", "upstream_error: toy.b1: INTERNAL: boom"),  # a 5xx
        (None, ""),
    ],
)
def test_errors_without_a_reason_or_internal_ones_are_lost(
    status: str | None, message: str
) -> None:
    assert classify_error(status, message)[0] == LOST
