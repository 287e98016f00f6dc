"""A stock Prometheus with Kubernetes service discovery, and a pod that looks like a Triton
pod to it: what the metrics-contract test and ``bench/real_cluster.py`` run on the real node.

Debian's Prometheus (2.42) is built without ``kubernetes_sd_configs``; ``prometheus-sd`` is
Prometheus 3 built from its Go module with that discovery alone
(``hack/cluster/build-binaries.sh prometheus-sd``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from braid.render.prometheus_config import METRICS_PORT_NAME, render_triton_pod_scrape_job
from braid_dev.stack import images
from braid_dev.stack import node_render as nr
from braid_dev.stack.ports import free_port
from braid_dev.stack.processes import ManagedProcess, start_process, wait_until

MODEL, BLOCK = "fmnist-cnn", "fmnist-b0"
POD_NAME = "triton-fmnist-b0"
# What Triton's metrics port says of one model: enough for the controller's queries.
METRICS = 'nv_inference_count{model="fmnist-cnn.b0",version="1"} 7\n'


def triton_like_pod() -> dict[str, Any]:
    """A pod on the real node with a Block pod's labels and a ``metrics`` port."""
    return nr.real_node_pod(
        POD_NAME,
        images.busybox_recipe().reference,
        f"mkdir -p /www && printf '{METRICS}' > /www/metrics && exec httpd -f -p 8002 -h /www",
        # The labels the operator puts on a Block's pods (braid.render.block.block_labels).
        labels={
            "app.kubernetes.io/name": "triton",
            "app.kubernetes.io/part-of": "braid",
            "braid.dev/model": MODEL,
            "braid.dev/block": BLOCK,
            "braid.dev/tier": "local",
        },
        port=8002,
        port_name=METRICS_PORT_NAME,
        probe_path="/metrics",
    )


@dataclass
class SdPrometheus:
    process: ManagedProcess
    url: str

    def up_targets(self) -> list[dict[str, Any]]:
        active = httpx.get(f"{self.url}/api/v1/targets", timeout=2).json()["data"]["activeTargets"]
        return [t for t in active if t["health"] == "up"]

    def stop(self) -> None:
        self.process.stop()


def start_sd_prometheus(
    binary: Path,
    kubeconfig: Path,
    namespaces: list[str],
    workdir: Path,
    host: str = "127.0.0.1",
    wait_for_target: bool = True,
) -> SdPrometheus:
    """Prometheus scraping braid's Triton pods through the chart's job, every second.

    ``host`` is where it listens: a real node's bridge address when pods (the chart's
    controller) query it. ``wait_for_target`` returns only once a target is up."""
    if not binary.exists():
        raise FileNotFoundError(f"{binary} is missing: `make install-binaries` builds it")
    job = render_triton_pod_scrape_job(
        scrape_interval="1s", namespaces=namespaces, kubeconfig_file=str(kubeconfig)
    )
    # busybox httpd stands in for Triton's metrics port but sends no Content-Type (Triton
    # sends text/plain); Prometheus 3 then needs to be told the format.
    job["fallback_scrape_protocol"] = "PrometheusText0.0.4"
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "prometheus.yml"
    config.write_text(
        yaml.safe_dump({"global": {"scrape_interval": "1s"}, "scrape_configs": [job]})
    )
    port = free_port()
    process = start_process(
        "prometheus-sd",
        [
            str(binary),
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'tsdb'}",
            f"--web.listen-address={host}:{port}",
        ],
        workdir / "prometheus.log",
    )
    prometheus = SdPrometheus(process, f"http://{host}:{port}")
    if not wait_for_target:
        wait_until(
            lambda: httpx.get(f"{prometheus.url}/-/ready", timeout=2).status_code == 200,
            "Prometheus ready",
            timeout=60,
            process=process,
        )
        return prometheus
    wait_until(
        lambda: bool(prometheus.up_targets()),
        "a Triton pod's target up",
        timeout=90,
        process=process,
    )
    return prometheus
