"""What one hop costs on each transport a Python gateway could call Triton with.

The gateway's hop-by-hop overhead over a client calling the same hops itself is, per request,
one extra round trip (client -> gateway) less what the gateway saves on each hop by forwarding
bytes instead of building ``InferInput`` / ``InferResult`` objects (``bench/gateway.py``). This
benchmark asks how much more a cheaper hop transport would save: on one tritonserver serving
the synthetic pair's original path (four blocks), a client runs the four hops in sequence at
concurrency 1 over each transport, each in its own process (grpc reads its transport switches
once, at import):

- ``grpc_aio_pool_stream``: what the gateway does (``braid.dataplane``'s grpc transport
  switches, its ``TritonPool``: tritonclient's generated stub on ``grpc.aio`` channels with
  the gateway's channel options, each hop a message on the pool's ``ModelStreamInfer``
  streams, each answer's raw bytes forwarded);
- ``grpc_aio_stub``: the same pool with ``streams=False``, one unary call per hop (the
  gateway before its streams, and ``braid gateway --no-streams``);
- ``grpc_aio_stream``: one bare stream on the same options, the caller writing its request
  and reading its own answer (no multiplexing: the floor of a stream);
- ``grpc_sync_blocking``: the same stub on a synchronous channel with the same options, the
  calling thread blocked (what a thread-per-request gateway would pay, before handing work
  between threads);
- ``grpc_sync_future``: the synchronous stub's ``future()``, its completion handed to the
  event loop (``call_soon_threadsafe``): the sync stack under an asyncio gateway;
- ``rest_aiohttp``: Triton's REST endpoint with the binary-tensor extension, over aiohttp
  (the library ``tritonclient.http.aio`` uses);
- ``tritonclient_grpc_aio``: ``tritonclient.grpc.aio``'s ``infer`` on grpc's defaults, as a
  user calls Triton (the direct side of ``bench/gateway.py``).

Every transport checks its answer against the first's. ``REPEATS`` repeats, the order of the
transports rotating; per repeat each yields p50 and p99 latency of a four-hop sequence and its
process's CPU per sequence (``time.process_time``). Medians over repeats with distribution-free
95 % intervals (``braid_dev.benchstats``), and each transport's p50 minus the gateway's
transport's p50 in the same repeat. Machine facts, Triton's ``/v2`` metadata and the load
during the run are read, never typed.

    python bench/hop_transport.py             # writes results/hop_transport.json
"""

from __future__ import annotations

import asyncio
import importlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

ROOT = Path(__file__).resolve().parents[1]
console = Console()

REPEATS = 5
SEQUENCES = 1500
"""Measured four-hop sequences per transport and repeat."""
WARMUP = 150
TRANSPORTS = (
    "grpc_aio_pool_stream",
    "grpc_aio_stub",
    "grpc_aio_stream",
    "grpc_sync_blocking",
    "grpc_sync_future",
    "rest_aiohttp",
    "tritonclient_grpc_aio",
)
GATEWAY_TRANSPORT = "grpc_aio_pool_stream"


