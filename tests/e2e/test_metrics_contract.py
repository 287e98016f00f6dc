"""The metrics contract on a real cluster: a stock Prometheus (Kubernetes service discovery,
the chart's relabeling) finds a Triton-labelled pod running in a container on the real node,
scrapes its pod IP, and the path controller's own queries select it by the labels the
relabeling gives it."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from braid.controller.metrics import MetricQueries
from braid.dataplane.promql import PrometheusClient
from braid.render.prometheus_config import METRICS_PORT_NAME, render_triton_pod_scrape_job
from braid_dev.stack import images
from braid_dev.stack import node_render as nr
from braid_dev.stack.ports import free_port
from braid_dev.stack.processes import start_process, wait_until
from tests.e2e.conftest import E2ECluster
from tests.e2e.helpers import wait_for

pytestmark = pytest.mark.e2e

MODEL, BLOCK = "fmnist-cnn", "fmnist-b0"
# What Triton's metrics port says of one model: enough for the controller's queries.
METRICS = 'nv_inference_count{model="fmnist-cnn.b0",version="1"} 7\n'


def _triton_like_pod() -> dict[str, Any]:
    key, value = nr.REAL_NODE_LABEL
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "triton-fmnist-b0",
            # The labels the operator puts on a Block's pods (braid.render.block.block_labels).
            "labels": {
                "app.kubernetes.io/name": "triton",
                "app.kubernetes.io/part-of": "braid",
                "braid.dev/model": MODEL,
                "braid.dev/block": BLOCK,
                "braid.dev/tier": "local",
            },
        },
        "spec": {
            "nodeSelector": {key: value},
            "tolerations": [{"key": key, "operator": "Exists", "effect": "NoSchedule"}],
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "metrics",
                    "image": images.busybox_recipe().reference,
                    "imagePullPolicy": "Never",
                    "command": [
                        "sh",
                        "-c",
                        f"mkdir -p /www && printf '{METRICS}' > /www/metrics && "
                        "exec httpd -f -p 8002 -h /www",
                    ],
                    "ports": [{"name": METRICS_PORT_NAME, "containerPort": 8002}],
                    "readinessProbe": {
                        "httpGet": {"path": "/metrics", "port": 8002},
                        "periodSeconds": 1,
                    },
                }
            ],
        },
    }


def test_a_stock_prometheus_finds_the_pod_and_the_controller_selects_it(
    cluster: E2ECluster, namespace: str, tmp_path: Path
) -> None:
    binary = cluster.settings.bin_dir / "prometheus-sd"
    if not binary.exists():
        pytest.fail(f"{binary} is missing: `make install-binaries` builds it", pytrace=False)
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(_triton_like_pod()))
    wait_for(
        lambda: (
            "True"
            in cluster.kubectl(
                "get",
                "pod",
                "triton-fmnist-b0",
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
    job = render_triton_pod_scrape_job(
        scrape_interval="1s",
        namespaces=[namespace],
        kubeconfig_file=str(cluster.access.kubeconfig),
    )
    # busybox httpd stands in for Triton's metrics port but sends no Content-Type (Triton
    # sends text/plain); Prometheus 3 then needs to be told the format.
    job["fallback_scrape_protocol"] = "PrometheusText0.0.4"
    config = tmp_path / "prometheus.yml"
    config.write_text(
        yaml.safe_dump({"global": {"scrape_interval": "1s"}, "scrape_configs": [job]})
    )
    port = free_port()
    prometheus = start_process(
        "prometheus-sd",
        [
            str(binary),
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        tmp_path / "prometheus.log",
    )
    url = f"http://127.0.0.1:{port}"
    try:

        def target() -> dict[str, Any] | None:
            active = httpx.get(f"{url}/api/v1/targets", timeout=2).json()["data"]["activeTargets"]
            up = [t for t in active if t["health"] == "up"]
            return up[0] if up else None

        wait_until(
            lambda: target() is not None, "the pod's target up", timeout=90, process=prometheus
        )
        found = target()
        assert found is not None
        labels = found["labels"]
        assert labels["braid_model"] == MODEL
        assert labels["braid_block"] == BLOCK
        assert labels["namespace"] == namespace
        assert labels["pool_tier"] == "local"
        pod_ip = cluster.kubectl(
            "get", "pod", "triton-fmnist-b0", "-n", namespace, "-o", "jsonpath={.status.podIP}"
        )
        assert found["scrapeUrl"] == f"http://{pod_ip}:8002/metrics"
        # The controller's own queries, with the selector a cluster-mode controller builds.
        queries = MetricQueries(
            model=MODEL,
            window="4s",
            roles={"local": f'braid_model=~"{MODEL}",namespace=~"{namespace}"'},
        )
        with PrometheusClient(url) as client:
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
