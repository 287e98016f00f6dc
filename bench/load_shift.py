"""The path controller on the real stack while the local provider's load steps light -> heavy.

What runs (all real processes on loopback): one tritonserver per tier (the local provider's
``fmnist-cnn`` and the host's ``mnist-cnn``, from ``braid models build``'s repository), the
gateway (``braid gateway``), Debian's Prometheus scraping all three every second, and the path
controller (``braid.controller.loop.PathController``, local mode: it writes the gateway's
routing file). Labelled Fashion-MNIST test images go through the gateway at a steady rate
(open loop, eight images per request by default), so latency and accuracy are measured on
served responses.

The *load* is the local provider's own traffic: a separate process runs the original path's
blocks on the local Triton server directly, in batches, from a few threads — the local
device busy with other work, as in CoDE. Phases:

    light -> heavy -> light (controller on) -> heavy again with the original path held fixed

The last phase replays the same image sequence as the controlled heavy phase, so
``heavy_latency_ratio`` and ``accuracy_drop_pt`` compare like with like in one run.

Two ways to make the heavy phases heavy, run one after the other by default:

- ``traffic``: the provider's own requests through the gateway step from ``--rps`` to
  ``--heavy-rps``; the path the controller picks changes the load itself (fewer blocks per
  request), which is the case CoDE's controller is for.
- ``background``: the local device busy with other work, as above; the controller's choice
  cannot lighten that load, only spend fewer hops in it.

    python bench/load_shift.py   # ~8 minutes; results/controller.json, docs/img/load-shift*.png
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import numpy.typing as npt
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcaio
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from braid.api.catalog import PathCatalog
from braid.api.common import ObjectRef
from braid.api.routing import single_path_table
from braid.api.v1alpha1.offloadpolicy import (
    CostCoefficients,
    Hysteresis,
    OffloadPolicySpec,
    OffloadPolicyStatus,
)
from braid.controller.loop import PathController, routing_file_sink
from braid.controller.metrics import MetricQueries
from braid.dataplane.promql import PrometheusClient
from braid.dataplane.routing import write_routing_table
from braid.dataplane.service import read_catalog
from braid.policy.decision import ControlSettings, Decision
from braid.render.prometheus_config import ScrapeTarget
from braid.tooling.data import load_fashion_mnist
from braid_dev.local_runtime import start_local_runtime
from braid_dev.stack.gateway_process import GatewayProcess, start_gateway_process
from braid_dev.stack.prometheus import start_prometheus

ROOT = Path(__file__).resolve().parent.parent
console = Console()
SCRAPE_INTERVAL_S = 1.0
# The controller asks Prometheus twice per scrape: a decision then follows a scrape by half an
# interval at most instead of a whole one (a round only costs a few PromQL queries).
CONTROL_INTERVAL_S = SCRAPE_INTERVAL_S / 2


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


# --------------------------------------------------------------------------- the gateway


# --------------------------------------------------------------------------- measurement


@dataclass
class Sample:
    sent: float
    latency_s: float
    correct: int
    """How many of the request's samples were classified right."""
    phase: str
    ok: bool = True
    samples: int = 1


@dataclass
class Recorder:
    samples: list[Sample] = field(default_factory=list)
    decisions: list[tuple[float, tuple[tuple[str, float], ...], bool]] = field(default_factory=list)
    loads: list[tuple[float, float]] = field(default_factory=list)
    trace: list[dict[str, Any]] = field(default_factory=list)
    """Every round's view: load, reason, and each candidate's modelled latency and cost."""

    def sink(self, decision: Decision, _status: OffloadPolicyStatus) -> None:
        self.decisions.append(
            (time.time(), tuple((p.id, p.weight) for p in decision.active), decision.degraded)
        )
        self.loads.append((time.time(), decision.load.get("local", float("nan"))))
        self.trace.append(
            {
                "t": round(time.time(), 3),
                "load": {k: round(v, 3) for k, v in decision.load.items()},
                "reason": decision.reason,
                "active": [[p.id, p.weight] for p in decision.active],
                "paths": {
                    a.id: [round(a.latency_us), round(a.cost, 4), a.feasible]
                    for a in decision.assessments
                    if a.latency_us is not None and a.cost is not None
                },
            }
        )


