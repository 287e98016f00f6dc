"""Measuring a build's paths: test accuracy (with adaptive-exit statistics) and module times.

Times are taken on the serving runtime: each module is exported to ONNX exactly as the
Triton repository holds it and timed in an onnxruntime session set up as the runner sets
it up (one intra-op thread), so the catalog's ``compute_us`` is what a block costs served.

The catalog is made of these figures, so a figure that is missing is an error of the build,
never a zero: a module without a measured time would look free to the path controller.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from braid.tooling import train as training
from braid.tooling.data import Split
from braid.tooling.onnx_export import export_onnx
from braid.tooling.paths import PathPlan, block_model
from braid.tooling.progress import Progress, stage
from braid.tooling.split import Block, Shape


class MissingTimingError(KeyError):
    """The build did not measure a module the catalog lists."""


def compute_us(times: Mapping[str, float], model: str) -> float:
    """The measured time of ``model`` in µs, rounded as the catalog shows it."""
    if model not in times:
        raise MissingTimingError(
            f"no compute time was measured for {model} (measured: {len(times)} modules)"
        )
    return round(times[model], 2)


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(1) == labels).float().mean())


def local_prefix(plan: PathPlan, local_blocks: Sequence[Block]) -> int:
    """How many leading hops are the original local blocks B0, B1, ... (cacheable prefix)."""
    count = 0
    for hop, block in zip(plan.hops, local_blocks, strict=False):
        if hop.name != block_model(block):
            break
        count += 1
    return count


EXIT_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)


def evaluate_paths(
    plans: Sequence[PathPlan],
    modules: Mapping[str, nn.Module],
    local_blocks: Sequence[Block],
    test: Split,
    progress: Progress,
) -> tuple[dict[str, float], dict[str, list[dict[str, float]]]]:
    """Test accuracy of every path, and for exit paths the adaptive-exit statistics.

    The exit statistics hold the fraction exiting and the accuracy per threshold (the
    samples that stay take the rest of the original path); expected times are added later
    from the measured hop times.
    """
    acc: dict[str, float] = {}
    exits: dict[str, list[dict[str, float]]] = {}
    with stage(progress, f"evaluate {len(plans)} paths", len(plans) + 1) as step:
        local_outputs = training.block_outputs(local_blocks, test.images)
        original_ok = local_outputs[-1].argmax(1) == test.labels
        step()
        for plan in plans:
            shared = local_prefix(plan, local_blocks)
            x = local_outputs[shared - 1] if shared > 0 else test.images
            rest = [modules[h.name] for h in plan.hops[shared:]]
            logits = training.run_batched(partial(training.run_modules, rest), x) if rest else x
            acc[plan.id] = accuracy(logits, test.labels)
            if plan.kind == "exit":
                conf = torch.softmax(logits, dim=1).max(1).values
                exit_ok = logits.argmax(1) == test.labels
                exits[plan.id] = [
                    {
                        "confidence": t,
                        "exit_rate": float((conf >= t).float().mean()),
                        "accuracy": float(
                            torch.where(conf >= t, exit_ok, original_ok).float().mean()
                        ),
                    }
                    for t in EXIT_THRESHOLDS
                ]
            step()
    return acc, exits


def serving_session(path: Path, intra_op_threads: int = 1) -> ort.InferenceSession:
    """An onnxruntime CPU session configured as the Triton runner configures its own."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def time_session(session: ort.InferenceSession, x: np.ndarray[Any, Any], repeats: int) -> float:
    """Median wall time of ``session.run`` on ``x``, µs (after a short warm-up)."""
    feeds = {session.get_inputs()[0].name: x}
    samples: list[float] = []
    for _ in range(max(3, repeats // 10)):
        session.run(None, feeds)
    for _ in range(repeats):
        t0 = time.perf_counter_ns()
        session.run(None, feeds)
        samples.append((time.perf_counter_ns() - t0) / 1000.0)
    return float(statistics.median(samples))


def measure_us(module: nn.Module, in_shape: Shape, repeats: int) -> float:
    """Median wall time of one batch-1 call of ``module`` served by onnxruntime, µs."""
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(
            module,
            (torch.zeros((1, *in_shape)),),
            ["INPUT__0"],
            ["OUTPUT__0"],
            Path(tmp) / "m.onnx",
        )
        session = serving_session(path)
    x = np.random.default_rng(0).random((1, *in_shape), dtype=np.float32)
    return time_session(session, x, repeats)


def time_modules(
    modules: Mapping[str, nn.Module],
    shapes: Mapping[str, tuple[Shape, Shape]],
    repeats: int,
    used: Sequence[str],
    progress: Progress,
) -> dict[str, float]:
    """``measure_us`` of each module named in ``used`` (onnxruntime, one intra-op thread)."""
    out: dict[str, float] = {}
    with stage(progress, f"time {len(used)} modules", len(used)) as step:
        for name in used:
            out[name] = measure_us(modules[name], shapes[name][0], repeats)
            step()
    return out