def _sequence(
    transport: str, setup: dict[str, Any]
) -> tuple[Callable[[], Awaitable[bytes]], Callable[[], Awaitable[None]]]:
    """A coroutine function running the four hops over ``transport``, and its closer."""
    import numpy as np

    hops: list[list[Any]] = setup["hops"]
    first = np.random.default_rng(0).random([1, *hops[0][3]]).astype(np.float32)

    if transport == "tritonclient_grpc_aio":
        import tritonclient.grpc.aio as grpcaio

        client = grpcaio.InferenceServerClient(setup["grpc"])

        async def tritonclient_run() -> bytes:
            data: Any = first
            for model, name, output, _ in hops:
                tensor = grpcaio.InferInput(name, list(data.shape), "FP32")
                tensor.set_data_from_numpy(data)
                outputs = [grpcaio.InferRequestedOutput(output)]
                data = (await client.infer(model, [tensor], outputs=outputs)).as_numpy(output)
            return bytes(np.ascontiguousarray(data).tobytes())

        return tritonclient_run, client.close

    if transport == "rest_aiohttp":
        import aiohttp

        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        base = f"http://{setup['http']}/v2/models"

        async def rest_run() -> bytes:
            data, shape = first.tobytes(), list(first.shape)
            for model, name, output, _ in hops:
                header = json.dumps(
                    {
                        "inputs": [
                            {
                                "name": name,
                                "shape": shape,
                                "datatype": "FP32",
                                "parameters": {"binary_data_size": len(data)},
                            }
                        ],
                        "outputs": [{"name": output, "parameters": {"binary_data": True}}],
                    }
                ).encode()
                headers = {"Inference-Header-Content-Length": str(len(header))}
                async with session.post(
                    f"{base}/{model}/infer", data=header + data, headers=headers
                ) as answer:
                    body = await answer.read()
                    size = int(answer.headers["Inference-Header-Content-Length"])
                data, shape = body[size:], json.loads(body[:size])["outputs"][0]["shape"]
            return data

        return rest_run, session.close

    # The gateway's grpc transport switches, which must be set before grpc is imported.
    importlib.import_module("braid.dataplane")
    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    from braid.dataplane.pool import CHANNEL_OPTIONS, TritonPool

    def request(model: str, name: str, output: str, shape: list[int], data: bytes) -> Any:
        proto = service_pb2.ModelInferRequest(model_name=model)
        tensor = proto.inputs.add()
        tensor.name, tensor.datatype = name, "FP32"
        tensor.shape.extend(shape)
        proto.outputs.add().name = output
        proto.raw_input_contents.append(data)
        return proto

    if transport in ("grpc_aio_stub", "grpc_aio_pool_stream"):
        # The gateway's own pool: its channel options and its call (``TritonPool.infer``),
        # unary calls or (the gateway's default) messages on its streams.
        pool = TritonPool(streams=transport == "grpc_aio_pool_stream")
        address = setup["grpc"]

        async def aio_run() -> bytes:
            data, shape = first.tobytes(), list(first.shape)
            for model, name, output, _ in hops:
                proto = request(model, name, output, shape, data)
                answer = await pool.infer(address, proto, None)
                data, shape = answer.raw_output_contents[0], list(answer.outputs[0].shape)
            return bytes(data)

        return aio_run, pool.close

    if transport == "grpc_aio_stream":
        # One long-lived ModelStreamInfer stream on the same options: a message per hop
        # instead of a call per hop (no call set-up, no HTTP/2 stream per request).
        channel = grpc.aio.insecure_channel(setup["grpc"], options=CHANNEL_OPTIONS)
        stream = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelStreamInfer()

        async def stream_run() -> bytes:
            data, shape = first.tobytes(), list(first.shape)
            for model, name, output, _ in hops:
                await stream.write(request(model, name, output, shape, data))
                reply = await stream.read()
                if reply.error_message:
                    raise RuntimeError(reply.error_message)
                answer = reply.infer_response
                data, shape = answer.raw_output_contents[0], list(answer.outputs[0].shape)
            return bytes(data)

        async def close_stream() -> None:
            await stream.done_writing()
            await channel.close()

        return stream_run, close_stream

    # The synchronous stack on the gateway's channel options, so only the stack differs.
    sync_channel = grpc.insecure_channel(setup["grpc"], options=CHANNEL_OPTIONS)
    sync_stub = service_pb2_grpc.GRPCInferenceServiceStub(sync_channel)

    async def close_sync() -> None:
        sync_channel.close()

    if transport == "grpc_sync_blocking":

        async def blocking_run() -> bytes:
            data, shape = first.tobytes(), list(first.shape)
            for model, name, output, _ in hops:
                answer = sync_stub.ModelInfer(request(model, name, output, shape, data))
                data, shape = answer.raw_output_contents[0], list(answer.outputs[0].shape)
            return bytes(data)

        return blocking_run, close_sync

    assert transport == "grpc_sync_future", transport
    loop = asyncio.get_running_loop()

    def settle(future: asyncio.Future[Any], call: Any) -> None:
        error = call.exception()
        if error is None:
            future.set_result(call.result())
        else:
            future.set_exception(error)

    def call_future(proto: Any) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = loop.create_future()
        call = sync_stub.ModelInfer.future(proto)
        call.add_done_callback(lambda done: loop.call_soon_threadsafe(settle, future, done))
        return future

    async def future_run() -> bytes:
        data, shape = first.tobytes(), list(first.shape)
        for model, name, output, _ in hops:
            answer = await call_future(request(model, name, output, shape, data))
            data, shape = answer.raw_output_contents[0], list(answer.outputs[0].shape)
        return bytes(data)

    return future_run, close_sync