def request_input(
    images: npt.NDArray[np.float32], index: int, k: int
) -> tuple[npt.NDArray[np.intp], grpcaio.InferInput]:
    """Request ``index``'s rows of the test set (``k`` consecutive images) and its input."""
    rows = (index * k + np.arange(k)) % len(images)
    tensor = grpcaio.InferInput("INPUT__0", [k, *images.shape[1:]], "FP32")
    tensor.set_data_from_numpy(images[rows])
    return rows, tensor


async def drive(
    grpc_address: str,
    model: str,
    images: npt.NDArray[np.float32],
    labels: npt.NDArray[np.int64],
    rates: dict[str, float],
    phases: list[tuple[str, float]],
    on_phase: Any,
    recorder: Recorder,
    progress: Progress,
    samples_per_request: int = 1,
) -> dict[str, float]:
    """Open-loop requests at each phase's rate through the phases; returns each phase's start
    time. Each request carries ``samples_per_request`` consecutive test images."""
    client = grpcaio.InferenceServerClient(grpc_address)
    starts: dict[str, float] = {}
    pending: set[asyncio.Task[None]] = set()

    k = samples_per_request

    async def one(index: int, phase: str) -> None:
        rows, tensor = request_input(images, index, k)
        sent = time.time()
        try:
            result = await client.infer(model, [tensor])
            pred = np.argmax(result.as_numpy("OUTPUT__0"), axis=1)
            right = int((pred == labels[rows]).sum())
            recorder.samples.append(Sample(sent, time.time() - sent, right, phase, samples=k))
        except Exception:
            recorder.samples.append(Sample(sent, time.time() - sent, 0, phase, ok=False, samples=k))

    total = sum(d for _, d in phases)
    task = progress.add_task("load shift", total=total)
    try:
        for phase, duration in phases:
            starts[phase] = await asyncio.to_thread(on_phase, phase)
            progress.update(task, description=f"phase {phase}")
            t0 = time.monotonic()
            index = 0  # every phase replays the same image sequence
            rps = rates[phase]
            while (elapsed := time.monotonic() - t0) < duration:
                due = t0 + index / rps
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                t = asyncio.create_task(one(index, phase))
                pending.add(t)
                t.add_done_callback(pending.discard)
                index += 1
                progress.update(
                    task, completed=sum(d for p, d in phases[: len(starts) - 1]) + elapsed
                )
        await asyncio.gather(*pending)
    finally:
        await client.close()
    return starts


async def capacity(
    grpc_address: str,
    model: str,
    images: npt.NDArray[np.float32],
    samples_per_request: int,
    seconds: float = 8.0,
    concurrency: int = 32,
) -> float:
    """Requests per second the gateway serves on the current routing (the original path)
    with ``concurrency`` requests always in flight; the first quarter is warm-up."""
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


# --------------------------------------------------------------------------- analysis


def primary(active: tuple[tuple[str, float], ...]) -> str:
    return max(active, key=lambda p: p[1])[0]


