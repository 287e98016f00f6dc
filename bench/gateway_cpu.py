"""The gateway's CPU per request, by thread: a figure a shared machine's load does not move.

On one tritonserver serving the synthetic pair's original path, the gateway runs as users run
it (``braid gateway`` in its own process) in two modes: hop by hop (``--no-fuse``: one Triton
call per hop, as a cluster runs Blocks in separate pods) and fused (its hops as one ensemble
call). A client sends ``REQUESTS`` requests at concurrency 1; the gateway process's CPU time
(user + system, per thread, from ``/proc``: ``braid_dev.gateway_profile.thread_cpu_s``) over
them, divided by their number, is its CPU cost per request. Triton's CPU per request is read
the same way, and the direct client (the same hops called by the client itself) is run too,
so Triton's share of the work is seen on both sides. Each repeat runs the modes in an order
that rotates, ``REPEATS`` times; medians with distribution-free intervals
(``braid_dev.benchstats.median_interval``). Wall-clock p50s are recorded beside, with the
load average: on a busy machine they are the others' as much as the gateway's.

    python bench/gateway_cpu.py             # writes results/gateway_cpu.json
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import tritonclient.grpc.aio as grpcaio
import typer
import uvloop
from rich.console import Console

from braid.api.routing import single_path_table
from braid.dataplane.routing import write_routing_table
from braid.dataplane.service import read_catalog
from braid_dev.benchstats import (
    LoadSampler,
    machine_facts,
    median_interval,
    now_utc,
    server_metadata,
)
from braid_dev.gateway_profile import thread_cpu_s
from braid_dev.local_runtime import make_tier_views
from braid_dev.stack.gateway_process import GatewayProcess, start_gateway_process
from braid_dev.stack.triton import start_triton
from braid_dev.synthetic import build_synthetic_repository

ROOT = Path(__file__).resolve().parents[1]
console = Console()

REPEATS = 5
REQUESTS = 1000
WARMUP = 200
MODES = ("gateway_hop_by_hop", "gateway_fused", "direct")
FLAGS = {"gateway_hop_by_hop": ["--no-fuse"], "gateway_fused": []}


def cpu_us_per_request(
    before: dict[str, float], after: dict[str, float], n: int
) -> dict[str, float]:
    """Per thread name: CPU µs per request between two ``thread_cpu_s`` readings."""
    return {
        name: round((after[name] - before.get(name, 0.0)) / n * 1e6, 1)
        for name in sorted(after)
        if after[name] > before.get(name, 0.0)
    }


def main(
    out: Annotated[Path, typer.Option(help="Results file.")] = ROOT / "results/gateway_cpu.json",
) -> None:
    work = Path(tempfile.mkdtemp(prefix="braid-bench-gateway-cpu-"))
    repo = build_synthetic_repository(work / "repo").repository
    catalog = read_catalog(repo / "catalog.json")
    original = catalog.path(catalog.original_path)
    view = make_tier_views(repo, catalog, work / "views")["local"]
    routing = work / "routing.json"
    write_routing_table(single_path_table(catalog.local_model, catalog.original_path), routing)
    x = np.random.default_rng(0).random([1, *original.hops[0].input.shape]).astype(np.float32)
    in_name, out_name = original.hops[0].input.name, original.hops[-1].output.name
    hops = [(h.triton_model, h.input.name, h.output.name) for h in original.hops]
    triton = start_triton(view, workdir=work / "triton", name="bench-cpu")
    gateways: dict[str, GatewayProcess] = {}
    samples: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}
    machine = machine_facts()
    try:
        for mode, flags in FLAGS.items():
            gateways[mode] = start_gateway_process(
                repo / "catalog.json", {"local": triton.grpc_address}, routing, extra=flags
            )
        versions = {"triton": server_metadata(triton.http_address)}

        async def measure() -> None:
            triton_client = grpcaio.InferenceServerClient(triton.grpc_address)
            clients = {
                m: grpcaio.InferenceServerClient(g.grpc_address) for m, g in gateways.items()
            }

            def via(mode: str) -> Callable[[], Awaitable[object]]:
                async def call() -> object:
                    tensor = grpcaio.InferInput(in_name, list(x.shape), "FP32")
                    tensor.set_data_from_numpy(x)
                    answer = await clients[mode].infer(catalog.local_model, [tensor])
                    return answer.as_numpy(out_name)

                return call

            async def direct() -> object:
                data: Any = x
                for model, i, o in hops:
                    tensor = grpcaio.InferInput(i, list(data.shape), "FP32")
                    tensor.set_data_from_numpy(data)
                    outputs = [grpcaio.InferRequestedOutput(o)]
                    answer = await triton_client.infer(model, [tensor], outputs=outputs)
                    data = answer.as_numpy(o)
                return data

            calls = {m: via(m) for m in FLAGS} | {"direct": direct}
            reference = np.asarray(await direct())
            for mode, call in calls.items():
                result = np.asarray(await call())
                np.testing.assert_allclose(result, reference, rtol=1e-5, atol=1e-6, err_msg=mode)
                for _ in range(WARMUP):
                    await call()
            for repeat in range(REPEATS):
                order = MODES[repeat % len(MODES) :] + MODES[: repeat % len(MODES)]
                for mode in order:
                    pid = gateways[mode].process.pid if mode in gateways else None
                    gw0 = thread_cpu_s(pid) if pid else {}
                    tr0 = thread_cpu_s(triton.process.pid)
                    latencies = []
                    for _ in range(REQUESTS):
                        start = time.perf_counter()
                        await calls[mode]()
                        latencies.append(time.perf_counter() - start)
                    tr = cpu_us_per_request(tr0, thread_cpu_s(triton.process.pid), REQUESTS)
                    gw = cpu_us_per_request(gw0, thread_cpu_s(pid), REQUESTS) if pid else {}
                    samples[mode].append(
                        {
                            "gateway_cpu_us": sum(gw.values()),
                            "gateway_threads_cpu_us": gw,
                            "triton_cpu_us": sum(tr.values()),
                            "wall_p50_ms": statistics.median(latencies) * 1e3,
                        }
                    )
                    console.print(f"repeat {repeat + 1} {mode}: {samples[mode][-1]}")
            await triton_client.close()
            for client in clients.values():
                await client.close()

        with LoadSampler(every_s=2.0) as load:
            uvloop.run(measure())
    finally:
        for gateway in gateways.values():
            gateway.stop()
        triton.stop()

    def summary(mode: str) -> dict[str, Any]:
        rows = samples[mode]
        threads = sorted({t for r in rows for t in r["gateway_threads_cpu_us"]})
        return {
            "gateway_cpu_us_per_request": median_interval(
                [r["gateway_cpu_us"] for r in rows]
            ).as_dict(1),
            "gateway_cpu_us_per_request_by_thread_median": {
                t: round(
                    statistics.median(r["gateway_threads_cpu_us"].get(t, 0.0) for r in rows), 1
                )
                for t in threads
            },
            "triton_cpu_us_per_request": median_interval(
                [r["triton_cpu_us"] for r in rows]
            ).as_dict(1),
            "wall_p50_ms_not_judged_on_a_busy_machine": median_interval(
                [r["wall_p50_ms"] for r in rows]
            ).as_dict(3),
        }

    result = {
        "gateway_hop_by_hop_cpu_us_per_request": round(
            statistics.median(r["gateway_cpu_us"] for r in samples["gateway_hop_by_hop"]), 1
        ),
        "gateway_fused_cpu_us_per_request": round(
            statistics.median(r["gateway_cpu_us"] for r in samples["gateway_fused"]), 1
        ),
        "path": catalog.original_path,
        "hops": len(hops),
        "concurrency": 1,
        "repeats": REPEATS,
        "requests_per_repeat": REQUESTS,
        "clock": "CPU time (user + system) of each process's threads from /proc/<pid>/task, "
        "10 ms ticks, over REQUESTS requests",
        "modes": {m: summary(m) for m in MODES},
        "samples": samples,
        "servers": versions,
        "machine": machine,
        "load_during_run": load.summary(),
        "finished": now_utc(),
        "command": "python bench/gateway_cpu.py",
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    console.print_json(json.dumps({k: v for k, v in result.items() if k != "samples"}))


if __name__ == "__main__":
    typer.run(main)
