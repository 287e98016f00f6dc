"""Gateway overhead and throughput, like for like, with repeats and intervals.

On one tritonserver serving the blocks of the original path of a catalog (the synthetic
provider pair by default, or a repository from ``braid models build``), two pairs do the
same work on both sides, at every concurrency level of the profile:

- **hop by hop**: ``gateway_hop_by_hop`` (``braid gateway --no-fuse``: one Triton call per
  hop, as a cluster runs a path whose Blocks are separate pods) against ``direct`` (the
  client calls the same hops itself with ``tritonclient.grpc.aio``, in sequence);
- **fused**: ``gateway_fused`` (``braid gateway``: the hops on one server run as one Triton
  ensemble call, ``braid.render.segments``) against ``ensemble`` (the client calls a Triton
  ensemble of the same blocks).

The gateways run on the grpc transport ``braid.dataplane`` picks at import (its
``GRPC_EXPERIMENTS``: grpc's poller thread reads a socket and wakes the event loop, one
thread hop per answer instead of four); the client runs on grpc's defaults, as a
``tritonclient`` user does (``setup.grpc_experiments`` in the results says so). A client
could turn the same switches on for itself. The gateways of both pairs run pinned to one CPU
(``--pin-cpu auto``, ``braid.dataplane.cpu_pinning``: grpc's poller and the event loop then
hand each message over on one core), as a gateway deployed on CPUs of its own runs;
Triton and the client are left to the scheduler.

Each pair runs ``repeats`` times at each level, its two sides in alternating order
(``braid_dev.benchstats.alternated``). A repeat yields each side's p50, p99 and throughput;
the paired differences (gateway minus baseline, ms) and ratios (gateway over baseline,
requests/s) are summarised over repeats as a median and a distribution-free 95 % interval
from order statistics (``braid_dev.benchstats.median_interval``; its exact coverage is
reported). The full profile may add unpaired modes (the gateway over REST, a gateway with
``--no-coalesce``, a hop-by-hop gateway with ``--no-streams``: one unary call per hop instead
of a message on its long-lived streams, ``braid.dataplane.streams``; both gateways without
``--pin-cpu``) to show what each part buys.

The full profile ends with ``interleaved_c1``: at concurrency 1, rounds in which each side of
``INTERLEAVED_PAIRS`` sends one request in turn, so that the machine's drift over minutes,
which moves whole repeats, falls on both sides of a difference alike; differences of p50 and
p99 block by block, with a median and interval over the blocks. The headline keys stay the
repeats' figures.

Every parameter is a constant of a ``Profile`` below; the command line only picks one
(``smoke``: a minute or two, to check the code; ``full``: the figures). Machine facts, the
load average sampled through the run, and the servers' own metadata (``GET /v2``) are read,
never typed. A run on a busy machine is marked so, and its targets are not judged.

Headline keys of ``results/gateway.json``: ``overhead_vs_direct_hops_p50_ms`` /
``_p99_ms`` (hop-by-hop gateway minus direct hops, at the lowest level),
``overhead_vs_ensemble_p50_ms`` (fused gateway minus ensemble, lowest level) and
``throughput_ratio_vs_ensemble_median`` (fused gateway over ensemble, highest level), each
with a ``_ci95`` interval beside it; ``pairs`` holds every level. When ``py-spy`` is on PATH
and the profile asks for it, the fused gateway is also sampled under load. Draws
``docs/img/gateway.png`` (``--plot-from`` redraws it from a results file).

    python bench/gateway.py --profile smoke --out /tmp/gateway-smoke.json --png /tmp/g.png
    python bench/gateway.py --profile full        # results/gateway.json, docs/img/gateway.png
"""

from __future__ import annotations

import asyncio
import json
import re
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import httpx
import numpy as np
import numpy.typing as npt
import tritonclient.grpc.aio as grpcaio
import tritonclient.http.aio as httpaio
import typer
import uvloop
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console

