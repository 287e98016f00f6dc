"""How long one decision round takes for 1,000 providers x 10 candidate paths.

Simulated, not served: each provider's local and host utilisation follows a bounded random
walk with load bursts (M/M/1 stretch of its paths' times, as the controller models them), and
every round decides all 10,000 paths with ``braid.policy.batch.choose_paths_batch`` —
hysteresis and dwell included. The scalar ``choose_paths`` is timed on a sample of providers
for comparison. Target (issue 7): one round <= 10 ms per 10,000 paths.

    python bench/sim_scale.py            # writes results/sim_scale.json
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.progress import Progress

from braid.api.common import ObjectRef
from braid.api.v1alpha1.offloadpolicy import CostCoefficients, OffloadPolicySpec
from braid.policy.batch import BatchState, PathArrays, choose_paths_batch
from braid.policy.decision import Metrics, PolicyState, TierMetrics, choose_paths
from braid_dev import synthetic as syn

ROOT = Path(__file__).resolve().parent.parent
console = Console()


def make_paths(rng: np.random.Generator, providers: int, k: int) -> PathArrays:
    """Column 0 is the original: all local, full accuracy; others trade as CoDE's paths do."""
    shape = (providers, k)
    accuracy = rng.uniform(0.85, 0.92, shape)
    accuracy[:, 0] = 0.92
    t_local = rng.uniform(200, 2000, shape)
    host_share = rng.uniform(0, 0.8, shape)
    host_share[:, 0] = 0.0
    t_host = t_local * host_share
    t_local = t_local * (1 - host_share)
    t_comm = np.where(host_share > 0, rng.uniform(300, 3000, shape), 0.0)
    params_l = rng.uniform(0.01, 0.2, shape)
    params_h = np.where(host_share > 0, rng.uniform(0.01, 0.5, shape), 0.0)
    return PathArrays(
        accuracy=accuracy,
        t_local_us=t_local,
        t_host_us=t_host,
        t_comm_us=t_comm,
        params_local_m=params_l,
        params_host_m=params_h,
        baseline_accuracy=np.full(providers, 0.92),
        latency_bound_us=rng.uniform(5_000, 50_000, providers),
    )


def scalar_round_us(samples: int) -> float:
    """Mean µs per path of the scalar ``choose_paths`` (pydantic catalog, one provider)."""
    modules, shapes = syn._modules()
    catalog = syn.build_catalog(modules, shapes)
    spec = OffloadPolicySpec(
        model_ref=ObjectRef(name="toy"), latency_bound_microseconds=10_000, all_paths=True
    )
    metrics = Metrics(at=0.0, tiers={"local": TierMetrics(0.5), "host": TierMetrics(0.2)})
    start = time.perf_counter()
    for _ in range(samples):
        choose_paths(catalog, metrics, spec, PolicyState())
    return (time.perf_counter() - start) / samples / len(catalog.paths) * 1e6


def main(
    providers: Annotated[int, typer.Option(help="Simulated providers.")] = 1000,
    paths: Annotated[int, typer.Option(help="Candidate paths per provider.")] = 10,
    rounds: Annotated[int, typer.Option(help="Decision rounds timed.")] = 300,
    seed: Annotated[int, typer.Option(help="RNG seed.")] = 7,
    out: Annotated[Path, typer.Option(help="Results file.")] = ROOT / "results/sim_scale.json",
) -> None:
    rng = np.random.default_rng(seed)
    arrays = make_paths(rng, providers, paths)
    coefficients = CostCoefficients(c_local=2e-4, c_host=5e-5)
    rho_l = rng.uniform(0.1, 0.6, providers)
    rho_h = rng.uniform(0.1, 0.6, providers)
    state = BatchState(active=np.full(providers, -1, dtype=np.int64), since=np.zeros(providers))
    times_ms: list[float] = []
    switches = 0
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"{providers} x {paths} paths", total=rounds)
        for r in range(rounds):
            # Load: a bounded random walk, plus bursts on 2 % of the providers each round.
            rho_l = np.clip(rho_l + rng.normal(0, 0.03, providers), 0.0, 0.97)
            rho_h = np.clip(rho_h + rng.normal(0, 0.03, providers), 0.0, 0.97)
            burst = rng.random(providers) < 0.02
            rho_l = np.where(burst, rng.uniform(0.8, 0.97, providers), rho_l)
            start = time.perf_counter()
            new = choose_paths_batch(arrays, rho_l, rho_h, coefficients, state, float(r), 0.1, 5.0)
            times_ms.append((time.perf_counter() - start) * 1e3)
            if r > 0:
                switches += int(np.count_nonzero(new.active != state.active))
            state = new
            progress.advance(task)
    times_ms.sort()
    n_paths = providers * paths
    per_10k = statistics.median(times_ms) * 10_000 / n_paths
    scalar_us = scalar_round_us(200)
    result = {
        "providers": providers,
        "paths_per_provider": paths,
        "paths_per_round": n_paths,
        "rounds": rounds,
        "round_ms_median": round(statistics.median(times_ms), 3),
        "round_ms_p99": round(times_ms[int(0.99 * (len(times_ms) - 1))], 3),
        "round_ms_max": round(times_ms[-1], 3),
        "ms_per_10k_paths_median": round(per_10k, 3),
        "target_ms_per_10k_paths": 10.0,
        "meets_target": per_10k <= 10.0,
        "switches_per_round_mean": round(switches / max(rounds - 1, 1), 2),
        "scalar_choose_paths_us_per_path": round(scalar_us, 2),
        "scalar_ms_per_10k_paths_estimate": round(scalar_us * 10_000 / 1e3, 1),
        "host": {
            "cpu_count": os.cpu_count(),
            "machine": platform.machine(),
            "python": platform.python_version(),
            "numpy": np.__version__,
        },
        "command": "python bench/sim_scale.py",
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    console.print_json(json.dumps(result))


if __name__ == "__main__":
    typer.run(main)
