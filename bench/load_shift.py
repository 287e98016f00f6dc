"""The path controller on the real stack while the local provider's load steps light -> heavy,
against the same load with the original path held fixed, repeated in alternating order.

What runs (all real processes on loopback): one tritonserver per tier (the local provider's
``fmnist-cnn`` and the host's ``mnist-cnn``, from ``braid models build``'s repository), the
gateway (``braid gateway``), Debian's Prometheus scraping all three every second, and the path
controller (``braid.controller.loop.PathController``, local mode: it writes the gateway's
routing file). Labelled Fashion-MNIST test images go through the gateway at a steady rate
(open loop, ``samples_per_request`` images per request), so latency and accuracy are measured
on served responses, and each response names the path that served it (``braid_path`` in its
parameters).

One *episode* is a light phase then a heavy phase, on a fresh start: the original path's
routing and a new controller. In a controlled episode the controller writes the routing; in
a fixed one it decides the same way but nothing applies its decisions (the original path
held), so both sides pay for its rounds on the same cores. A *pair* is a controlled episode
and a fixed one, in alternating order: controlled first in even repeats, fixed
first in odd ones, so drift in the machine's load does not always favour one side. Every
episode replays the same image sequence. Two ways to make the heavy phase heavy:

- ``traffic``: the provider's own requests through the gateway step up to a fraction of the
  original path's capacity (measured once, closed loop, before the episodes); the sweep
  covers ``heavy_fractions`` (0.5 .. 1.0). The path the controller picks changes the load
  itself (fewer blocks per request), which is the case CoDE's controller is for.
- ``background``: the local device busy with other work (a separate process runs the
  original path's blocks on the local Triton, batched); the controller's choice cannot
  lighten that load, only spend fewer hops in it. One operating point.

Per pair: ``p50_ratio`` / ``p99_ratio`` (controlled heavy-phase latency over fixed) and the
accuracy drop; per episode, ``switch_s``: from the heavy phase's start to the first request
*served* by a path other than the one serving at the end of the light phase (read from the
responses, not the controller's decision; the decision time is reported beside it). Over the
repeats each is a median with a distribution-free 95 % interval (order statistics,
``braid_dev.benchstats``; its coverage is reported). Parameters are a fixed ``Profile``; the
command line picks one. Machine facts and the sampled load average are read from the machine.

    python bench/load_shift.py --profile smoke --repository DIR --out /tmp/c.json --figure /tmp/c.png
    python bench/load_shift.py --profile full   # results/controller.json, docs/img/load-shift.png
    python bench/load_shift.py --profile sweep3 # the same with 3 sweep points, half the time
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import numpy.typing as npt
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcaio
import typer
from rich.console import Console

from braid.api.catalog import PathCatalog
from braid.api.common import ObjectRef
from braid.api.routing import single_path_table
from braid.api.v1alpha1.offloadpolicy import (
    CostCoefficients,
    Hysteresis,
    OffloadPolicySpec,
)
from braid.controller.loop import PathController, routing_file_sink
from braid.controller.metrics import MetricQueries
from braid.dataplane.promql import PrometheusClient
from braid.dataplane.routing import write_routing_table
from braid.dataplane.service import read_catalog
from braid.policy.decision import ControlSettings
from braid.render.prometheus_config import ScrapeTarget
from braid.tooling.data import load_fashion_mnist
from braid_dev.benchstats import LoadSampler, alternated, machine_facts, now_utc
from braid_dev.load_shift_analysis import Episode, Sample, summarise_episode, summarise_point
from braid_dev.local_runtime import start_local_runtime
from braid_dev.stack.gateway_process import start_gateway_process
from braid_dev.stack.prometheus import start_prometheus

ROOT = Path(__file__).resolve().parent.parent
console = Console()
SCRAPE_INTERVAL_S = 1.0
# The controller asks Prometheus twice per scrape: a decision then follows a scrape by half an
# interval at most instead of a whole one (a round only costs a few PromQL queries).
CONTROL_INTERVAL_S = SCRAPE_INTERVAL_S / 2
SETTLE_S = 2.0
"""After a routing change by hand (the start of an episode): the gateway reloads the file."""


@dataclass(frozen=True)
class Profile:
    """Every parameter of a run, fixed before it starts."""

    repeats: int
    heavy_fractions: tuple[float, ...]
    """Traffic scenario: the heavy rate as fractions of the original path's capacity. A fixed
    rate does not carry across runs: with the gateway's batching the original's latency is
    flat up to its capacity and unbounded past it, and the capacity moves with the machine."""
    light_s: float
    heavy_s: float
    light_rps: float
    samples_per_request: int
    """Test images per request. With one, coalescing and fused segments make each sample so
    cheap for Triton that 2 cores run out in the gateway and the client before the local
    tier is busy; small batches put the load on the local model's compute, as in CoDE."""
    capacity_s: float
    background_batch: int
    background_threads: int
    min_dwell_s: int
    """The policy's hysteresis: no switch sooner than this after the last one."""
    max_drop: float
    """Candidate paths: within this accuracy drop of the original."""