from braid.api.catalog import PathCatalog
from braid.api.routing import single_path_table
from braid.dataplane import GRPC_EXPERIMENTS
from braid.dataplane.routing import write_routing_table
from braid.dataplane.service import read_catalog
from braid.render.triton_config import render_ensemble_config
from braid_dev.benchstats import (
    LoadSampler,
    alternated,
    machine_facts,
    median_interval,
    now_utc,
    server_metadata,
)
from braid_dev.gateway_profile import sample_with_py_spy
from braid_dev.local_runtime import make_tier_views
from braid_dev.stack.gateway_process import GatewayProcess, start_gateway_process
from braid_dev.stack.triton import TritonServer, start_triton

ROOT = Path(__file__).resolve().parents[1]
console = Console()


@dataclass(frozen=True)
class Profile:
    """Every parameter of a run, fixed before it starts."""

    repeats: int
    levels: tuple[int, ...]
    requests: tuple[int, ...]
    """Measured requests per mode, level and repeat (one per level: low levels are slow)."""
    warmup: int
    """Unmeasured calls per mode before the first repeat."""
    grpc_channels: int
    """gRPC connections each client spreads its calls over (see ``Channels``)."""
    extra_modes: tuple[str, ...]
    profile_seconds: float
    """py-spy sampling of the fused gateway under load; 0: none."""
    interleaved_rounds: int
    """Rounds at concurrency 1 in which each mode of ``INTERLEAVED_PAIRS`` sends one request,
    in rotating order (see ``interleave``); 0: none."""
    interleaved_block: int
    """Consecutive rounds summarised together: one paired difference per block."""


class ProfileName(StrEnum):
    smoke = "smoke"
    full = "full"


PROFILES = {
    ProfileName.smoke: Profile(
        repeats=5,
        levels=(1, 8, 32),
        requests=(40, 80, 160),
        warmup=10,
        grpc_channels=4,
        extra_modes=(),
        profile_seconds=0.0,
        interleaved_rounds=200,
        interleaved_block=50,
    ),
    ProfileName.full: Profile(
        repeats=6,
        levels=(1, 8, 32),
        requests=(600, 1600, 3200),
        warmup=40,
        grpc_channels=4,
        extra_modes=(
            "gateway_fused_rest",
            "gateway_no_coalesce",
            "gateway_hop_by_hop_unary",
            "gateway_hop_by_hop_unpinned",
            "gateway_fused_unpinned",
        ),
        profile_seconds=8.0,
        interleaved_rounds=2000,
        interleaved_block=200,
    ),
}

PAIRS = {
    # name: (gateway side, baseline side); the same work on both sides.
    "hop_by_hop_vs_direct": ("gateway_hop_by_hop", "direct"),
    "fused_vs_ensemble": ("gateway_fused", "ensemble"),
}
TARGETS = {
    "overhead_vs_direct_hops_p50_ms": 0.3,
    "overhead_vs_direct_hops_p99_ms": 1.0,
    "throughput_ratio_vs_ensemble_median": 1.0,
}
INTERLEAVED_PAIRS = {
    # Pairs at concurrency 1 measured one request at a time (``interleave``); both ways of
    # deploying the gateway against the same baseline, and against each other.
    "hop_by_hop_vs_direct": ("gateway_hop_by_hop", "direct"),
    "hop_by_hop_unpinned_vs_direct": ("gateway_hop_by_hop_unpinned", "direct"),
    "hop_by_hop_pinned_vs_unpinned": ("gateway_hop_by_hop", "gateway_hop_by_hop_unpinned"),
    "fused_vs_ensemble": ("gateway_fused", "ensemble"),
    "fused_unpinned_vs_ensemble": ("gateway_fused_unpinned", "ensemble"),
}
MODE_LABELS = {
    "direct": "direct hop calls",
    "gateway_hop_by_hop": "gateway, hop by hop (--no-fuse)",
    "ensemble": "Triton ensemble",
    "gateway_fused": "gateway, fused",
    "gateway_fused_rest": "gateway, fused, REST",
    "gateway_no_coalesce": "gateway, fused, --no-coalesce",
    "gateway_hop_by_hop_unary": "gateway, hop by hop, unary calls (--no-streams)",
    "gateway_hop_by_hop_unpinned": "gateway, hop by hop, not pinned to a CPU",
    "gateway_fused_unpinned": "gateway, fused, not pinned to a CPU",
}
GATEWAY_OF_MODE = {
    # mode -> which gateway process serves it (for its metrics breakdown)
    "gateway_hop_by_hop": "hop_by_hop",
    "gateway_fused": "fused",
    "gateway_fused_rest": "fused",
    "gateway_no_coalesce": "no_coalesce",
    "gateway_hop_by_hop_unary": "hop_by_hop_unary",
    "gateway_hop_by_hop_unpinned": "hop_by_hop_unpinned",
    "gateway_fused_unpinned": "fused_unpinned",
}
PINNED = ["--pin-cpu", "auto"]
"""Every gateway of the pairs runs pinned to one CPU (``braid.dataplane.cpu_pinning``), as
one deployed on CPUs of its own would; the ``_unpinned`` modes show what that buys."""
GATEWAY_FLAGS = {
    "fused": PINNED,
    "hop_by_hop": ["--no-fuse", *PINNED],
    "no_coalesce": ["--no-coalesce", *PINNED],
    "hop_by_hop_unary": ["--no-fuse", "--no-streams", *PINNED],
    "hop_by_hop_unpinned": ["--no-fuse"],
    "fused_unpinned": [],
}


