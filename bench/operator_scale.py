"""Operator at scale: 1,000 Blocks applied to the real API server, time until all are Ready.

Starts a fresh local control plane in a state dir of its own (so a developer's cluster is
left alone), runs the operator as its least-privilege ServiceAccount, applies one Model and
N Blocks spread over the three pools, and polls until every Block reports Ready=True (its
Triton Deployment's pods scheduled by the real scheduler and made Running by kwok). Writes
``results/operator.json``.

    python bench/operator_scale.py [--blocks 1000] [--workers 8]
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from braid.api.common import API_VERSION
from braid.kube.client import Kube
from braid.settings import Settings
from braid_dev.stack import cluster as devcluster
from braid_dev.stack.operator_process import install_operator_prerequisites, start_operator

ROOT = Path(__file__).resolve().parents[1]
TIERS = ("local", "edge", "cloud")
# The benchmark plays a user: its objects must not share the operator's field manager.
BENCH_FIELD_MANAGER = "braid-bench"
console = Console()


def _model(ns: str) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "Model",
        "metadata": {"name": "scale", "namespace": ns},
        "spec": {
            "artifact": {"uri": "s3://bench/scale.pt"},
            "input": {"name": "x", "datatype": "FP32", "shape": [8]},
            "output": {"name": "y", "datatype": "FP32", "shape": [2]},
            "baselineAccuracy": 0.9,
            "partition": {"blocks": [{"name": "b0", "firstLayer": 0, "lastLayer": 0}]},
        },
    }


def _block(ns: str, i: int) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "Block",
        "metadata": {"name": f"blk-{i:04d}", "namespace": ns},
        "spec": {
            "modelRef": {"name": "scale"},
            "partitions": {"first": 0, "last": 0},
            "tier": TIERS[i % len(TIERS)],
            "replicas": 1,
            # Tiny requests: the benchmark measures the control loop, not bin packing.
            "resources": {"cpu": "1m", "memory": "1Mi", "gpu": 0},
        },
    }


def _ts(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def _is_ready(block: dict[str, Any]) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (block.get("status") or {}).get("conditions") or []
    )


def _ready_count(kube: Kube, ns: str) -> int:
    return sum(1 for b in kube.list(API_VERSION, "Block", namespace=ns) if _is_ready(b))


def _watch_ready(kube: Kube, ns: str, ready: set[str], stop: threading.Event) -> None:
    """Follow the Blocks' watch stream into ``ready``.

    A watch costs the API server one event per change; listing 1,000 Blocks every second,
    as this bench did first, had the API server encode (and the bench decode) about 2 MB a
    second on the same two cores the rollout needs.
    """
    resource = kube.dyn.resources.get(api_version=API_VERSION, kind="Block")
    version = None
    while not stop.is_set():
        try:
            for event in resource.watch(namespace=ns, timeout=60, resource_version=version):
                obj = event["raw_object"]
                version = obj["metadata"]["resourceVersion"]
                if event["type"] != "DELETED" and _is_ready(obj):
                    ready.add(obj["metadata"]["name"])
                else:
                    ready.discard(obj["metadata"]["name"])
                if stop.is_set():
                    return
        except Exception:
            if stop.is_set():
                return  # the cluster went down under the watch at the end of the run
            raise


WRITE_VERBS = ("POST", "PUT", "PATCH", "APPLY", "DELETE")
_REQUEST_LINE = re.compile(r"^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<n>\S+)$")


def api_writes(metrics_text: str) -> dict[str, int]:
    """Writes the API server served, by resource (and subresource), from its /metrics."""
    writes: dict[str, int] = {}
    for line in metrics_text.splitlines():
        m = _REQUEST_LINE.match(line)
        if not m:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m["labels"]))
        if labels.get("verb") not in WRITE_VERBS:
            continue
        key = labels.get("resource", "?") + (
            f"/{labels['subresource']}" if labels.get("subresource") else ""
        )
        writes[key] = writes.get(key, 0) + int(float(m["n"]))
    return dict(sorted(writes.items(), key=lambda kv: -kv[1]))


def main(
    blocks: int = typer.Option(1000, help="Blocks to apply."),
    workers: int = typer.Option(8, help="Concurrent clients applying Blocks."),
    timeout: float = typer.Option(600.0, help="Give up after this many seconds."),
    out: Path = typer.Option(ROOT / "results" / "operator.json", help="Result file."),
) -> None:
    # SIGTERM (an outer `timeout`) would skip the `finally` below and orphan the cluster.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    state = Path(tempfile.mkdtemp(prefix="braid-scale-"))
    settings = Settings(state_dir=state)
    console.print(f"[bold]operator scale[/]: {blocks} Blocks, fresh cluster in {state}")
    devcluster.up(settings)
    access = devcluster.access(settings)
    operator = None
    peak_rss = 0
    stop_sampling = threading.Event()
    try:
        install_operator_prerequisites(access)
        operator = start_operator(access, state / "operator")
        pid = operator.pid

        def sample_rss() -> None:
            nonlocal peak_rss
            while not stop_sampling.is_set():
                peak_rss = max(peak_rss, devcluster.rss_bytes(pid) or 0)
                time.sleep(0.2)

        sampler = threading.Thread(target=sample_rss, daemon=True)
        sampler.start()
        kube = Kube.from_kubeconfig(access.kubeconfig)
        ns = "scale"
        access.kubectl("create", "namespace", ns)
        kube.apply(_model(ns), BENCH_FIELD_MANAGER)
        rss_idle = devcluster.rss_bytes(pid) or 0

        t0 = time.monotonic()
        with (
            Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console,
            ) as progress,
            ThreadPoolExecutor(max_workers=workers) as pool,
        ):
            applied = progress.add_task("applied", total=blocks)
            ready_task = progress.add_task("ready  ", total=blocks)
            ready_names: set[str] = set()
            watcher = threading.Thread(
                target=_watch_ready, args=(kube, ns, ready_names, stop_sampling), daemon=True
            )
            watcher.start()
            futures = [
                pool.submit(kube.apply, _block(ns, i), BENCH_FIELD_MANAGER) for i in range(blocks)
            ]
            for f in futures:
                f.result()
                progress.advance(applied)
            applied_seconds = time.monotonic() - t0
            ready = 0
            while ready < blocks and time.monotonic() - t0 < timeout:
                ready = len(ready_names)
                progress.update(ready_task, completed=ready)
                if ready < blocks:
                    time.sleep(0.2)
        seconds = time.monotonic() - t0
        stop_sampling.set()
        # The watch said so; one list confirms it from the API server's own state.
        ready = _ready_count(kube, ns) if ready == blocks else ready
        # Where the time went, by the API server's own clock: Blocks created, Deployments
        # rendered by the operator, pods bound by the scheduler.
        stamps = {
            "blocks_created": [
                b["metadata"]["creationTimestamp"]
                for b in kube.list(API_VERSION, "Block", namespace=ns)
            ],
            "deployments_created": [
                d["metadata"]["creationTimestamp"]
                for d in kube.list("apps/v1", "Deployment", namespace=ns)
            ],
            "pods_created": [
                p["metadata"]["creationTimestamp"] for p in kube.list("v1", "Pod", namespace=ns)
            ],
        }
        first = min(_ts(t) for t in stamps["blocks_created"])
        phases = {
            f"last_{k}_s": round(max(_ts(t) for t in v) - first, 1) for k, v in stamps.items() if v
        }
        writes = api_writes(access.kubectl("get", "--raw", "/metrics").stdout)
        result = {
            "blocks": blocks,
            "ready_blocks": ready,
            "all_ready": ready == blocks,
            "seconds_to_all_ready": round(seconds, 2) if ready == blocks else None,
            "seconds_to_apply": round(applied_seconds, 2),
            "operator_rss_mb": round(peak_rss / 2**20, 1),
            "phases_since_first_block": phases,
            "operator_rss_idle_mb": round(rss_idle / 2**20, 1),
            "apply_workers": workers,
            # Every write the API server served during the run (all clients), by resource:
            # on two shared cores the API server is where the time goes.
            "api_writes_by_resource": writes,
            "targets": {"seconds_to_all_ready": 60, "operator_rss_mb": 200},
            "machine": {"cpus": os.cpu_count()},
            "note": "fresh local control plane (etcd, kube-apiserver, controller-manager, "
            "scheduler, kwok); the operator runs as its ServiceAccount",
        }
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        console.print_json(json.dumps(result))
    finally:
        stop_sampling.set()
        if operator is not None:
            operator.stop()
        devcluster.down(settings)


if __name__ == "__main__":
    typer.run(main)