class ProfileName(StrEnum):
    smoke = "smoke"
    sweep3 = "sweep3"
    full = "full"


PROFILES = {
    ProfileName.smoke: Profile(
        repeats=2,
        heavy_fractions=(0.5, 1.0),
        light_s=3.0,
        heavy_s=6.0,
        light_rps=15.0,
        samples_per_request=8,
        capacity_s=4.0,
        background_batch=64,
        background_threads=3,
        min_dwell_s=5,
        max_drop=0.02,
    ),
    ProfileName.full: Profile(
        repeats=5,
        heavy_fractions=(0.5, 0.625, 0.75, 0.875, 1.0),
        light_s=10.0,
        heavy_s=30.0,
        light_rps=25.0,
        samples_per_request=8,
        capacity_s=8.0,
        background_batch=64,
        background_threads=3,
        min_dwell_s=10,
        max_drop=0.02,
    ),
}
# The full profile's phases and repeats with three sweep points instead of five: about half
# its time (~30 minutes on 2 cores), for when the full one does not fit.
PROFILES[ProfileName.sweep3] = replace(PROFILES[ProfileName.full], heavy_fractions=(0.5, 0.75, 1.0))
SCENARIOS = ("traffic", "background")


# --------------------------------------------------------------------------- the local load


def _background_worker(
    address: str,
    chain: list[tuple[str, list[int]]],
    batch: int,
    threads: int,
    stop: Any,
    ready: Any,
) -> None:
    """The local provider's own traffic: the original path's blocks, batched, back to back."""

    def loop() -> None:
        client = grpcclient.InferenceServerClient(address)
        rng = np.random.default_rng(os.getpid())
        first = True
        while not stop.is_set():
            x = rng.random((batch, *chain[0][1]), dtype=np.float32)
            for model, _shape in chain:
                tensor = grpcclient.InferInput("INPUT__0", list(x.shape), "FP32")
                tensor.set_data_from_numpy(x)
                x = client.infer(model, [tensor]).as_numpy("OUTPUT__0")
                if first:
                    ready.set()
                    first = False

    workers = [threading.Thread(target=loop, daemon=True) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()


@dataclass
class BackgroundLoad:
    """A process running the local load; ``start()`` returns when its first call completed."""

    address: str
    chain: list[tuple[str, list[int]]]
    batch: int
    threads: int
    process: Any = None
    stop_event: Any = None

    def start(self) -> float:
        ctx = mp.get_context("spawn")
        self.stop_event = ctx.Event()
        ready = ctx.Event()
        self.process = ctx.Process(
            target=_background_worker,
            args=(self.address, self.chain, self.batch, self.threads, self.stop_event, ready),
            daemon=True,
        )
        self.process.start()
        if not ready.wait(60):
            self.stop()
            raise RuntimeError("the background load did not start")
        return time.time()

    def stop(self) -> float:
        """Stop the load; returns when it was told to stop (the load ends there, not when
        the process has finished joining)."""
        stopped = time.time()
        if self.process is not None:
            self.stop_event.set()
            self.process.join(15)
            if self.process.is_alive():
                self.process.kill()
                self.process.join()
            self.process = None
        return stopped


# --------------------------------------------------------------------------- measurement


def request_input(
    images: npt.NDArray[np.float32], index: int, k: int
) -> tuple[npt.NDArray[np.intp], grpcaio.InferInput]:
    """Request ``index``'s rows of the test set (``k`` consecutive images) and its input."""
    rows = (index * k + np.arange(k)) % len(images)
    tensor = grpcaio.InferInput("INPUT__0", [k, *images.shape[1:]], "FP32")
    tensor.set_data_from_numpy(images[rows])
    return rows, tensor


def served_by(result: grpcaio.InferResult) -> tuple[str | None, str | None]:
    """The path that served a response and, when the gateway fell back, why."""
    parameters = result.get_response().parameters
    path, fallback = parameters.get("braid_path"), parameters.get("braid_fallback")
    return (
        None if path is None else str(path.string_param),
        None if fallback is None else str(fallback.string_param),
    )


async def drive(
    grpc_address: str,
    model: str,
    data: tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]],
    phases: list[tuple[str, float, float]],
    on_phase: Any,
    episode: Episode,
    samples_per_request: int,
) -> None:
    """Open-loop requests through ``phases`` (name, seconds, requests/s); ``on_phase(name)``
    runs (on a thread) as each begins. Every episode sends the same image sequence."""
    images, labels = data
    client = grpcaio.InferenceServerClient(grpc_address)
    pending: set[asyncio.Task[None]] = set()
    k = samples_per_request

    async def one(index: int, phase: str) -> None:
        rows, tensor = request_input(images, index, k)
        sent = time.time()
        try:
            result = await client.infer(model, [tensor])
        except Exception:
            episode.samples.append(Sample(sent, time.time() - sent, 0, k, phase, False, None))
            return
        latency = time.time() - sent
        right = int((np.argmax(result.as_numpy("OUTPUT__0"), axis=1) == labels[rows]).sum())
        path, fallback = served_by(result)
        episode.samples.append(Sample(sent, latency, right, k, phase, True, path, fallback))

    index = 0
    try:
        for phase, seconds, rps in phases:
            await asyncio.to_thread(on_phase, phase)
            t0 = time.monotonic()
            n = 0
            while time.monotonic() - t0 < seconds:
                await asyncio.sleep(max(0.0, t0 + n / rps - time.monotonic()))
                task = asyncio.create_task(one(index, phase))
                pending.add(task)
                task.add_done_callback(pending.discard)
                n += 1
                index += 1
        await asyncio.gather(*pending)
    finally:
        await client.close()