@dataclass(frozen=True)
class HopInfo:
    model: str
    input: str
    output: str


def ensemble_name(catalog: PathCatalog) -> str:
    return f"{catalog.local_model}.ensemble"


def write_ensemble(view: Path, catalog: PathCatalog, hops: list[HopInfo]) -> str:
    """Add an ensemble of the original path's blocks to the local tier's repository view."""
    first = (view / hops[0].model / "config.pbtxt").read_text()
    found = re.search(r"max_batch_size:\s*(\d+)", first)
    max_batch = int(found.group(1)) if found else 0
    original = catalog.path(catalog.original_path)
    name = ensemble_name(catalog)
    (view / name / "1").mkdir(parents=True, exist_ok=True)
    (view / name / "config.pbtxt").write_text(
        render_ensemble_config(
            name,
            [(h.model, h.input, h.output) for h in hops],
            original.hops[0].input,
            original.hops[-1].output,
            max_batch,
        )
    )
    return name


class Channels:
    """``n`` gRPC clients of one address, each on its own connection, taken in turn.

    One ``InferenceServerClient`` is one HTTP/2 connection, whose frames one transport handles
    in order; 32 concurrent callers behind one connection measure that connection, not the
    server (in one probe the gateway spent ~390 µs of CPU per request behind one connection
    and ~340 µs behind four). The REST client already spreads its calls over a pool.
    """

    def __init__(self, address: str, n: int) -> None:
        # A local subchannel pool: otherwise grpc shares one connection among equal channels.
        args = [("grpc.use_local_subchannel_pool", 1)]
        self.clients = [
            grpcaio.InferenceServerClient(address, channel_args=args) for _ in range(max(1, n))
        ]
        self._turn = 0

    def next(self) -> grpcaio.InferenceServerClient:
        self._turn = (self._turn + 1) % len(self.clients)
        return self.clients[self._turn]

    async def close(self) -> None:
        for client in self.clients:
            await client.close()


@dataclass(frozen=True)
class Point:
    """One mode at one level in one repeat."""

    requests: int
    p50_ms: float
    p99_ms: float
    mean_ms: float
    throughput_rps: float


async def run_load(call: Callable[[], Awaitable[object]], requests: int, concurrency: int) -> Point:
    """``requests`` calls from ``concurrency`` workers."""
    remaining = requests
    latencies: list[float] = []

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            start = time.perf_counter()
            await call()
            latencies.append((time.perf_counter() - start) * 1e3)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - start
    ms = np.asarray(latencies)
    return Point(
        requests=len(latencies),
        p50_ms=float(np.percentile(ms, 50)),
        p99_ms=float(np.percentile(ms, 99)),
        mean_ms=float(ms.mean()),
        throughput_rps=len(latencies) / wall,
    )


