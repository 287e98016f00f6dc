"""How long one decision round takes for 1,000 providers x 10 candidate paths.

Simulated, not served: each provider's local and host utilisation follows a bounded random
walk with load bursts (M/M/1 stretch of its paths' times, as the controller models them), and
every round decides all 10,000 paths with ``braid.policy.batch.choose_paths_batch`` —
hysteresis and dwell included. The scalar ``choose_paths`` is timed on a sample of providers
for comparison. Target (issue 7): one round <= 10 ms per 10,000 paths.

It also counts the controller's API writes per policy per minute at steady state (issue 25):
``status_writes`` drives the cluster sink that ships (``PolicyStatusSink``, its
``StatusGate`` and the status it writes) for a sample of policies, each on its own steady
noisy load, on a simulated 1 s round clock, against an in-memory API that counts the calls it
gets. Simulated time, so ten minutes of rounds take seconds; nothing is timed there.

    python bench/sim_scale.py            # writes results/sim_scale.json
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Annotated, Any, cast

import numpy as np
import typer
from rich.console import Console
from rich.progress import Progress

from braid.api.catalog import PathCatalog
from braid.api.common import ObjectRef
from braid.api.v1alpha1.offloadpolicy import (
    CostCoefficients,
    HostRef,
    Hysteresis,
    OffloadPolicySpec,
    OffloadPolicyStatus,
)
from braid.controller.policy_sink import PolicyStatusSink
from braid.controller.status import StatusGate, policy_status
from braid.kube.client import Kube
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


class CountingApi:
    """The three calls the sink makes, answered from memory and counted."""

    def __init__(self) -> None:
        self.gets = 0
        self.status_patches = 0
        self.events = 0
        self.spec = {"modelRef": {"name": "toy"}, "latencyBoundMicroseconds": 10_000}

    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> Any:
        self.gets += 1
        meta = {"name": name, "namespace": namespace, "uid": name, "generation": 1}
        return {"metadata": meta, "spec": self.spec, "status": {}}

    def patch_status(
        self, api_version: str, kind: str, name: str, namespace: str, status: dict[str, Any]
    ) -> None:
        self.status_patches += 1

    def create(self, obj: dict[str, Any]) -> None:
        self.events += 1


class SimulatedClock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def bench_catalog(rng: np.random.Generator) -> PathCatalog:
    """The synthetic pair with accuracies drawn per provider (the original keeps its own)."""
    modules, shapes = syn._modules()
    base = syn.build_catalog(modules, shapes)
    paths = [
        p.model_copy(
            update={
                "metrics": p.metrics.model_copy(
                    update={
                        "accuracy": 0.9
                        if p.id == base.original_path
                        else float(rng.uniform(0.88, 0.9))
                    }
                )
            }
        )
        for p in base.paths
    ]
    return base.model_copy(update={"paths": paths, "baseline_accuracy": 0.9})


def status_writes(
    policies: int, minutes: float, warmup_s: int, noise: float, seed: int
) -> dict[str, Any]:
    """API calls per policy per minute, counted after ``warmup_s`` of 1 s rounds."""
    rng = np.random.default_rng(seed)
    spec = OffloadPolicySpec(
        model_ref=ObjectRef(name=syn.LOCAL),
        cost=CostCoefficients(c_local=1e-3, c_host=1e-3),
        latency_bound_microseconds=10_000,
        all_paths=True,
        allowed_hosts=[HostRef(namespace="host", model=syn.HOST)],
        hysteresis=Hysteresis(cost_margin=0.1, min_dwell_seconds=10),
    )
    gate = StatusGate()
    rounds = warmup_s + int(minutes * 60)
    counted = {"writes": 0, "gets": 0, "events": 0, "rounds": 0}
    for _ in range(policies):
        catalog = bench_catalog(rng)
        mean_l, mean_h = rng.uniform(0.05, 0.9), rng.uniform(0.05, 0.5)
        api, clock = CountingApi(), SimulatedClock()
        sink = PolicyStatusSink("p", "ns", cast(Kube, api), gate=gate, clock=clock)
        before = (0, 0, 0)
        state, status = PolicyState(), cast(OffloadPolicyStatus | None, None)
        for r in range(rounds):
            clock.now = float(r)
            if r == warmup_s:
                before = (api.status_patches, api.gets, api.events)
            busy_l = float(np.clip(mean_l + rng.normal(0, noise), 0.0, 0.99))
            busy_h = float(np.clip(mean_h + rng.normal(0, noise), 0.0, 0.99))
            m = Metrics(
                at=float(r), tiers={"local": TierMetrics(busy_l), "host": TierMetrics(busy_h)}
            )
            decision = choose_paths(catalog, m, spec, state)
            state = decision.state
            status = policy_status(decision, status, now=float(r), generation=1)
            sink(decision, status)
        counted["writes"] += api.status_patches - before[0]
        counted["gets"] += api.gets - before[1]
        counted["events"] += api.events - before[2]
        counted["rounds"] += rounds - warmup_s
    per_min = 60.0 / (counted["rounds"] / policies) / policies
    return {
        "policies": policies,
        "round_s": 1.0,
        "minutes_counted": minutes,
        "warmup_s": warmup_s,
        "load_noise_sd": noise,
        "status_gate": {"min_interval_s": gate.min_interval_s, "refresh_s": gate.refresh_s},
        "status_writes_per_policy_per_min": round(counted["writes"] * per_min, 2),
        "events_per_policy_per_min": round(counted["events"] * per_min, 2),
        "gets_per_policy_per_min": round(counted["gets"] * per_min, 2),
        "status_writes_per_policy_per_min_one_per_round": 60.0,
    }


def main(
    providers: Annotated[int, typer.Option(help="Simulated providers.")] = 1000,
    paths: Annotated[int, typer.Option(help="Candidate paths per provider.")] = 10,
    rounds: Annotated[int, typer.Option(help="Decision rounds timed.")] = 300,
    seed: Annotated[int, typer.Option(help="RNG seed.")] = 7,
    out: Annotated[Path, typer.Option(help="Results file.")] = ROOT / "results/sim_scale.json",
    write_policies: Annotated[int, typer.Option(help="Policies whose writes are counted.")] = 100,
    write_minutes: Annotated[float, typer.Option(help="Steady minutes counted.")] = 10.0,
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
    writes = status_writes(write_policies, write_minutes, warmup_s=60, noise=0.03, seed=seed)
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
        "status_writes_per_policy_per_min": writes["status_writes_per_policy_per_min"],
        "status_writes": writes,
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
