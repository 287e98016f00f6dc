"""PromQL instant queries over Prometheus' HTTP API, for the path controller and the tests.

The path controller turns Triton's metrics (queue and compute time, request rates) into the
load terms of the cost function; it only ever needs "the value of this expression now", so
this is a small instant-query client rather than a general API wrapper. Parsing is a pure
function so the error cases are unit-tested without a server. A synchronous client serves
scripts and tests, an asynchronous one the controller loop; both reuse one connection pool.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import httpx


class PrometheusQueryError(RuntimeError):
    """Prometheus refused the query or answered something that is not an instant vector."""


@dataclass(frozen=True)
class PromSample:
    """One series of an instant-query result: its labels, its value, when it was taken."""

    labels: Mapping[str, str] = field(default_factory=dict)
    value: float = math.nan
    timestamp: float = 0.0


def parse_query_response(payload: Mapping[str, Any]) -> list[PromSample]:
    """The samples of an ``/api/v1/query`` answer (a vector, or a scalar as one sample).

    Prometheus answers HTTP 200 with ``status: error`` for some failures and 4xx with the
    same body for others; both become ``PrometheusQueryError`` with its message.
    """
    if payload.get("status") != "success":
        kind = payload.get("errorType", "unknown")
        raise PrometheusQueryError(f"prometheus query failed ({kind}): {payload.get('error')}")
    data = payload.get("data") or {}
    result_type = data.get("resultType")
    result = data.get("result")
    if result_type == "vector":
        return [
            PromSample(
                labels=dict(item.get("metric", {})),
                value=float(item["value"][1]),
                timestamp=float(item["value"][0]),
            )
            for item in result or []
        ]
    if result_type == "scalar" and isinstance(result, list):
        return [PromSample(labels={}, value=float(result[1]), timestamp=float(result[0]))]
    raise PrometheusQueryError(
        f"expected an instant vector or scalar, got {result_type!r} (a range selector needs a "
        "function such as rate() around it)"
    )


def single_value(samples: list[PromSample]) -> float | None:
    """The value of a one-series result, ``None`` when the series does not exist (yet)."""
    if not samples:
        return None
    if len(samples) > 1:
        labels = [dict(s.labels) for s in samples]
        raise PrometheusQueryError(f"expected one series, got {len(samples)}: {labels}")
    return samples[0].value


def _params(promql: str, at: float | None) -> dict[str, str]:
    params = {"query": promql}
    if at is not None:
        params["time"] = f"{at:.3f}"
    return params


def _decode(response: httpx.Response) -> list[PromSample]:
    try:
        payload = response.json()
    except ValueError:
        response.raise_for_status()
        raise PrometheusQueryError(f"non-JSON answer: {response.text[:200]}") from None
    return parse_query_response(payload)


class PrometheusClient:
    """Synchronous instant queries against one Prometheus (``http://host:port``)."""

    def __init__(self, base_url: str, timeout: float = 5.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._client = httpx.Client(base_url=self.base_url, timeout=timeout)

    def query(self, promql: str, at: float | None = None) -> list[PromSample]:
        """Evaluate ``promql`` now (or at unix time ``at``)."""
        return _decode(self._client.get("/api/v1/query", params=_params(promql, at)))

    def query_value(self, promql: str, at: float | None = None) -> float | None:
        """The value of a query expected to yield at most one series."""
        return single_value(self.query(promql, at))

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> PrometheusClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncPrometheusClient:
    """The asynchronous twin of ``PrometheusClient``, for event-loop code."""

    def __init__(self, base_url: str, timeout: float = 5.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._client = httpx.AsyncClient(base_url=self.base_url, timeout=timeout)

    async def query(self, promql: str, at: float | None = None) -> list[PromSample]:
        """Evaluate ``promql`` now (or at unix time ``at``)."""
        return _decode(await self._client.get("/api/v1/query", params=_params(promql, at)))

    async def query_value(self, promql: str, at: float | None = None) -> float | None:
        """The value of a query expected to yield at most one series."""
        return single_value(await self.query(promql, at))

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> AsyncPrometheusClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