async def interleave(
    calls: dict[str, Callable[[], Awaitable[object]]], rounds: int
) -> dict[str, list[float]]:
    """Latencies (ms) of ``rounds`` rounds in which every mode sends one request, one after
    another, the first mode rotating: the modes share every minute of the machine's drift,
    which moves whole runs of the repeats by more than the differences they are after."""
    names = list(calls)
    latencies: dict[str, list[float]] = {name: [] for name in names}
    for i in range(rounds):
        turn = i % len(names)
        for name in names[turn:] + names[:turn]:
            start = time.perf_counter()
            await calls[name]()
            latencies[name].append((time.perf_counter() - start) * 1e3)
    return latencies


def summarise_interleaved(latencies: dict[str, list[float]], block: int) -> dict[str, Any]:
    """Each mode's p50 / p99 over all rounds; for each of ``INTERLEAVED_PAIRS``, the
    difference of p50s (and p99s) block by block, as a median with its interval."""
    ms = {name: np.asarray(values) for name, values in latencies.items()}
    rounds = min(len(v) for v in ms.values())
    starts = range(0, rounds - block + 1, block)

    def blockwise(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64], q: int) -> list[float]:
        return [
            float(np.percentile(a[i : i + block], q) - np.percentile(b[i : i + block], q))
            for i in starts
        ]

    return {
        "rounds": rounds,
        "block": block,
        "modes": {
            name: {
                "p50_ms": round(float(np.percentile(v, 50)), 3),
                "p99_ms": round(float(np.percentile(v, 99)), 3),
            }
            for name, v in ms.items()
        },
        "pairs": {
            pair: {
                "overhead_p50_ms": interval(blockwise(ms[gw], ms[base], 50)),
                "overhead_p99_ms": interval(blockwise(ms[gw], ms[base], 99)),
            }
            for pair, (gw, base) in INTERLEAVED_PAIRS.items()
            if gw in ms and base in ms
        },
    }


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"http://{url}/metrics", timeout=10).text
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("braid_gateway_") and sample.name.endswith(
                ("_sum", "_count", "_total")
            ):
                out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def breakdown(acc: dict[Any, float]) -> dict[str, float]:
    """Mean time per request inside the gateway, how much of it is hop calls, calls made."""

    def total(name: str) -> float:
        return sum(v for k, v in acc.items() if k[0] == name)

    requests = total("braid_gateway_request_duration_seconds_count")
    if requests <= 0:
        return {}
    inside = total("braid_gateway_request_duration_seconds_sum") / requests * 1e3
    hops = total("braid_gateway_hop_duration_seconds_sum") / requests * 1e3
    return {
        "gateway_internal_ms": round(inside, 3),
        "hop_calls_ms": round(hops, 3),
        "executor_own_ms": round(inside - hops, 3),
        "triton_calls_per_request": round(total("braid_gateway_triton_calls_total") / requests, 3),
    }


def interval(values: list[float]) -> dict[str, float | int | str]:
    return median_interval(values).as_dict()


def summarise_mode(points: list[Point]) -> dict[str, Any]:
    return {
        "p50_ms": interval([p.p50_ms for p in points]),
        "p99_ms": interval([p.p99_ms for p in points]),
        "throughput_rps": interval([p.throughput_rps for p in points]),
        "per_repeat": [{k: round(v, 3) for k, v in asdict(p).items()} for p in points],
    }


def summarise_pair(gateway: list[Point], baseline: list[Point]) -> dict[str, Any]:
    """Paired figures: repeat ``i`` of both sides ran back to back, in alternating order."""
    both = list(zip(gateway, baseline, strict=True))
    return {
        "overhead_p50_ms": interval([g.p50_ms - b.p50_ms for g, b in both]),
        "overhead_p99_ms": interval([g.p99_ms - b.p99_ms for g, b in both]),
        "throughput_ratio": interval([g.throughput_rps / b.throughput_rps for g, b in both]),
    }