async def capacity(
    grpc_address: str,
    model: str,
    images: npt.NDArray[np.float32],
    samples_per_request: int,
    seconds: float,
    concurrency: int = 32,
) -> float:
    """Requests per second the gateway serves on the original path with ``concurrency``
    requests always in flight; the first quarter is warm-up."""
    client = grpcaio.InferenceServerClient(grpc_address)
    done: list[float] = []
    start = time.monotonic()

    async def worker(w: int) -> None:
        i = w
        while time.monotonic() - start < seconds:
            _, tensor = request_input(images, i, samples_per_request)
            await client.infer(model, [tensor])
            done.append(time.monotonic())
            i += concurrency

    try:
        await asyncio.gather(*(worker(w) for w in range(concurrency)))
    finally:
        await client.close()
    counted = [t for t in done if t - start >= seconds / 4]
    return len(counted) / (max(counted) - start - seconds / 4) if counted else 0.0


def plot(report: dict[str, Any], out: Path) -> None:
    """Latency ratios and switch times by heavy load (traffic), and the background point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def errorbar(ax: Any, xs: list[float], summaries: list[Any], **kw: Any) -> None:
        kept = [(x, s) for x, s in zip(xs, summaries, strict=True) if s]
        if not kept:
            return
        med = [s["median"] for _, s in kept]
        err = [
            [m - s["ci95_low"] for m, (_, s) in zip(med, kept, strict=True)],
            [s["ci95_high"] - m for m, (_, s) in zip(med, kept, strict=True)],
        ]
        ax.errorbar([x for x, _ in kept], med, yerr=err, marker="o", capsize=3, **kw)

    scenarios: dict[str, dict[str, Any]] = report["scenarios"]
    fig, (ax_ratio, ax_switch, ax_bg) = plt.subplots(1, 3, figsize=(16, 4.8))
    traffic = scenarios.get("traffic", {})
    fractions = sorted(float(f) for f in traffic)
    for figure, label in (("p50_ratio", "p50"), ("p99_ratio", "p99")):
        errorbar(ax_ratio, fractions, [traffic[str(f)][figure] for f in fractions], label=label)
    ax_ratio.axhline(1.0, color="black", ls="--", lw=1, label="no gain")
    ax_ratio.set_yscale("log")
    ax_ratio.set_xlabel("heavy rate / original path's capacity")
    ax_ratio.set_ylabel("controlled / fixed, heavy phase")
    ax_ratio.set_title("traffic: latency ratio (median of repeats, 95 % CI)")
    ax_ratio.legend(fontsize=8)
    errorbar(
        ax_switch,
        fractions,
        [traffic[str(f)]["switch_s"] for f in fractions],
        label="served by another path",
    )
    errorbar(
        ax_switch,
        fractions,
        [traffic[str(f)]["decision_switch_s"] for f in fractions],
        label="controller decided",
    )
    for f in fractions:
        ax_switch.annotate(
            traffic[str(f)]["switched"], (f, 0), fontsize=7, ha="center", va="bottom"
        )
    if fractions and not any(traffic[str(f)]["switch_s"] for f in fractions):
        ax_switch.text(0.5, 0.5, "no switch in any repeat", transform=ax_switch.transAxes,
                       ha="center")  # fmt: skip
    if fractions:
        ax_switch.set_xlim(min(fractions) - 0.05, max(fractions) + 0.05)
    ax_switch.set_xlabel("heavy rate / original path's capacity")
    ax_switch.set_ylabel("seconds after the heavy phase began")
    ax_switch.set_title("traffic: switch time (switched / repeats at the bottom)")
    if any(traffic[str(f)]["switch_s"] or traffic[str(f)]["decision_switch_s"] for f in fractions):
        ax_switch.legend(fontsize=8)
    background = next(iter(scenarios.get("background", {}).values()), None)
    if background:
        for x, (figure, label) in enumerate((("p50_ratio", "p50"), ("p99_ratio", "p99"))):
            errorbar(ax_bg, [float(x)], [background[figure]], label=label)
        ax_bg.set_xticks([0, 1], ["p50", "p99"])
        ax_bg.set_xlim(-0.5, 1.5)
        ax_bg.set_yscale("log")
        ax_bg.axhline(1.0, color="black", ls="--", lw=1)
        ax_bg.set_title(f"background load: latency ratio (switched {background['switched']})")
        ax_bg.set_ylabel("controlled / fixed, heavy phase")
    load = report["conditions"]["load"]
    machine = report["machine"]
    fig.suptitle(
        f"load shift, profile {report['profile_name']}, {report['repeats']} repeats in "
        f"alternating order ({report['date']}; {machine['cpus']} × {machine['cpu_model']}; "
        f"1-min load {load.get('load_1min_min')}–{load.get('load_1min_max')}"
        f"{'' if load.get('quiet') else ', BUSY machine'})",
        fontsize=9,
    )
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- main


def ensure_repository(repository: Path) -> Path:
    if not (repository / "catalog.json").is_file():
        console.print(
            f"building the model repository into {repository} (braid models build --quick)"
        )
        subprocess.run(
            [
                sys.executable,
                "-m",
                "braid.cli",
                "models",
                "build",
                "--quick",
                "--out",
                str(repository),
            ],
            check=True,
        )
    return repository


def candidate_catalog(catalog: PathCatalog, max_drop: float, with_cross: bool) -> PathCatalog:
    """The original plus the paths within ``max_drop`` of its accuracy (what the policy allows)."""
    keep = [
        p
        for p in catalog.paths
        if p.id == catalog.original_path
        or p.metrics.accuracy >= catalog.baseline_accuracy - max_drop
        or (with_cross and p.kind == "cross")
    ]
    return catalog.model_copy(update={"paths": keep})


@dataclass
class Stack:
    """What every episode of a run shares: servers, gateway, Prometheus, catalog, policy."""

    catalog: PathCatalog
    policy: OffloadPolicySpec
    routing: Path
    gateway_address: str
    prometheus: PrometheusClient
    local_address: str
    data: tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]
    profile: Profile

    def reset_routing(self) -> None:
        """The original path, as a gateway starts; then wait for the gateway to read it and
        for the controller's rate window to forget the previous episode."""
        original = single_path_table(self.catalog.local_model, self.catalog.original_path)
        write_routing_table(original, self.routing)
        time.sleep(SETTLE_S)

    def episode(
        self, scenario: str, mode: str, fraction: float | None, repeat: int, heavy_rps: float
    ) -> Episode:
        fixed = self.profile
        episode = Episode(scenario, mode, fraction, repeat)
        self.reset_routing()
        stop = threading.Event()
        # The fixed side runs the controller too, deciding without acting (no routing sink):
        # both sides pay for its rounds in this process, only one applies them.
        sinks: list[Any] = [episode.sink]
        if mode == "controlled":
            sinks.insert(0, routing_file_sink(self.catalog, self.policy, self.routing))
        controller = PathController(
            catalog=self.catalog,
            policy=self.policy,
            prometheus=self.prometheus,
            sinks=sinks,
            queries=MetricQueries(model=self.catalog.local_model, window="3s"),
            settings=ControlSettings(capacity={"local": 2.0, "host": 2.0}),
        )
        thread = threading.Thread(
            target=controller.run, args=(CONTROL_INTERVAL_S, stop), daemon=True
        )
        thread.start()
        original = self.catalog.path(self.catalog.original_path)
        background = BackgroundLoad(
            self.local_address,
            [(h.triton_model, list(h.input.shape)) for h in original.hops],
            fixed.background_batch,
            fixed.background_threads,
        )

        def on_phase(phase: str) -> None:
            if phase == "heavy":
                episode.heavy_start = (
                    background.start() if scenario == "background" else time.time()
                )

        try:
            asyncio.run(
                drive(
                    self.gateway_address,
                    self.catalog.local_model,
                    self.data,
                    [
                        ("light", fixed.light_s, fixed.light_rps),
                        ("heavy", fixed.heavy_s, heavy_rps),
                    ],
                    on_phase,
                    episode,
                    fixed.samples_per_request,
                )
            )
        finally:
            stop.set()
            thread.join(10)
            background.stop()
        return episode


