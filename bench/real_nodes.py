"""Real nodes of the local stack: what starting them costs and what they hold.

Brings up a cluster of its own (a fresh state dir) with ``BRAID_CLUSTER_REAL_NODES`` real
nodes, runs one pod with a readiness probe on the first, then deploys braid through its chart
onto the real node (``braid_dev.real_deploy``: braid's images, the quick model build fetched
by the Triton pods' init containers) and counts what runs in containers, then tears
everything down and checks that nothing is left. Records the seconds of each start-up stage,
the RSS of each component (control plane, each node's containerd and kubelet, the shims and
containers), braid's images with their sizes, and whether tear-down was clean, in
``results/real_nodes.json``.

    python bench/real_nodes.py
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import typer

from braid.settings import Settings
from braid_dev import real_deploy
from braid_dev.stack import cluster as devcluster
from braid_dev.stack import images, nodes
from braid_dev.stack import node_render as nr
from braid_dev.stack.artifact_servers import start_s3_store

ROOT = Path(__file__).resolve().parent.parent


def _version(argv: list[str]) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30)
    return (
        (result.stdout or result.stderr).strip().splitlines()[0] if result.returncode == 0 else "?"
    )


def _probe_pod() -> dict[str, Any]:
    return nr.real_node_pod(
        "probe",
        images.busybox_recipe().reference,
        "echo ok > /var/www/i; exec httpd -f -p 8080 -h /var/www",
        probe_path="/i",
    )


def _mib(value: int | None) -> float | None:
    return None if value is None else round(value / 2**20, 1)


def _serving(pod: dict[str, Any]) -> bool:
    """In containers on a real node, and Ready."""
    return real_deploy.runs_in_container(pod) and real_deploy.pod_ready(pod)


def _deploy_braid(
    settings: Settings, access: devcluster.ClusterAccess, state: Path
) -> dict[str, Any]:
    """braid through its chart on the real node: what of it runs in containers."""
    from braid.tooling.pipeline import run_pipeline

    access.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
    repository = state / "model-repo"
    run_pipeline("quick", repository)
    store = start_s3_store(
        state / "store", state / "versitygw", settings.bin_dir, host=real_deploy.node_ip(access)
    )
    try:
        with real_deploy.deployed(access, settings, ROOT, state, store, repository) as release:
            real_node = nr.real_node_name(nodes.REAL_TIER, 0)

            def triton_pods() -> list[dict[str, Any]]:
                return [p for ns in release.namespaces for p in release.pods(ns, "braid.dev/block")]

            deadline = time.monotonic() + 300
            triton = triton_pods()
            while time.monotonic() < deadline and not all(
                _serving(p) for p in triton if p["spec"].get("nodeName") == real_node
            ):
                time.sleep(1)
                triton = triton_pods()
            chart = [p for c in real_deploy.CHART_COMPONENTS for p in release.chart_pods(c)]
            rss: dict[str, float | None] = {}
            for node in nodes.node_layouts(devcluster.layout_for(settings).root):
                for role in ("shim", "container"):
                    pids = [p for p, r in nodes.node_processes(node).items() if r == role]
                    total = sum(devcluster.rss_bytes(p) or 0 for p in pids)
                    rss[f"{node.name}-{role}s (braid deployed)"] = _mib(total)
            return {
                "rss_mb": rss,
                "image_sizes_mb": release.images.sizes_mb(),
                "triton_pods_in_containers": sum(_serving(p) for p in triton),
                "triton_pods_fetched_in_containers": sum(
                    real_deploy.fetched_in_container(p) for p in triton
                ),
                "triton_pods_kwok_played": sum(not _serving(p) for p in triton),
                "chart_pods_in_containers": sum(_serving(p) for p in chart),
                "stage_seconds": release.stage_seconds,
            }
    finally:
        store.stop()


def main(
    timeout: float = typer.Option(180.0, help="Seconds the probe pod may take to be Ready."),
    out: Path = typer.Option(ROOT / "results" / "real_nodes.json", help="Result file."),
) -> None:
    state = Path(tempfile.mkdtemp(prefix="braid-bench-nodes-"))
    settings = Settings(state_dir=state)
    layout = devcluster.layout_for(settings)
    interfaces_before = set(nodes.interfaces())
    started = time.monotonic()
    result = devcluster.up(settings)
    up_seconds = time.monotonic() - started
    try:
        access = devcluster.access(settings)
        t = time.monotonic()
        access.kubectl("apply", "-f", "-", input=json.dumps(_probe_pod()))
        ready = False
        while time.monotonic() - t < timeout and not ready:
            pod = access.kubectl_json("get", "pod", "probe")
            conditions = pod.get("status", {}).get("conditions", [])
            ready = any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
            time.sleep(0.25)
        probe_ready_seconds = round(time.monotonic() - t, 3) if ready else None
        in_container = pod["status"]["containerStatuses"][0]["containerID"].startswith(
            "containerd://"
        )
        status = devcluster.status(settings)
        rss = {c.name: _mib(c.rss_bytes) for c in status.components}
        for name in result.state.real_nodes:
            node = nr.NodeLayout(nodes.nodes_root(layout.root) / name)
            for role in ("shim", "container"):
                pids = [p for p, r in nodes.node_processes(node).items() if r == role]
                total = sum(devcluster.rss_bytes(p) or 0 for p in pids)
                rss[f"{name}-{role}s (probe pod)"] = _mib(total)
        braid = _deploy_braid(settings, access, state)
        rss.update(braid["rss_mb"])
    finally:
        t = time.monotonic()
        devcluster.down(settings)
        down_seconds = round(time.monotonic() - t, 3)
    leftovers = {
        "mounts": nodes.mounts_under(layout.root) + nodes.mounts_under(nr.WORK_ROOT),
        "interfaces": sorted(set(nodes.interfaces()) - interfaces_before),
        "node_dirs": [str(p) for p in nodes.node_layouts(layout.root)],
    }
    recipes = [images.pause_recipe(settings.bin_dir / "pause"), images.busybox_recipe()]
    sizes = {
        r.reference: round(images.archive_path(settings.cache, r).stat().st_size / 1e6, 2)
        for r in recipes
    }
    sizes.update(braid["image_sizes_mb"])
    report = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "real_nodes": result.state.real_nodes,
        "images_built": list(sizes),
        "image_sizes_mb": sizes,
        "triton_pods_in_containers": braid["triton_pods_in_containers"],
        "triton_pods_kwok_played": braid["triton_pods_kwok_played"],
        "triton_pods_fetched_in_containers": braid["triton_pods_fetched_in_containers"],
        "chart_pods_in_containers": braid["chart_pods_in_containers"],
        "braid_deploy_stage_seconds": braid["stage_seconds"],
        "probe_pod_in_container": in_container,
        "probe_pod_ready_seconds": probe_ready_seconds,
        "cluster_up_seconds": round(up_seconds, 3),
        "startup_stage_seconds": result.state.phases,
        "down_seconds": down_seconds,
        "rss_mb": rss,
        "teardown_leftovers": leftovers,
        "teardown_clean": not any(leftovers.values()),
        "versions": {
            **result.state.versions,
            "containerd": _version(["containerd", "--version"]),
            "runc": _version(["runc", "--version"]),
        },
        "machine": {
            "cpus": os.cpu_count(),
            "load_avg_1m": round(os.getloadavg()[0], 2),
            "kernel": platform.release(),
        },
    }
    shutil.rmtree(state, ignore_errors=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    typer.echo(json.dumps(report, indent=2))


if __name__ == "__main__":
    typer.run(main)
