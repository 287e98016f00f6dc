"""The heavy scenario's latency ratio *measured* on the running stack under load, written
into ``results/code.json`` as ``heavy.measured_latency_ratio`` beside the build's modelled
``heavy.modelled_latency_ratio``.

The build models the ratio (unloaded per-hop times stretched by the scenario's M/M/1 factor).
This measures it: the full build's repository served by real processes on loopback (one
tritonserver per tier, ``braid gateway``), labelled Fashion-MNIST test images sent through the
gateway open loop at a fixed fraction (``LOAD_FRACTION``, the scenario's local utilisation)
of the original path's capacity (measured closed loop once, before the episodes). One
*episode* holds one path for all traffic (a routing file with that path alone) for a warm-up
and then a measured phase; a *pair* is the heavy scenario's chosen path and the original path
at the same offered rate, in alternating order (heavy path first in even repeats). Per pair:
p50 and p99 of the measured phase, heavy over original; over the repeats a median with a
distribution-free 95 % interval (``braid_dev.benchstats``). The request driver and the
capacity probe are ``bench/load_shift.py``'s. Parameters are fixed in ``Profile`` before the
run; the machine's load is sampled throughout.

    python bench/heavy_latency.py                 # full profile into results/code.json
    python bench/heavy_latency.py --profile smoke --results /tmp/code.json
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console

from braid.api.catalog import PathCatalog
from braid.api.routing import single_path_table
from braid.dataplane.routing import write_routing_table
from braid.dataplane.service import read_catalog
from braid.tooling.data import load_fashion_mnist
from braid.tooling.experiments import with_measured_heavy
from braid_dev.benchstats import (
    LoadSampler,
    alternated,
    machine_facts,
    median_interval,
    now_utc,
    server_metadata,
)
from braid_dev.load_shift_analysis import Episode, summarise_episode
from braid_dev.local_runtime import start_local_runtime
from braid_dev.stack.gateway_process import start_gateway_process
from load_shift import capacity, drive

ROOT = Path(__file__).resolve().parent.parent
console = Console()
SETTLE_S = 2.0
"""After writing a routing file: the gateway reloads it before the episode's first request."""
LOAD_FRACTION = 0.9
"""Offered rate / the original path's capacity: the heavy scenario's local utilisation."""


@dataclass(frozen=True)
class Profile:
    """Every parameter of a run, fixed before it starts."""

    repeats: int
    warmup_s: float
    measure_s: float
    capacity_s: float
    samples_per_request: int
    """Test images per request, as in ``bench/load_shift.py`` (small batches put the load on
    the local model's compute rather than on the gateway's per-request work)."""


class ProfileName(StrEnum):
    smoke = "smoke"
    full = "full"


PROFILES = {
    ProfileName.smoke: Profile(
        repeats=2, warmup_s=1.0, measure_s=3.0, capacity_s=3.0, samples_per_request=8
    ),
    # Six pairs: the min..max of six repeats covers the median with probability 0.969 (five
    # reach only 0.9375), so the reported interval is a real 95 % one.
    ProfileName.full: Profile(
        repeats=6, warmup_s=3.0, measure_s=15.0, capacity_s=8.0, samples_per_request=8
    ),
}


def ensure_repository(repository: Path, results: Path) -> Path:
    """The full build's repository (``braid models build``; cached artifacts make it quick)."""
    if not (repository / "catalog.json").is_file():
        console.print(f"exporting the full build into {repository} (braid models build)")
        subprocess.run(
            [sys.executable, "-m", "braid.cli", "models", "build", "--out", str(repository),
             "--results", str(results)],
            check=True,
        )  # fmt: skip
    return repository


def served_catalog(catalog: PathCatalog, heavy_path: str) -> PathCatalog:
    """Only the two compared paths (fewer models for Triton to load)."""
    keep = [p for p in catalog.paths if p.id in (catalog.original_path, heavy_path)]
    return catalog.model_copy(update={"paths": keep})


def run_pairs(
    catalog: PathCatalog,
    heavy_path: str,
    gateway_address: str,
    routing: Path,
    data: tuple[Any, Any],
    fixed: Profile,
) -> tuple[list[tuple[dict[str, Any], dict[str, Any]]], float, float]:
    """Capacity of the original path, then ``repeats`` pairs at the fixed fraction of it."""
    original = catalog.original_path

    def hold(path: str) -> None:
        write_routing_table(single_path_table(catalog.local_model, path), routing)
        time.sleep(SETTLE_S)

    hold(original)
    capacity_rps = asyncio.run(
        capacity(
            gateway_address, catalog.local_model, data[0], fixed.samples_per_request,
            fixed.capacity_s,
        )
    )  # fmt: skip
    offered_rps = round(LOAD_FRACTION * capacity_rps, 1)
    console.print(f"original capacity {capacity_rps:.1f} req/s; offering {offered_rps} req/s")
    pairs = []
    for repeat in range(fixed.repeats):
        rows: dict[str, dict[str, Any]] = {}
        for path in alternated(heavy_path, original, repeat):
            hold(path)
            episode = Episode("heavy", path, LOAD_FRACTION, repeat)
            asyncio.run(
                drive(
                    gateway_address,
                    catalog.local_model,
                    data,
                    [
                        ("warmup", fixed.warmup_s, offered_rps),
                        ("heavy", fixed.measure_s, offered_rps),
                    ],
                    lambda _phase: None,
                    episode,
                    fixed.samples_per_request,
                )
            )
            rows[path] = summarise_episode(episode)
            row = rows[path]
            console.print(
                f"repeat {repeat + 1} {path:<40} p50 {row['heavy_p50_ms']} ms "
                f"p99 {row['heavy_p99_ms']} ms served by {row['heavy_served_by']}"
            )
        pairs.append((rows[heavy_path], rows[original]))
    return pairs, capacity_rps, offered_rps


