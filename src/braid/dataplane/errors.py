"""Every way a request can fail, and what each protocol answers: the one place that maps them.

The executor and the codecs raise ``InferenceError`` with a ``Reason``; the REST and gRPC
front ends only look the reason up here. Keeping the table in one place is what keeps the two
protocols in agreement (a bad shape is HTTP 400 *and* gRPC INVALID_ARGUMENT), and the reason
doubles as the ``reason`` label of the error counter, so dashboards and clients use the same
words.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import grpc


class Reason(enum.StrEnum):
    """Why a request failed; the value is the metric label and appears in the message."""

    BAD_REQUEST = "bad_request"
    """Malformed body or header, wrong input name, shape, datatype or byte size."""
    TRUNCATED = "truncated"
    """Binary tensor data shorter (or longer) than the JSON header announces."""
    TOO_LARGE = "too_large"
    """Body over the configured limit."""
    SLOW_BODY = "slow_body"
    """The client did not finish sending its body in time (a stalled or trickled upload)."""
    UNKNOWN_MODEL = "unknown_model"
    UNKNOWN_PATH = "unknown_path"
    UNSUPPORTED = "unsupported"
    """A protocol feature the gateway does not offer (e.g. a compression it cannot read)."""
    NOT_READY = "not_ready"
    """The local Triton server needed for the model does not answer."""
    DEADLINE = "deadline"
    """The client's deadline passed before the path finished."""
    UPSTREAM_UNAVAILABLE = "upstream_unavailable"
    """A hop's server is down and no fallback could serve the request."""
    UPSTREAM_ERROR = "upstream_error"
    """A hop's server answered with an error (a bug: inputs were validated before)."""
    CANCELLED = "cancelled"
    INTERNAL = "internal"


@dataclass(frozen=True)
class _Status:
    http: int
    grpc: grpc.StatusCode


# Client mistakes are 4xx / INVALID_ARGUMENT-like so retries do not hammer the gateway with
# the same bad request; only failures of the servers behind it are 5xx.
_STATUS: dict[Reason, _Status] = {
    Reason.BAD_REQUEST: _Status(400, grpc.StatusCode.INVALID_ARGUMENT),
    Reason.TRUNCATED: _Status(400, grpc.StatusCode.INVALID_ARGUMENT),
    Reason.TOO_LARGE: _Status(413, grpc.StatusCode.RESOURCE_EXHAUSTED),
    Reason.SLOW_BODY: _Status(408, grpc.StatusCode.DEADLINE_EXCEEDED),
    Reason.UNKNOWN_MODEL: _Status(404, grpc.StatusCode.NOT_FOUND),
    Reason.UNKNOWN_PATH: _Status(400, grpc.StatusCode.INVALID_ARGUMENT),
    Reason.UNSUPPORTED: _Status(415, grpc.StatusCode.UNIMPLEMENTED),
    Reason.NOT_READY: _Status(503, grpc.StatusCode.UNAVAILABLE),
    Reason.DEADLINE: _Status(504, grpc.StatusCode.DEADLINE_EXCEEDED),
    Reason.UPSTREAM_UNAVAILABLE: _Status(503, grpc.StatusCode.UNAVAILABLE),
    Reason.UPSTREAM_ERROR: _Status(502, grpc.StatusCode.INTERNAL),
    Reason.CANCELLED: _Status(499, grpc.StatusCode.CANCELLED),
    Reason.INTERNAL: _Status(500, grpc.StatusCode.INTERNAL),
}


class InferenceError(Exception):
    """A request failed for ``reason``; ``message`` is safe to show the client."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message

    @property
    def http_status(self) -> int:
        return http_status(self.reason)

    @property
    def grpc_code(self) -> grpc.StatusCode:
        return grpc_code(self.reason)

    def __str__(self) -> str:
        return f"{self.reason.value}: {self.message}"


def http_status(reason: Reason) -> int:
    """The HTTP status a REST client receives for ``reason``."""
    return _STATUS[reason].http


def grpc_code(reason: Reason) -> grpc.StatusCode:
    """The gRPC status code a gRPC client receives for ``reason``."""
    return _STATUS[reason].grpc


def bad_request(message: str) -> InferenceError:
    return InferenceError(Reason.BAD_REQUEST, message)
