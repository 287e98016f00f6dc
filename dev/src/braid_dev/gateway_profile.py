"""Where a gateway process spends its CPU under load: ``py-spy record --native`` leaf frames,
grouped by area (transport syscalls, grpc core, protobuf, braid's own Python, the event
loop). Used by ``bench/gateway.py`` when ``py-spy`` is on PATH.

``thread_cpu_s`` reads a process's CPU time per thread from ``/proc`` (user + system, by
thread name): CPU seconds a process spent over N requests is its cost per request whatever
else runs on the machine, where wall-clock latency on a shared machine is mostly the others'.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import tritonclient.grpc.aio as grpcaio
import uvloop

from braid_dev.stack.gateway_process import GatewayProcess


def thread_cpu_s(pid: int) -> dict[str, float]:
    """CPU seconds (user + system) each live thread of ``pid`` has used, summed by name."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    task = Path(f"/proc/{pid}/task")
    for tid in os.listdir(task):
        try:
            stat = (task / tid / "stat").read_text()
            name = (task / tid / "comm").read_text().strip()
        except OSError:  # the thread ended meanwhile
            continue
        # Fields after the ")" closing the command: utime and stime are the 12th and 13th.
        fields = stat.rsplit(")", 1)[1].split()
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def classify_frame(frame: str) -> str:
    """The area of a py-spy frame (``function (file:line)`` or ``function (library)``)."""
    name, _, where = frame.partition(" (")
    if name in ("sendmsg", "write", "writev", "recvmsg", "recv", "read", "send"):
        return "socket syscalls (gRPC / HTTP transport)"
    if name.startswith("epoll") or name in ("poll", "syscall", "futex"):
        return "waiting in epoll / futex"
    if "braid/dataplane" in where:
        return "braid.dataplane (Python)"
    if "_message" in where or "upb" in name.lower():
        return "protobuf (upb)"
    if "grpc" in where or "cygrpc" in where or "grpc" in name:
        return "grpc (Cython / core)"
    if "prometheus_client" in where:
        return "prometheus_client"
    if any(x in where for x in ("uvicorn", "starlette", "fastapi", "httptools")):
        return "REST stack"
    if "asyncio" in where or "loop.c" in where or "uvloop" in where:
        return "event loop"
    if "numpy" in where:
        return "numpy"
    if where.endswith(".py") or ".py:" in where:
        return "other Python"
    return "other native (interpreter, libc, grpc core)"


def summarize_py_spy(raw: Path) -> dict[str, Any]:
    """Leaf-frame shares of a ``py-spy record --native -f raw`` file, by area and function."""
    areas: dict[str, int] = {}
    leaves: dict[str, int] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        leaf = stack.split(";")[-1]
        area = classify_frame(leaf)
        areas[area] = areas.get(area, 0) + n
        key = leaf.split(" (")[0] + " [" + area + "]"
        leaves[key] = leaves.get(key, 0) + n
    if not total:
        return {}
    top = sorted(leaves.items(), key=lambda kv: -kv[1])[:15]
    return {
        "samples": total,
        "by_area_share": {
            k: round(v / total, 3) for k, v in sorted(areas.items(), key=lambda kv: -kv[1])
        },
        "top_leaf_functions_share": {k: round(v / total, 3) for k, v in top},
    }


def sample_with_py_spy(
    gateway: GatewayProcess,
    seconds: float,
    concurrency: int,
    request: tuple[str, str, npt.NDArray[np.float32]],
    workdir: Path,
) -> dict[str, Any]:
    """py-spy (when on PATH) on ``gateway`` for ``seconds`` of load at ``concurrency``."""
    spy = shutil.which("py-spy")
    if not spy or seconds <= 0:
        return {}
    raw = workdir / "gateway.spy.txt"
    sampler = subprocess.Popen(
        [spy, "record", "--native", "-r", "100", "-d", str(int(seconds)),
         "-f", "raw", "-o", str(raw), "-p", str(gateway.process.pid)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip

    model, input_name, x = request

    async def load() -> None:
        client = grpcaio.InferenceServerClient(gateway.grpc_address)
        end = time.perf_counter() + seconds + 1

        async def worker() -> None:
            while time.perf_counter() < end:
                tensor = grpcaio.InferInput(input_name, list(x.shape), "FP32")
                tensor.set_data_from_numpy(x)
                await client.infer(model, [tensor])

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        await client.close()

    uvloop.run(load())
    sampler.wait(60)
    summary = summarize_py_spy(raw) if raw.exists() else {}
    summary["how"] = (
        f"py-spy record --native at 100 Hz for {seconds:g} s of fused gateway gRPC load at "
        f"concurrency {concurrency}; shares of leaf frames"
    )
    return summary