def summarise(pairs: list[tuple[dict[str, Any], dict[str, Any]]]) -> dict[str, Any]:
    """Ratios per pair (heavy path / original), then median and interval over the pairs."""

    def over(values: list[float]) -> dict[str, Any]:
        return median_interval(values).as_dict()

    return {
        "p50_ratio": over([h["heavy_p50_ms"] / o["heavy_p50_ms"] for h, o in pairs]),
        "p99_ratio": over([h["heavy_p99_ms"] / o["heavy_p99_ms"] for h, o in pairs]),
        "heavy_path_p50_ms": over([h["heavy_p50_ms"] for h, _ in pairs]),
        "original_p50_ms": over([o["heavy_p50_ms"] for _, o in pairs]),
        "heavy_path_p99_ms": over([h["heavy_p99_ms"] for h, _ in pairs]),
        "original_p99_ms": over([o["heavy_p99_ms"] for _, o in pairs]),
        "served_accuracy_drop_pt": over(
            [100 * (o["heavy_accuracy"] - h["heavy_accuracy"]) for h, o in pairs]
        ),
        "errors": sum(h["errors"] + o["errors"] for h, o in pairs),
        "pairs": [{"heavy_path": h, "original": o} for h, o in pairs],
    }


def main(
    profile: Annotated[ProfileName, typer.Option(help="Fixed parameters.")] = ProfileName.full,
    repository: Annotated[Path, typer.Option(help="The full build's Triton repository.")] = ROOT
    / "model-repo",
    results: Annotated[Path, typer.Option(help="The build's results file to add to.")] = ROOT
    / "results/code.json",
) -> None:
    fixed = PROFILES[profile]
    repository = ensure_repository(repository, results)
    report = json.loads(results.read_text())
    full = read_catalog(repository / "catalog.json")
    if full.build_hash != report["build_hash"]:
        raise typer.BadParameter(
            f"{repository} holds build {full.build_hash}, {results} build {report['build_hash']}:"
            f" export the same build (braid models build --out {repository})"
        )
    heavy_path = str(report["heavy"]["path"])
    catalog = served_catalog(full, heavy_path)
    workdir = Path(tempfile.mkdtemp(prefix="braid-heavy-latency-"))
    catalog_file = workdir / "catalog.json"
    catalog_file.write_text(catalog.model_dump_json())
    routing = workdir / "routing.json"
    write_routing_table(single_path_table(catalog.local_model, catalog.original_path), routing)
    test = load_fashion_mnist().test
    data = (test.images.numpy().astype(np.float32), test.labels.numpy())
    console.print(f"{heavy_path} vs {catalog.original_path}; starting Triton per tier ({workdir})")
    runtime = start_local_runtime(repository, catalog, workdir)
    gateway = None
    sampler = LoadSampler(every_s=10.0)
    try:
        triton = server_metadata(runtime.servers["local"].http_address)
        gateway = start_gateway_process(
            catalog_file, {t: s.grpc_address for t, s in runtime.servers.items()}, routing
        )
        with sampler:
            pairs, capacity_rps, offered_rps = run_pairs(
                catalog, heavy_path, gateway.grpc_address, routing, data, fixed
            )
    finally:
        if gateway is not None:
            gateway.stop()
        runtime.stop()
    machine = machine_facts()
    measured = {
        "what": "p50 latency of the heavy path over the original path, each holding all "
        "traffic through the gateway at the same offered rate (a fixed fraction of the "
        "original's capacity), real tritonserver processes on loopback",
        "date": now_utc(),
        "profile_name": profile.value,
        "profile": asdict(fixed),
        "load_fraction_of_original_capacity": LOAD_FRACTION,
        "original_capacity_rps": round(capacity_rps, 1),
        "offered_rps": offered_rps,
        "order": "each pair alternates: heavy path first in even repeats, original first in odd",
        **summarise(pairs),
        "machine": machine,
        "triton": {k: triton.get(k) for k in ("name", "version")},
        "conditions": {"load": sampler.summary(machine["cpus"])},
        "command": f"python bench/heavy_latency.py --profile {profile.value}",
    }
    # Re-read: another tool may have written the file while this ran.
    report = with_measured_heavy(json.loads(results.read_text()), measured)
    results.write_text(json.dumps(report, indent=2) + "\n")
    heavy = report["heavy"]
    console.print(
        f"measured latency ratio {heavy['measured_latency_ratio']} "
        f"(95 % CI {heavy['measured_latency_ratio_ci95']}), modelled "
        f"{heavy['modelled_latency_ratio']}; targets met: {heavy['targets_met']}"
    )


if __name__ == "__main__":
    typer.run(main)
