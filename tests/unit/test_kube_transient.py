"""Which API server answers a poller asks again after, and which it reports."""

from __future__ import annotations

import pytest
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic.exceptions import NotFoundError, ServerTimeoutError

from braid.kube.client import transient


@pytest.mark.parametrize(
    ("status", "expected"),
    [(504, True), (503, True), (500, True), (429, True), (404, False), (422, False), (403, False)],
)
def test_overload_and_timeouts_are_transient_verdicts_are_not(status: int, expected: bool) -> None:
    assert transient(ApiException(status=status, reason="x")) is expected


def test_the_dynamic_clients_errors_carry_their_status() -> None:
    timeout = ServerTimeoutError(ApiException(status=504, reason="Gateway Timeout"))  # type: ignore[no-untyped-call]
    missing = NotFoundError(ApiException(status=404, reason="Not Found"))  # type: ignore[no-untyped-call]
    assert transient(timeout)
    assert not transient(missing)
    assert not transient(ValueError("504"))