def headline(pairs: dict[str, dict[str, dict[str, Any]]], low: str, top: str) -> dict[str, Any]:
    """The issue's four figures, each a median with its interval beside it."""
    picks = {
        "overhead_vs_direct_hops_p50_ms": ("hop_by_hop_vs_direct", low, "overhead_p50_ms"),
        "overhead_vs_direct_hops_p99_ms": ("hop_by_hop_vs_direct", low, "overhead_p99_ms"),
        "overhead_vs_ensemble_p50_ms": ("fused_vs_ensemble", low, "overhead_p50_ms"),
        "throughput_ratio_vs_ensemble_median": ("fused_vs_ensemble", top, "throughput_ratio"),
    }
    out: dict[str, Any] = {}
    for key, (pair, level, figure) in picks.items():
        summary = pairs[pair][level][figure]
        out[key] = summary["median"]
        out[f"{key}_ci95"] = [summary["ci95_low"], summary["ci95_high"]]
    out["headline_concurrency"] = {"overheads": int(low), "throughput_ratio": int(top)}
    return out


def judge(report: dict[str, Any]) -> dict[str, Any]:
    """Targets met, on the median; not judged at all when the machine was busy."""
    if not report["conditions"]["load"].get("quiet", False):
        return {
            "judged": False,
            "why": "the machine was not quiet during the run (see conditions.load); "
            "rerun the full profile on a quiet machine before judging",
        }
    return {
        "judged": True,
        **{
            key: (report[key] >= target if key.startswith("throughput") else report[key] <= target)
            for key, target in TARGETS.items()
        },
    }