def worker(transport: str, setup_json: str) -> None:
    """One transport, one repeat: prints its figures (and its answer's digest) as JSON."""
    import hashlib

    import uvloop

    setup = json.loads(setup_json)

    async def measure() -> dict[str, Any]:
        run, close = _sequence(transport, setup)
        answer = await run()
        for _ in range(WARMUP):
            await run()
        latencies = []
        cpu = time.process_time()
        for _ in range(SEQUENCES):
            start = time.perf_counter()
            await run()
            latencies.append(time.perf_counter() - start)
        cpu = time.process_time() - cpu
        await close()
        latencies.sort()
        return {
            "p50_ms": latencies[len(latencies) // 2] * 1e3,
            "p99_ms": latencies[int(len(latencies) * 0.99)] * 1e3,
            "cpu_us_per_sequence": cpu / SEQUENCES * 1e6,
            "answer_sha256": hashlib.sha256(answer).hexdigest(),
        }

    print(json.dumps(uvloop.run(measure())))


def main(
    out: Annotated[Path, typer.Option(help="Results file.")] = ROOT / "results/hop_transport.json",
) -> None:
    from braid.dataplane.service import read_catalog
    from braid_dev.benchstats import (
        LoadSampler,
        machine_facts,
        median_interval,
        now_utc,
        server_metadata,
    )
    from braid_dev.local_runtime import make_tier_views
    from braid_dev.stack.triton import start_triton
    from braid_dev.synthetic import build_synthetic_repository

    work = Path(tempfile.mkdtemp(prefix="braid-bench-hop-transport-"))
    repo = build_synthetic_repository(work / "repo").repository
    catalog = read_catalog(repo / "catalog.json")
    original = catalog.path(catalog.original_path)
    view = make_tier_views(repo, catalog, work / "views", segments=False)["local"]
    triton = start_triton(view, workdir=work / "triton", name="bench-hop-transport")
    setup = {
        "grpc": triton.grpc_address,
        "http": triton.http_address,
        "hops": [
            [h.triton_model, h.input.name, h.output.name, list(h.input.shape)]
            for h in original.hops
        ],
    }
    samples: dict[str, list[dict[str, Any]]] = {t: [] for t in TRANSPORTS}
    try:
        versions = {"triton": server_metadata(triton.http_address)}
        with LoadSampler(every_s=2.0) as load:
            for repeat in range(REPEATS):
                turn = repeat % len(TRANSPORTS)
                for transport in TRANSPORTS[turn:] + TRANSPORTS[:turn]:
                    done = subprocess.run(
                        [sys.executable, __file__, "worker", transport, json.dumps(setup)],
                        check=True,
                        capture_output=True,
                        text=True,
                    )
                    samples[transport].append(json.loads(done.stdout.strip().splitlines()[-1]))
                    console.print(f"repeat {repeat + 1} {transport}: {samples[transport][-1]}")
    finally:
        triton.stop()
    digests = {s["answer_sha256"] for rows in samples.values() for s in rows}
    if len(digests) != 1:
        raise SystemExit(f"the transports disagree on the answer: {sorted(digests)}")

    def summary(transport: str) -> dict[str, Any]:
        rows = samples[transport]
        gateway = samples[GATEWAY_TRANSPORT]
        return {
            "p50_ms": median_interval([r["p50_ms"] for r in rows]).as_dict(3),
            "p99_ms": median_interval([r["p99_ms"] for r in rows]).as_dict(3),
            "cpu_us_per_sequence": median_interval(
                [r["cpu_us_per_sequence"] for r in rows]
            ).as_dict(1),
            f"p50_minus_{GATEWAY_TRANSPORT}_ms": median_interval(
                [r["p50_ms"] - g["p50_ms"] for r, g in zip(rows, gateway, strict=True)]
            ).as_dict(3),
        }

    result = {
        "benchmark": "hop_transport",
        "date": now_utc(),
        "hops_per_sequence": len(setup["hops"]),
        "path": catalog.original_path,
        "concurrency": 1,
        "repeats": REPEATS,
        "sequences_per_repeat": SEQUENCES,
        "gateway_transport": GATEWAY_TRANSPORT,
        "transports": {t: summary(t) for t in TRANSPORTS},
        "per_hop_p50_ms_median": {
            t: round(statistics.median(r["p50_ms"] for r in samples[t]) / len(setup["hops"]), 3)
            for t in TRANSPORTS
        },
        "samples": samples,
        "servers": versions,
        "machine": machine_facts(),
        "conditions": {"load": load.summary()},
        "command": "python bench/hop_transport.py",
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    console.print_json(json.dumps({k: v for k, v in result.items() if k != "samples"}))


if __name__ == "__main__":
    if sys.argv[1:2] == ["worker"]:
        del sys.argv[1]
        typer.run(worker)
    else:
        typer.run(main)
