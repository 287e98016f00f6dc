"""Real nodes of the local stack: what starting them costs and what they hold.

Brings up a cluster of its own (a fresh state dir) with ``BRAID_CLUSTER_REAL_NODES`` real
nodes, runs one pod with a readiness probe on the first, then tears everything down and
checks that nothing is left. Records the seconds of each start-up stage, the RSS of each
component (control plane, each node's containerd and kubelet, the shims and containers),
the images built with their sizes, and whether tear-down was clean, in
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
from braid_dev.stack import cluster as devcluster
from braid_dev.stack import images, nodes
from braid_dev.stack import node_render as nr

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
                rss[f"{name}-{role}s"] = _mib(total)
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
    report = {
        "real_nodes": result.state.real_nodes,
        "images_built": list(sizes),
        "image_sizes_mb": sizes,
        # What of braid itself runs in containers: nothing yet (its images are not built).
        "triton_pods_in_containers": 0,
        "chart_pods_in_containers": 0,
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