def plot(report: dict[str, Any], out: Path) -> None:
    """Throughput by level; both pairs' overheads and throughput ratios by level, with
    their intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def spread(summaries: list[dict[str, Any]]) -> tuple[list[float], list[list[float]]]:
        """Medians, and their distances to the interval's ends (matplotlib's error bars)."""
        med = [s["median"] for s in summaries]
        err = [
            [m - s["ci95_low"] for m, s in zip(med, summaries, strict=True)],
            [s["ci95_high"] - m for m, s in zip(med, summaries, strict=True)],
        ]
        return med, err

    def errorbar(ax: Any, xs: list[int], summaries: list[dict[str, Any]], **kw: Any) -> None:
        med, err = spread(summaries)
        ax.errorbar(xs, med, yerr=err, marker="o", capsize=3, **kw)

    modes: dict[str, dict[str, Any]] = report["modes"]
    pairs: dict[str, dict[str, Any]] = report["pairs"]
    levels = sorted({int(c) for by_level in modes.values() for c in by_level})
    interleaved: dict[str, Any] | None = report.get("interleaved_c1")
    fig, axes = plt.subplots(1, 4 if interleaved else 3, figsize=(21 if interleaved else 16, 4.8))
    ax_rps, ax_over, ax_ratio = axes[:3]
    for mode, by_level in modes.items():
        xs = sorted(int(c) for c in by_level)
        errorbar(
            ax_rps,
            xs,
            [by_level[str(c)]["throughput_rps"] for c in xs],
            label=MODE_LABELS.get(mode, mode),
            lw=2 if mode in ("gateway_fused", "ensemble") else 1,
        )
    ax_rps.set_title("throughput (median of repeats, 95 % CI)")
    ax_rps.set_ylabel("requests / s")
    ax_rps.legend(fontsize=7)
    for pair, figure, label in (
        ("hop_by_hop_vs_direct", "overhead_p50_ms", "hop by hop − direct, p50"),
        ("hop_by_hop_vs_direct", "overhead_p99_ms", "hop by hop − direct, p99"),
        ("fused_vs_ensemble", "overhead_p50_ms", "fused − ensemble, p50"),
    ):
        errorbar(ax_over, levels, [pairs[pair][str(c)][figure] for c in levels], label=label)
    for key, style in (
        ("overhead_vs_direct_hops_p50_ms", ":"),
        ("overhead_vs_direct_hops_p99_ms", "--"),
    ):
        ax_over.axhline(
            TARGETS[key], color="grey", ls=style, lw=1, label=f"target {TARGETS[key]} ms"
        )
    ax_over.axhline(0, color="black", lw=0.5)
    ax_over.set_title("gateway latency over the same work (paired)")
    ax_over.set_ylabel("ms")
    ax_over.legend(fontsize=7)
    for pair, label in (
        ("fused_vs_ensemble", "fused gateway / ensemble"),
        ("hop_by_hop_vs_direct", "hop-by-hop gateway / direct hops"),
    ):
        errorbar(
            ax_ratio, levels, [pairs[pair][str(c)]["throughput_ratio"] for c in levels], label=label
        )
    ax_ratio.axhline(1.0, color="black", ls="--", lw=1, label="parity")
    ax_ratio.set_title("throughput ratio (paired)")
    ax_ratio.legend(fontsize=7)
    for ax in (ax_rps, ax_over, ax_ratio):
        ax.set_xscale("log", base=2)
        ax.set_xticks(levels, [str(c) for c in levels])
        ax.set_xlabel("concurrent requests")
    if interleaved:
        ax_il = axes[3]
        names = list(interleaved["pairs"])
        med, err = spread([interleaved["pairs"][n]["overhead_p50_ms"] for n in names])
        ax_il.barh(range(len(names)), med, xerr=err, capsize=3, color="tab:blue")
        ax_il.set_yticks(range(len(names)), [n.replace("_", " ") for n in names], fontsize=7)
        ax_il.axvline(TARGETS["overhead_vs_direct_hops_p50_ms"], color="grey", ls=":", lw=1)
        ax_il.axvline(0, color="black", lw=0.5)
        ax_il.set_xlabel("p50 difference, ms (median of blocks, 95 % CI)")
        ax_il.set_title(
            f"c=1 interleaved: {interleaved['rounds']} rounds, blocks of {interleaved['block']}"
        )
    machine = report["machine"]
    load = report["conditions"]["load"]
    fig.suptitle(
        f"gateway benchmark, profile {report['profile_name']}, {report['repeats']} repeats "
        f"({report['date']}; {machine['cpus']} × {machine['cpu_model']}; 1-min load "
        f"{load.get('load_1min_min')}–{load.get('load_1min_max')}"
        f"{'' if load.get('quiet') else ', BUSY machine'})",
        fontsize=9,
    )
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


@dataclass
class Run:
    """What one run gathered: points by mode and level, one per repeat, and metrics deltas."""

    points: dict[str, dict[int, list[Point]]] = field(default_factory=dict)
    metrics: dict[str, dict[Any, float]] = field(default_factory=dict)
    py_spy: dict[str, Any] = field(default_factory=dict)
    interleaved: dict[str, list[float]] = field(default_factory=dict)


def main(
    profile: Annotated[
        ProfileName, typer.Option(help="Which fixed set of parameters to run.")
    ] = ProfileName.full,
    repository: Annotated[
        Path | None, typer.Option(help="Repository with catalog.json (default: synthetic).")
    ] = None,
    out: Annotated[Path, typer.Option(help="Where to write the JSON.")] = ROOT
    / "results"
    / "gateway.json",
    png: Annotated[Path, typer.Option(help="Where to draw the plot.")] = ROOT
    / "docs"
    / "img"
    / "gateway.png",
    plot_from: Annotated[
        Path | None, typer.Option(help="Only redraw the plot from this results JSON.")
    ] = None,
) -> None:
    if plot_from is not None:
        plot(json.loads(plot_from.read_text()), png)
        console.print(f"plotted {plot_from} -> {png}")
        return
    fixed = PROFILES[profile]
    workdir = Path(tempfile.mkdtemp(prefix="braid-bench-gateway-"))
    synthetic = repository is None
    if repository is None:
        from braid_dev.synthetic import build_synthetic_repository

        console.print("building the synthetic repository")
        repository = build_synthetic_repository(workdir / "repo").repository
    catalog_path = repository / "catalog.json"
    catalog = read_catalog(catalog_path)
    original = catalog.path(catalog.original_path)
    hops = [HopInfo(h.triton_model, h.input.name, h.output.name) for h in original.hops]
    view = make_tier_views(repository, catalog, workdir / "views")["local"]
    ensemble = write_ensemble(view, catalog, hops)
    routing = workdir / "routing.json"
    write_routing_table(single_path_table(catalog.local_model, catalog.original_path), routing)
    in_name, out_name = original.hops[0].input.name, original.hops[-1].output.name
    in_shape = [1, *original.hops[0].input.shape]
    x = np.random.default_rng(0).random(in_shape).astype(np.float32)
    model = catalog.local_model
    wanted_gateways = {
        GATEWAY_OF_MODE[m] for pair in PAIRS.values() for m in pair if m in GATEWAY_OF_MODE
    }
    wanted_gateways |= {GATEWAY_OF_MODE[m] for m in fixed.extra_modes}

    console.print(f"starting tritonserver with {len(hops)} blocks and their ensemble")
    triton: TritonServer = start_triton(view, workdir=workdir / "triton", name="bench")
    gateways: dict[str, GatewayProcess] = {}
    run = Run()
    versions: dict[str, Any] = {}
    sampler = LoadSampler()
    try:
        for role in sorted(wanted_gateways):
            gateways[role] = start_gateway_process(
                catalog_path, {"local": triton.grpc_address}, routing, extra=GATEWAY_FLAGS[role]
            )
        versions = {
            "triton": server_metadata(triton.http_address),
            "gateway": server_metadata(gateways["fused"].http_address),
        }

        async def measure() -> None:
            direct = Channels(triton.grpc_address, fixed.grpc_channels)
            grpc_of = {
                role: Channels(gw.grpc_address, fixed.grpc_channels)
                for role, gw in gateways.items()
            }
            rest = httpaio.InferenceServerClient(
                gateways["fused"].http_address, conn_limit=max(fixed.levels)
            )

            async def call_direct() -> npt.NDArray[np.float32]:
                data = x
                client = direct.next()
                for hop in hops:
                    tensor = grpcaio.InferInput(hop.input, list(data.shape), "FP32")
                    tensor.set_data_from_numpy(data)
                    result = await client.infer(
                        hop.model, [tensor], outputs=[grpcaio.InferRequestedOutput(hop.output)]
                    )
                    data = result.as_numpy(hop.output)
                return np.asarray(data, dtype=np.float32)

            def grpc_call(channels: Channels, name: str) -> Callable[[], Awaitable[object]]:
                async def call() -> object:
                    tensor = grpcaio.InferInput(in_name, in_shape, "FP32")
                    tensor.set_data_from_numpy(x)
                    return (await channels.next().infer(name, [tensor])).as_numpy(out_name)

                return call

            async def call_rest() -> object:
                tensor = httpaio.InferInput(in_name, in_shape, "FP32")
                tensor.set_data_from_numpy(x, binary_data=True)
                result = await rest.infer(
                    model,
                    [tensor],
                    outputs=[httpaio.InferRequestedOutput(out_name, binary_data=True)],
                    headers={"Accept-Encoding": "identity"},
                )
                return result.as_numpy(out_name)

            calls: dict[str, Callable[[], Awaitable[object]]] = {
                "direct": call_direct,
                "gateway_hop_by_hop": grpc_call(grpc_of["hop_by_hop"], model),
                "ensemble": grpc_call(direct, ensemble),
                "gateway_fused": grpc_call(grpc_of["fused"], model),
            }
            if "gateway_fused_rest" in fixed.extra_modes:
                calls["gateway_fused_rest"] = call_rest
            for extra in fixed.extra_modes:
                if extra != "gateway_fused_rest":  # the others: gRPC to their own gateway
                    calls[extra] = grpc_call(grpc_of[GATEWAY_OF_MODE[extra]], model)
            reference = await call_direct()
            for name, call in calls.items():
                np.testing.assert_allclose(
                    np.asarray(await call()), reference, rtol=1e-5, atol=1e-6, err_msg=name
                )
                for _ in range(fixed.warmup):
                    await call()

            async def measure_mode(name: str, level: int, requests: int) -> None:
                role = GATEWAY_OF_MODE.get(name)
                address = gateways[role].http_address if role else None
                before = scrape(address) if address else {}
                point = await run_load(calls[name], requests, level)
                run.points.setdefault(name, {}).setdefault(level, []).append(point)
                if address:
                    after = scrape(address)
                    acc = run.metrics.setdefault(f"{name}@{level}", {})
                    for key, value in after.items():
                        acc[key] = acc.get(key, 0.0) + value - before.get(key, 0.0)

            for repeat in range(fixed.repeats):
                for level, requests in zip(fixed.levels, fixed.requests, strict=True):
                    for gateway_side, baseline_side in PAIRS.values():
                        for name in alternated(gateway_side, baseline_side, repeat):
                            await measure_mode(name, level, requests)
                    for name in fixed.extra_modes:
                        await measure_mode(name, level, requests)
                    console.print(
                        f"repeat {repeat + 1}/{fixed.repeats} c={level:<3} "
                        + "  ".join(
                            f"{n} {run.points[n][level][-1].p50_ms:.2f}ms "
                            f"{run.points[n][level][-1].throughput_rps:.0f}/s"
                            for n in calls
                        )
                    )
            if fixed.interleaved_rounds:
                console.print(f"{fixed.interleaved_rounds} interleaved rounds at c=1")
                wanted = {m for pair in INTERLEAVED_PAIRS.values() for m in pair}
                run.interleaved = await interleave(
                    {name: call for name, call in calls.items() if name in wanted},
                    fixed.interleaved_rounds,
                )
            for channels in (direct, *grpc_of.values()):
                await channels.close()
            await rest.close()

        with sampler:
            uvloop.run(measure())
            run.py_spy = sample_with_py_spy(
                gateways["fused"],
                fixed.profile_seconds,
                max(fixed.levels),
                (model, in_name, x),
                workdir,
            )
    finally:
        for gateway in gateways.values():
            gateway.stop()
        triton.stop()

    low, top = str(min(fixed.levels)), str(max(fixed.levels))
    pairs = {
        pair: {
            str(level): summarise_pair(run.points[gw][level], run.points[base][level])
            for level in fixed.levels
        }
        for pair, (gw, base) in PAIRS.items()
    }
    machine = machine_facts()
    report: dict[str, Any] = {
        "benchmark": "gateway",
        "date": now_utc(),
        "profile_name": profile.value,
        "repeats": fixed.repeats,
        **headline(pairs, low, top),
        "pairs": pairs,
        "pair_sides": {
            pair: {"gateway": gw, "baseline": base} for pair, (gw, base) in PAIRS.items()
        },
        "modes": {
            name: {str(level): summarise_mode(points) for level, points in by_level.items()}
            for name, by_level in run.points.items()
        },
        "targets": TARGETS,
        "machine": machine,
        "conditions": {"load": sampler.summary(machine["cpus"])},
        "versions": versions,
        "setup": {
            "profile": asdict(fixed),
            "repository": "synthetic (braid_dev.synthetic)" if synthetic else str(repository),
            "path": catalog.original_path,
            "hops": [h.model for h in hops],
            "input_shape": in_shape,
            "order": "each pair's two sides alternate: gateway first in even repeats",
            "client": "tritonclient.grpc.aio / tritonclient.http.aio on uvloop, one process",
            "grpc_experiments": {
                # grpc core reads them at import: the client imported grpc with its defaults
                # (tritonclient first), each gateway with braid.dataplane's.
                "client": "grpc defaults",
                "gateway": GRPC_EXPERIMENTS,
            },
            "gateway_flags": {role: GATEWAY_FLAGS[role] for role in gateways},
        },
        "gateway_time_breakdown": {key: breakdown(acc) for key, acc in run.metrics.items()},
        "py_spy": run.py_spy or None,
        "interleaved_c1": summarise_interleaved(run.interleaved, fixed.interleaved_block)
        if run.interleaved
        else None,
    }
    report["targets_met"] = judge(report)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    plot(report, png)
    console.print(
        {k: report[k] for k in (*TARGETS, "overhead_vs_ensemble_p50_ms")}
        | {"load": report["conditions"]["load"], "out": str(out)}
    )


if __name__ == "__main__":
    typer.run(main)