def analyse(
    recorder: Recorder,
    starts: dict[str, float],
    ends: dict[str, float],
    light_path: str | None,
) -> dict[str, Any]:
    def lat(phase: str, since: float | None = None) -> list[float]:
        return [
            s.latency_s
            for s in recorder.samples
            if s.phase == phase and s.ok and (since is None or s.sent >= since)
        ]

    def acc(phase: str, n: int) -> float:
        got = sorted((s for s in recorder.samples if s.phase == phase), key=lambda s: s.sent)[:n]
        return sum(s.correct for s in got) / max(sum(s.samples for s in got), 1)

    changes = [
        (t, primary(a))
        for i, (t, a, _) in enumerate(recorder.decisions)
        if i == 0 or primary(a) != primary(recorder.decisions[i - 1][1])
    ]
    heavy_start, heavy_end = starts["heavy"], ends["heavy"]
    to_heavy = next((t for t, _ in changes if heavy_start <= t <= heavy_end), None)
    # Back: the first change after the load drops (to the light path or a path cheaper still).
    back = next((t for t, _ in changes if t > heavy_end), None)
    switch_s = None if to_heavy is None else to_heavy - heavy_start
    switch_back_s = None if back is None else back - heavy_end

    def flaps(lo: float, hi: float) -> int:
        inside = [t for t, _ in changes if lo < t <= hi]
        return max(len(inside) - 1, 0)  # the first change in a phase is the expected switch

    n = min(
        sum(1 for s in recorder.samples if s.phase == "heavy"),
        sum(1 for s in recorder.samples if s.phase == "heavy-fixed"),
    )
    heavy = lat("heavy")

    def heavy_before(t: float) -> list[float]:
        return [s.latency_s for s in recorder.samples if s.phase == "heavy" and s.ok and s.sent < t]

    fixed = lat("heavy-fixed")
    steady = lat("heavy", to_heavy) if to_heavy else heavy
    return {
        "switch_seconds": None if switch_s is None else round(switch_s, 2),
        "switch_back_seconds": None if switch_back_s is None else round(switch_back_s, 2),
        "scrape_interval_s": SCRAPE_INTERVAL_S,
        "switch_within_2_scrapes": switch_s is not None and switch_s <= 2 * SCRAPE_INTERVAL_S,
        "heavy_latency_ratio": round(statistics.mean(heavy) / statistics.mean(fixed), 3),
        # Same phase, same background, before vs after the switch: free of drift between
        # phases (other tenants of the machine), unlike the ratio against the later phase.
        "heavy_latency_ratio_within_phase": (
            round(statistics.mean(steady) / statistics.mean(before), 3)
            if to_heavy and (before := heavy_before(to_heavy)) and steady
            else None
        ),
        "heavy_latency_ratio_after_switch": round(
            statistics.mean(steady) / statistics.mean(fixed), 3
        ),
        # The fixed path's queue must be stable for the ratio to mean anything: the mean of
        # the phase's last third over its first third (about 1 when it is; growing when the
        # offered load is beyond what the original path can serve).
        "heavy_fixed_growth": _growth(recorder, "heavy-fixed"),
        "accuracy_drop_pt": round(100 * (acc("heavy-fixed", n) - acc("heavy", n)), 2),
        "flaps_steady": flaps(starts["light"], heavy_start)
        + flaps(heavy_start, heavy_end)
        + flaps(heavy_end, ends["light-after"]),
        "latency_ms": {
            phase: {
                "mean": round(1e3 * statistics.mean(v), 2),
                "p50": round(1e3 * float(np.percentile(v, 50)), 2),
                "p99": round(1e3 * float(np.percentile(v, 99)), 2),
                "n": len(v),
            }
            for phase in starts
            if (v := lat(phase))
        },
        "accuracy": {phase: round(acc(phase, 10**9), 4) for phase in starts},
        "errors": sum(not s.ok for s in recorder.samples),
        "local_utilisation_mean": {
            phase: round(statistics.mean(v), 3)
            for phase in starts
            if (
                v := [
                    rho
                    for t, rho in recorder.loads
                    if starts[phase] <= t < ends.get(phase, float("inf"))
                ]
            )
        },
        "path_changes": [{"t": round(t - starts["light"], 2), "primary": p} for t, p in changes],
    }


def _growth(recorder: Recorder, phase: str) -> float | None:
    got = sorted((s for s in recorder.samples if s.phase == phase and s.ok), key=lambda s: s.sent)
    third = len(got) // 3
    if third == 0:
        return None
    first = statistics.mean(s.latency_s for s in got[:third])
    last = statistics.mean(s.latency_s for s in got[-third:])
    return round(last / first, 2)


