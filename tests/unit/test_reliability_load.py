"""How the load generator sorts a gateway's errors into refused (a prompt, clear answer) and
failed (the client waited out a deadline, or got a reset or a 5xx); lost means failed."""

from __future__ import annotations

import pytest

from braid_dev.reliability.load import FAILED, REFUSED, classify_error
from braid_dev.reliability.report import RequestTally


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
def test_errors_without_a_reason_or_internal_ones_fail(status: str | None, message: str) -> None:
    assert classify_error(status, message)[0] == FAILED


def test_waiting_for_the_gateways_deadline_is_a_failure_not_a_refusal() -> None:
    kind, detail = classify_error(
        "StatusCode.DEADLINE_EXCEEDED",
        "deadline: the client's deadline of 10000.0 ms passed",
        waited_s=10.0,
        deadline_s=10.0,
    )
    assert kind == FAILED
    assert "deadline" in detail


def test_a_refusal_that_comes_only_after_most_of_the_deadline_is_a_failure() -> None:
    message = "upstream_unavailable: toy.b0 at 127.0.0.1:1: down"
    assert classify_error("StatusCode.UNAVAILABLE", message, 0.01, 10.0)[0] == REFUSED
    kind, detail = classify_error("StatusCode.UNAVAILABLE", message, 9.0, 10.0)
    assert (kind, detail) == (FAILED, "slow_refusal: upstream_unavailable")


def test_a_tally_counts_served_refused_and_failed_apart_and_lost_is_failed() -> None:
    tally = RequestTally(scenario="s", sent=10, served=6, refused=3, failed=1)
    assert tally.lost == 1
    assert tally.unaccounted == 0
    # A request sent and never recorded is lost too.
    assert RequestTally(scenario="s", sent=10, served=6, refused=3, failed=0).lost == 1
