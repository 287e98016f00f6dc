"""The block runtime, onnxruntime against torch: per-block latency of the demo's models.

Every block of the demo's two providers (the local Fashion-MNIST CNN, untrained weights:
latency does not depend on them; the host's pretrained MNIST CNN) is run in-process at
batch 1 and at the serving batch (``MAX_BATCH_SIZE`` of the export, what the dynamic
batcher may fill) two ways, each on one intra-op thread as Triton's instances run it:
torch eager under ``inference_mode``, and the block's exported ONNX file in an onnxruntime
session set up as the Triton runner sets it up. Each point is the median of ``CALLS``
calls; ``REPEATS`` repeats alternate the order of the two runtimes, and the median of the
repeats is reported with its order-statistic interval. Written to
``results/block_runtime.json``; it also records the installed size of each runtime's package.

    python bench/block_runtime.py [--results results/block_runtime.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import torch

from braid.tooling.export import MAX_BATCH_SIZE
from braid.tooling.measure import serving_session
from braid.tooling.onnx_export import export_onnx
from braid.tooling.split import split_model
from braid.tooling.zoo import (
    FMNIST_PARTITION,
    HOST_MODEL,
    INPUT_SHAPE,
    LOCAL_MODEL,
    MNIST_PARTITION,
    fmnist_cnn,
    load_mnist_cnn,
)
from braid_dev.benchstats import LoadSampler, alternated, machine_facts, median_interval, now_utc

BATCHES = (1, MAX_BATCH_SIZE)
CALLS = 200
WARMUP = 20
REPEATS = 5


def _median_us(call: Callable[[], Any]) -> float:
    for _ in range(WARMUP):
        call()
    samples = []
    for _ in range(CALLS):
        start = time.perf_counter_ns()
        call()
        samples.append((time.perf_counter_ns() - start) / 1000.0)
    return float(statistics.median(samples))


def _package_mb(module: str) -> float:
    spec = importlib.util.find_spec(module)
    assert spec is not None
    assert spec.submodule_search_locations
    folder = next(iter(spec.submodule_search_locations))
    out = subprocess.run(["du", "-sk", folder], capture_output=True, text=True, check=True)
    return round(int(out.stdout.split()[0]) / 1024, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=Path("results/block_runtime.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    host, _ = load_mnist_cnn()
    blocks = [
        *split_model(fmnist_cnn().eval(), FMNIST_PARTITION, INPUT_SHAPE, LOCAL_MODEL),
        *split_model(host.eval(), MNIST_PARTITION, INPUT_SHAPE, HOST_MODEL),
    ]
    rows = []
    with tempfile.TemporaryDirectory() as tmp, LoadSampler() as load:
        for block in blocks:
            name = f"{block.model}.{block.name}"
            example = (torch.zeros((1, *block.input_shape)),)
            path = export_onnx(block.module, example, ["INPUT__0"], ["OUTPUT__0"], Path(tmp) / name)
            session = serving_session(path)
            row: dict[str, Any] = {"block": name, "input_shape": list(block.input_shape)}
            for batch in BATCHES:
                x = torch.rand(
                    (batch, *block.input_shape), generator=torch.Generator().manual_seed(0)
                )
                feeds = {"INPUT__0": x.numpy()}

                def run_torch(x: torch.Tensor = x, module: torch.nn.Module = block.module) -> Any:
                    with torch.inference_mode():
                        return module(x)

                def run_onnx(
                    feeds: dict[str, np.ndarray[Any, Any]] = feeds, session: Any = session
                ) -> Any:
                    return session.run(None, feeds)

                times: dict[str, list[float]] = {"torch": [], "onnxruntime": []}
                calls: dict[str, Callable[[], Any]] = {"torch": run_torch, "onnxruntime": run_onnx}
                for repeat in range(REPEATS):
                    for mode in alternated("torch", "onnxruntime", repeat):
                        times[mode].append(_median_us(calls[mode]))
                row[f"batch_{batch}"] = {
                    mode: median_interval(values).as_dict(1) for mode, values in times.items()
                }
                ratio = statistics.median(times["onnxruntime"]) / statistics.median(times["torch"])
                row[f"batch_{batch}"]["onnxruntime_over_torch"] = round(ratio, 3)
            rows.append(row)
            print(
                name,
                *(
                    f"b{b}: torch {row[f'batch_{b}']['torch']['median']} µs, "
                    f"ort {row[f'batch_{b}']['onnxruntime']['median']} µs"
                    for b in BATCHES
                ),
                sep="  ",
            )
    result = {
        "benchmark": "block_runtime",
        "date": now_utc(),
        "what": "per-block latency, in-process, one intra-op thread: torch eager "
        "(inference_mode) against the block's exported ONNX file in onnxruntime; median of "
        f"{CALLS} calls per repeat, {REPEATS} repeats alternating the order",
        "machine": {**machine_facts(), "load_during_run": load.summary()},
        "versions": {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__},
        "installed_package_mb": {
            "onnxruntime": _package_mb("onnxruntime"),
            "torch": _package_mb("torch"),
        },
        "batches": list(BATCHES),
        "blocks": rows,
    }
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
