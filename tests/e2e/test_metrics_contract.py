"""The metrics contract on a real cluster: a stock Prometheus (Kubernetes service discovery,
the chart's relabeling) finds a Triton-labelled pod running in a container on the real node,
scrapes its pod IP, and the path controller's own queries select it by the labels the
relabeling gives it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from braid.controller.metrics import MetricQueries
from braid.dataplane.promql import PrometheusClient
from braid_dev.stack import prometheus_sd as sd
from tests.e2e.conftest import E2ECluster
from tests.e2e.helpers import wait_for

pytestmark = pytest.mark.e2e


def test_a_stock_prometheus_finds_the_pod_and_the_controller_selects_it(
    cluster: E2ECluster, namespace: str, tmp_path: Path
) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(sd.triton_like_pod()))
    wait_for(
        lambda: (
            "True"
            in cluster.kubectl(
                "get",
                "pod",
                sd.POD_NAME,
                "-n",
                namespace,
                "-o",
                "jsonpath={.status.conditions[?(@.type=='Ready')].status}",
                check=False,
            )
        ),
        "the Triton-labelled pod Ready on the real node",
        timeout=120,
    )
    try:
        prometheus = sd.start_sd_prometheus(
            cluster.settings.bin_dir / "prometheus-sd",
            cluster.access.kubeconfig,
            [namespace],
            tmp_path,
        )
    except FileNotFoundError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        (found,) = prometheus.up_targets()
        labels = found["labels"]
        assert labels["braid_model"] == sd.MODEL
        assert labels["braid_block"] == sd.BLOCK
        assert labels["namespace"] == namespace
        assert labels["pool_tier"] == "local"
        pod_ip = cluster.kubectl(
            "get", "pod", sd.POD_NAME, "-n", namespace, "-o", "jsonpath={.status.podIP}"
        )
        assert found["scrapeUrl"] == f"http://{pod_ip}:8002/metrics"
        # The controller's own queries, with the selector a cluster-mode controller builds.
        queries = MetricQueries(
            model=sd.MODEL,
            window="4s",
            roles={"local": f'braid_model=~"{sd.MODEL}",namespace=~"{namespace}"'},
        )
        with PrometheusClient(prometheus.url) as client:
            deadline = time.monotonic() + 30
            while not client.query(queries.inferences_per_s) and time.monotonic() < deadline:
                time.sleep(1)
            (up,) = client.query(queries.tiers_up)
            rates = client.query(queries.inferences_per_s)
        assert up.labels["tier"] == "local"
        assert up.value == 1
        assert {(s.labels["tier"], s.labels["model"]) for s in rates} == {
            ("local", "fmnist-cnn.b0")
        }
    finally:
        prometheus.stop()