def plot(
    recorder: Recorder,
    starts: dict[str, float],
    ends: dict[str, float],
    out: Path,
    load: str = "background",
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t0 = starts["light"]
    fig, (ax_load, ax_path, ax_lat) = plt.subplots(3, 1, figsize=(10, 8), sharex=True)
    # Offered load: requests per second through the gateway, and the background on/off.
    sent = np.array([s.sent - t0 for s in recorder.samples])
    bins = np.arange(0, max(sent.max(), 1) + 1, 1.0)
    counts, _ = np.histogram(sent, bins)
    ax_load.step(bins[:-1], counts, where="post", label="gateway req/s (measured)")
    for phase in ("heavy", "heavy-fixed"):
        ax_load.axvspan(starts[phase] - t0, ends[phase] - t0, color="tab:red", alpha=0.15)
    ax_load.set_ylabel("req/s")
    ax_load.set_title(
        "offered load (shaded: heavy phases, "
        + ("the provider's own requests stepped up)" if load == "traffic" else "background load)")
    )
    ax_load.legend(loc="upper right")
    # Active paths and weights.
    ids = sorted({p for _, a, _ in recorder.decisions for p, _ in a})
    short = {i: i.removeprefix("fmnist-cnn/") for i in ids}
    for path in ids:
        xs = [t - t0 for t, _, _ in recorder.decisions]
        ys = [dict(a).get(path, 0.0) for _, a, _ in recorder.decisions]
        if any(ys):
            ax_path.step(xs, ys, where="post", label=short[path])
    ax_path.set_ylabel("weight")
    ax_path.set_ylim(-0.05, 1.05)
    ax_path.set_title("active paths (controller; the last phase holds the original)")
    ax_path.legend(loc="center right", fontsize=7)
    # Latency p50 / p99 per second.
    ok = [s for s in recorder.samples if s.ok]
    by_bin: dict[int, list[float]] = {}
    for s in ok:
        by_bin.setdefault(int(s.sent - t0), []).append(s.latency_s * 1e3)
    seconds = sorted(by_bin)
    ax_lat.plot(seconds, [np.percentile(by_bin[x], 50) for x in seconds], label="p50")
    ax_lat.plot(seconds, [np.percentile(by_bin[x], 99) for x in seconds], label="p99")
    ax_lat.set_yscale("log")
    ax_lat.set_ylabel("latency (ms)")
    ax_lat.set_xlabel("seconds")
    ax_lat.legend(loc="upper right")
    for ax in (ax_load, ax_path, ax_lat):
        for start in starts.values():
            ax.axvline(start - t0, color="grey", lw=0.5)
    for phase, start in starts.items():
        ax_load.text(start - t0 + 0.5, ax_load.get_ylim()[1] * 0.9, phase, fontsize=8)
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


def main(
    repository: Annotated[Path, typer.Option(help="Triton repository with catalog.json.")] = ROOT
    / "model-repo",
    rps: Annotated[
        float, typer.Option(help="Labelled requests per second via the gateway.")
    ] = 25.0,
    load: Annotated[
        str,
        typer.Option(
            help="What makes the heavy phases heavy: 'traffic' (the provider's own requests "
            "through the gateway step up to --heavy-rps), 'background' (other work on the "
            "local Triton, batched, from a separate process), or 'both', one after the other "
            "(the results file's top level is the traffic run; both are under 'scenarios')."
        ),
    ] = "both",
    heavy_rps: Annotated[
        float | None,
        typer.Option(
            help="Gateway requests per second in the heavy phases (traffic); default: "
            "--heavy-load times the original path's capacity, measured before the phases."
        ),
    ] = None,
    heavy_load: Annotated[
        float,
        typer.Option(
            help="The heavy rate as a fraction of the original path's measured capacity "
            "(traffic). A fixed rate does not carry across runs: with the gateway's batching "
            "the original's latency is flat up to its capacity and unbounded past it, and "
            "the capacity moves with the machine's other tenants (at 190 requests/s of 8 "
            "samples the fixed phase averaged 64 ms in one run and 299 ms in another; at 180, "
            "33 ms, barely heavy)."
        ),
    ] = 0.9,
    samples_per_request: Annotated[
        int,
        typer.Option(
            help="Test images per request (the batch dimension). With one, the gateway's "
            "coalescing and fused segments make each sample so cheap for Triton that the "
            "machine's 2 cores run out in the gateway and the client before the local tier "
            "is busy (260 single-sample requests/s: local utilisation 0.4); small batches "
            "put the load where CoDE puts it, on the local model's compute."
        ),
    ] = 8,
    light_s: Annotated[float, typer.Option(help="Each light phase, seconds.")] = 20.0,
    heavy_s: Annotated[float, typer.Option(help="Each heavy phase, seconds.")] = 60.0,
    batch: Annotated[int, typer.Option(help="Background batch size.")] = 64,
    threads: Annotated[int, typer.Option(help="Background threads.")] = 3,
    max_drop: Annotated[float, typer.Option(help="Candidates within this accuracy drop.")] = 0.02,
    out: Annotated[Path, typer.Option(help="Results file.")] = ROOT / "results/controller.json",
    figure: Annotated[Path, typer.Option(help="Timeline plot.")] = ROOT / "docs/img/load-shift.png",
    trace: Annotated[
        Path | None, typer.Option(help="Write every decision round here (JSON lines).")
    ] = None,
) -> None:
    if load == "both":
        scenarios: dict[str, Any] = {}
        scratch = Path(tempfile.mkdtemp(prefix="braid-load-shift-results-"))
        for kind in ("traffic", "background"):
            main(
                repository=repository,
                rps=rps,
                load=kind,
                heavy_rps=heavy_rps,
                heavy_load=heavy_load,
                samples_per_request=samples_per_request,
                light_s=light_s,
                heavy_s=heavy_s,
                batch=batch,
                threads=threads,
                max_drop=max_drop,
                out=scratch / f"{kind}.json",
                figure=figure if kind == "traffic" else figure.with_stem(f"{figure.stem}-{kind}"),
                trace=None if trace is None else trace.with_stem(f"{trace.stem}-{kind}"),
            )
            scenarios[kind] = json.loads((scratch / f"{kind}.json").read_text())
        out.parent.mkdir(parents=True, exist_ok=True)
        summary = {**scenarios["traffic"], "scenarios": scenarios}
        summary["command"] = "python bench/load_shift.py"
        out.write_text(json.dumps(summary, indent=2) + "\n")
        return
    if load not in ("background", "traffic"):
        raise typer.BadParameter("--load is 'traffic', 'background' or 'both'")
    repository = ensure_repository(repository)
    full = read_catalog(repository / "catalog.json")
    catalog = candidate_catalog(full, max_drop, with_cross=False)
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
        hysteresis=Hysteresis(cost_margin=0.1, min_dwell_seconds=30),
    )
    data = load_fashion_mnist().test
    images = data.images.numpy().astype(np.float32)
    labels = data.labels.numpy()
    local_chain = [
        (h.triton_model, list(h.input.shape)) for h in catalog.path(catalog.original_path).hops
    ]
    console.print(
        f"{len(catalog.paths)} candidate paths; starting Triton per tier (logs {workdir})"
    )
    runtime = start_local_runtime(repository, catalog, workdir)
    gateway: GatewayProcess | None = None
    prometheus = None
    background = BackgroundLoad(runtime.servers["local"].grpc_address, local_chain, batch, threads)
    recorder = Recorder()
    stop_controller = threading.Event()
    controller_thread: threading.Thread | None = None
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
        client = PrometheusClient(prometheus.url)
        controller = PathController(
            catalog=catalog,
            policy=policy,
            prometheus=client,
            sinks=[routing_file_sink(catalog, policy, routing), recorder.sink],
            queries=MetricQueries(model=catalog.local_model, window="3s"),
            settings=ControlSettings(capacity={"local": 2.0, "host": 2.0}),
        )
        controller_thread = threading.Thread(
            target=controller.run, args=(CONTROL_INTERVAL_S, stop_controller), daemon=True
        )
        capacity_rps: float | None = None
        if load == "traffic" and heavy_rps is None:
            console.print("measuring the original path's capacity (closed loop, 8 s)")
            capacity_rps = asyncio.run(
                capacity(gateway.grpc_address, catalog.local_model, images, samples_per_request)
            )
            heavy_rps = round(heavy_load * capacity_rps, 1)
            console.print(f"capacity {capacity_rps:.0f} requests/s -> heavy phases {heavy_rps}")
            # The burst must leave Prometheus's rate window before the controller's first look.
            time.sleep(4)
        heavy = heavy_rps if heavy_rps is not None else rps
        ends: dict[str, float] = {}

        started: list[str] = []

        def on_phase(phase: str) -> float:
            """Switch the background load for ``phase``; returns when the phase really began."""
            assert controller_thread is not None
            if not started:
                controller_thread.start()
                time.sleep(3)  # let the first decision settle before measuring
            if phase == "heavy-fixed":
                stop_controller.set()
                controller_thread.join(10)
                fixed = single_path_table(catalog.local_model, catalog.original_path, 10_000)
                write_routing_table(fixed, routing)
                time.sleep(2)
            if load == "traffic":
                now = time.time()  # the rate itself steps, in drive()
            elif phase.startswith("heavy"):
                now = background.start()
            else:
                now = background.stop() if background.process is not None else time.time()
            if started:
                ends[started[-1]] = now
            started.append(phase)
            return now

        phases = [
            ("light", light_s),
            ("heavy", heavy_s),
            ("light-after", light_s),
            ("heavy-fixed", heavy_s),
        ]
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TimeRemainingColumn(),
            console=console,
        ) as progress:
            starts = asyncio.run(
                drive(
                    gateway.grpc_address,
                    catalog.local_model,
                    images,
                    labels,
                    {
                        p: heavy if load == "traffic" and p.startswith("heavy") else rps
                        for p, _ in phases
                    },
                    phases,
                    on_phase,
                    recorder,
                    progress,
                    samples_per_request,
                )
            )
        ends["heavy-fixed"] = background.stop() if load == "background" else time.time()
        light_decisions = [
            a for t, a, _ in recorder.decisions if starts["light"] <= t < starts["heavy"]
        ]
        light_path = primary(light_decisions[-1]) if light_decisions else None
        result = analyse(recorder, starts, ends, light_path)
        result.update(
            {
                "light_path": light_path,
                "load": load,
                "rps": rps,
                "samples_per_request": samples_per_request,
                **(
                    {"background": {"batch": batch, "threads": threads, "chain": len(local_chain)}}
                    if load == "background"
                    else {
                        "heavy_rps": heavy,
                        "original_capacity_rps": capacity_rps,
                        "heavy_load": heavy_load if capacity_rps else None,
                    }
                ),
                "phases_s": dict(phases),
                "candidate_paths": len(catalog.paths),
                "policy": policy.model_dump(by_alias=True, mode="json"),
                "controller": {"interval_s": CONTROL_INTERVAL_S, "irate_window": "3s"},
                "host": {"cpu_count": os.cpu_count(), "python": platform.python_version()},
                "command": "python bench/load_shift.py"
                + (f" --load traffic --heavy-load {heavy_load:g}" if load == "traffic" else "")
                + f" --samples-per-request {samples_per_request}",
            }
        )
        plot(recorder, starts, ends, figure, load)
        if trace is not None:
            rows = [{**r, "t": round(r["t"] - starts["light"], 2)} for r in recorder.trace]
            trace.write_text("".join(json.dumps(r) + "\n" for r in rows))
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        console.print_json(json.dumps({k: v for k, v in result.items() if k != "policy"}))
    finally:
        stop_controller.set()
        background.stop()
        if gateway is not None:
            gateway.stop()
        if prometheus is not None:
            prometheus.stop()
        runtime.stop()


if __name__ == "__main__":
    typer.run(main)
