"""A real Prometheus scrapes the real tritonserver, and PromQL sees the inferences we make.

Waits are bounded polls (Prometheus scrapes every second); nothing asserts how long they took.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import httpx
import numpy as np
import pytest
import tritonclient.http as httpclient

from braid.dataplane.promql import AsyncPrometheusClient, PrometheusClient, PrometheusQueryError
from braid_dev.stack.prometheus import PrometheusServer
from braid_dev.stack.triton import TritonServer

from .conftest import LINEAR_MODEL, TRITON_JOB, TRITON_LABELS

T = TypeVar("T")
POLL_TIMEOUT_S = 30.0


def poll(fetch: Callable[[], T], done: Callable[[T], bool], what: str) -> T:
    """Fetch until ``done`` holds or ``POLL_TIMEOUT_S`` passes; returns the last value."""
    deadline = time.monotonic() + POLL_TIMEOUT_S
    while True:
        value = fetch()
        if done(value):
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}; last value {value!r}")
        time.sleep(0.25)


def triton_counter(triton_server: TritonServer, metric: str, model: str) -> float:
    """The counter's current value straight from Triton's metrics endpoint."""
    text = httpx.get(triton_server.metrics_url, timeout=5.0).text
    prefix = f'{metric}{{model="{model}",version="1"}} '
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix) :])
    raise AssertionError(f"{metric} for {model} missing from {triton_server.metrics_url}")


@pytest.fixture(scope="module")
def prom(prometheus_server: PrometheusServer) -> Iterator[PrometheusClient]:
    with PrometheusClient(prometheus_server.url) as client:
        yield client


def infer_linear(triton_server: TritonServer, count: int) -> None:
    client = httpclient.InferenceServerClient(triton_server.http_address)
    try:
        x = np.ones((2, 16), dtype=np.float32)
        infer_input = httpclient.InferInput("INPUT__0", list(x.shape), "FP32")
        infer_input.set_data_from_numpy(x, binary_data=True)
        for _ in range(count):
            client.infer(LINEAR_MODEL, [infer_input])
    finally:
        client.close()


def test_prometheus_scrapes_the_triton_server_with_its_labels(
    prom: PrometheusClient, triton_server: TritonServer
) -> None:
    samples = poll(
        lambda: prom.query(f'up{{job="{TRITON_JOB}"}}'),
        lambda s: len(s) == 1 and s[0].value == 1.0,
        "Prometheus to scrape Triton",
    )
    labels = samples[0].labels
    assert labels["instance"] == triton_server.metrics_address
    for name, value in TRITON_LABELS.items():
        assert labels[name] == value


def test_nv_inference_count_follows_inferences(
    prom: PrometheusClient, triton_server: TritonServer
) -> None:
    infer_linear(triton_server, count=5)
    # nv_inference_count counts samples (2 per request here), not requests.
    at_triton = triton_counter(triton_server, "nv_inference_count", LINEAR_MODEL)
    assert at_triton >= 10
    query = f'nv_inference_count{{job="{TRITON_JOB}",model="{LINEAR_MODEL}"}}'
    value = poll(
        lambda: prom.query_value(query),
        lambda v: v is not None and v >= at_triton,
        f"{query} to reach {at_triton}",
    )
    assert value is not None
    assert value > 0


async def test_async_client_aggregates_across_models(
    prometheus_server: PrometheusServer, triton_server: TritonServer
) -> None:
    """The controller's client: an aggregate over the Triton job yields one number."""
    infer_linear(triton_server, count=1)
    query = f'sum(nv_inference_request_success{{job="{TRITON_JOB}"}})'
    async with AsyncPrometheusClient(prometheus_server.url) as client:
        deadline = time.monotonic() + POLL_TIMEOUT_S
        value = await client.query_value(query)
        while (value is None or value < 1) and time.monotonic() < deadline:
            await asyncio.sleep(0.25)
            value = await client.query_value(query)
    assert value is not None
    assert value >= 1


def test_bad_promql_raises_with_prometheus_message(prom: PrometheusClient) -> None:
    with pytest.raises(PrometheusQueryError, match="parse"):
        prom.query("sum(")