def run_scenarios(stack: Stack, wanted: list[str]) -> tuple[dict[str, Any], float | None]:
    """Every operating point of ``wanted``, each ``repeats`` pairs in alternating order."""
    fixed = stack.profile
    capacity_rps: float | None = None
    if "traffic" in wanted:
        stack.reset_routing()
        console.print(f"measuring the original path's capacity ({fixed.capacity_s:g} s)")
        capacity_rps = asyncio.run(
            capacity(
                stack.gateway_address,
                stack.catalog.local_model,
                stack.data[0],
                fixed.samples_per_request,
                fixed.capacity_s,
            )
        )
        console.print(f"capacity {capacity_rps:.0f} requests/s")
    results: dict[str, Any] = {}
    for scenario in wanted:
        points: list[float | None] = (
            list(fixed.heavy_fractions) if scenario == "traffic" else [None]
        )
        results[scenario] = {}
        for fraction in points:
            heavy_rps = (
                round(fraction * capacity_rps, 1)
                if fraction is not None and capacity_rps
                else fixed.light_rps
            )
            pairs = []
            for repeat in range(fixed.repeats):
                summaries = {}
                for mode in alternated("controlled", "fixed", repeat):
                    episode = stack.episode(scenario, mode, fraction, repeat, heavy_rps)
                    summaries[mode] = summarise_episode(episode)
                    s = summaries[mode]
                    console.print(
                        f"{scenario} {fraction or ''} repeat {repeat + 1} {mode:<10} "
                        f"p50 {s['heavy_p50_ms']} ms p99 {s['heavy_p99_ms']} ms "
                        f"switch {s['switch_s']} s served by {s['heavy_served_by']}"
                        f" fallbacks {s['heavy_fallbacks']}"
                    )
                pairs.append((summaries["controlled"], summaries["fixed"]))
            point = summarise_point(pairs)
            point["heavy_rps"] = heavy_rps
            results[scenario][str(fraction) if fraction is not None else "background"] = point
    return results, capacity_rps


