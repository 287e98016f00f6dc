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
from braid.devstack import cluster as devcluster
from braid.devstack.operator_process import install_operator_prerequisites, start_operator
from braid.kube.client import Kube
from braid.settings import Settings

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


def _ready_count(kube: Kube, ns: str) -> int:
    n = 0
    for block in kube.list(API_VERSION, "Block", namespace=ns):
        for c in (block.get("status") or {}).get("conditions") or []:
            if c.get("type") == "Ready" and c.get("status") == "True":
                n += 1
    return n


def main(
    blocks: int = typer.Option(1000, help="Blocks to apply."),
    workers: int = typer.Option(8, help="Concurrent clients applying Blocks."),
    timeout: float = typer.Option(600.0, help="Give up after this many seconds."),
    out: Path = typer.Option(ROOT / "results" / "operator.json", help="Result file."),
) -> None:
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
            futures = [
                pool.submit(kube.apply, _block(ns, i), BENCH_FIELD_MANAGER) for i in range(blocks)
            ]
            for f in futures:
                f.result()
                progress.advance(applied)
            applied_seconds = time.monotonic() - t0
            ready = 0
            while ready < blocks and time.monotonic() - t0 < timeout:
                ready = _ready_count(kube, ns)
                progress.update(ready_task, completed=ready)
                if ready < blocks:
                    time.sleep(1.0)
        seconds = time.monotonic() - t0
        stop_sampling.set()
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