def main(
    profile: Annotated[
        ProfileName, typer.Option(help="Which fixed set of parameters to run.")
    ] = ProfileName.full,
    repository: Annotated[Path, typer.Option(help="Triton repository with catalog.json.")] = ROOT
    / "model-repo",
    scenarios: Annotated[
        str, typer.Option(help="'traffic', 'background' or 'both' (one after the other).")
    ] = "both",
    out: Annotated[Path, typer.Option(help="Results file.")] = ROOT / "results/controller.json",
    figure: Annotated[Path, typer.Option(help="Plot.")] = ROOT / "docs/img/load-shift.png",
    plot_from: Annotated[
        Path | None, typer.Option(help="Only redraw the plot from this results JSON.")
    ] = None,
) -> None:
    if plot_from is not None:
        plot(json.loads(plot_from.read_text()), figure)
        return
    wanted = list(SCENARIOS) if scenarios == "both" else [scenarios]
    if any(s not in SCENARIOS for s in wanted):
        raise typer.BadParameter("--scenarios is 'traffic', 'background' or 'both'")
    fixed = PROFILES[profile]
    repository = ensure_repository(repository)
    catalog = candidate_catalog(
        read_catalog(repository / "catalog.json"), fixed.max_drop, with_cross=False
    )
    workdir = Path(tempfile.mkdtemp(prefix="braid-load-shift-"))
    catalog_file = workdir / "catalog.json"
    catalog_file.write_text(catalog.model_dump_json())
    routing = workdir / "routing.json"
    write_routing_table(single_path_table(catalog.local_model, catalog.original_path), routing)
    policy = OffloadPolicySpec(
        model_ref=ObjectRef(name=catalog.local_model),
        cost=CostCoefficients(a=100.0, c_local=1e-4),
        latency_bound_microseconds=200_000,
        all_paths=True,
        hysteresis=Hysteresis(cost_margin=0.1, min_dwell_seconds=fixed.min_dwell_s),
    )
    test = load_fashion_mnist().test
    data = (test.images.numpy().astype(np.float32), test.labels.numpy())
    console.print(f"{len(catalog.paths)} candidate paths; starting Triton per tier ({workdir})")
    runtime = start_local_runtime(repository, catalog, workdir)
    gateway = None
    prometheus = None
    sampler = LoadSampler(every_s=10.0)
    try:
        gateway = start_gateway_process(
            catalog_file, {t: s.grpc_address for t, s in runtime.servers.items()}, routing
        )
        targets = [
            ScrapeTarget(s.metrics_address, "triton", {"tier": tier})
            for tier, s in runtime.servers.items()
        ] + [ScrapeTarget(gateway.http_address, "gateway")]
        prometheus = start_prometheus(
            targets, workdir=workdir / "prometheus", scrape_interval=f"{SCRAPE_INTERVAL_S:g}s"
        )
        stack = Stack(
            catalog=catalog,
            policy=policy,
            routing=routing,
            gateway_address=gateway.grpc_address,
            prometheus=PrometheusClient(prometheus.url),
            local_address=runtime.servers["local"].grpc_address,
            data=data,
            profile=fixed,
        )
        with sampler:
            results, capacity_rps = run_scenarios(stack, wanted)
    finally:
        if gateway is not None:
            gateway.stop()
        if prometheus is not None:
            prometheus.stop()
        runtime.stop()
    machine = machine_facts()
    report: dict[str, Any] = {
        "benchmark": "load_shift",
        "date": now_utc(),
        "profile_name": profile.value,
        "repeats": fixed.repeats,
        "order": "each pair alternates: controlled first in even repeats, fixed first in odd",
        "original_capacity_rps": None if capacity_rps is None else round(capacity_rps, 1),
        "summary": {
            scenario: {
                point: {
                    key: value
                    for key, value in summary.items()
                    if key not in ("episodes", "accuracy_drop_pt", "decision_switch_s")
                }
                for point, summary in points.items()
            }
            for scenario, points in results.items()
        },
        "scenarios": results,
        "machine": machine,
        "conditions": {"load": sampler.summary(machine["cpus"])},
        "setup": {
            "profile": asdict(fixed),
            "repository": str(repository),
            "candidate_paths": len(catalog.paths),
            "policy": policy.model_dump(by_alias=True, mode="json"),
            "controller": {"interval_s": CONTROL_INTERVAL_S, "irate_window": "3s"},
            "switch_s": "heavy phase start -> first request served by a path other than the "
            "light phase's (from the responses' braid_path)",
            "command": f"python bench/load_shift.py --profile {profile.value} "
            f"--scenarios {scenarios}",
        },
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    plot(report, figure)
    console.print_json(json.dumps({"summary": report["summary"], **report["conditions"]}))


if __name__ == "__main__":
    typer.run(main)
