"""The GPU check: braid's block runtime in a real tritonserver, KIND_GPU against KIND_CPU,
and the gateway in front of it. Run by ``hack/gpu-check.sh run`` (see there).

Two parts, each timed on the same machine in one run:
1. **Block runtime.** A ResNet-style chain of four ONNX blocks (onnxruntime) at 3x224x224 is written
   twice as a Triton repository through braid's exporter (the configs braid renders for a
   Block, once with ``KIND_GPU``, once with ``KIND_CPU``), each served by one tritonserver
   (the nvidia-pytriton build, CUDA-enabled). Every block is called over gRPC at serving
   batch sizes; per block and batch size the median and p90 latency are recorded.
2. **Gateway.** braid's gateway (``python -m braid.cli gateway``) in front of the KIND_GPU
   server runs the original path hop by hop; its latency is compared with the same hops
   called directly.

``--cpu-only`` runs both parts without a GPU (KIND_CPU twice) so the script itself is
exercised on machines without one; the JSON then says ``gpu: false``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "dev" / "src")]

from braid.api.common import TensorSpec  # noqa: E402
from braid.tooling.triton_repository import write_onnx_model  # noqa: E402
from braid_dev.stack.ports import free_ports  # noqa: E402
from braid_dev.stack.triton import start_triton  # noqa: E402

BATCH_SIZES = (1, 8, 32)
CALLS = 30
WARMUP = 5
# --cpu-only exercises the script on a 2-core machine: fewer, smaller points (fixed here,
# before any run, like the GPU ones).
CPU_ONLY_BATCH_SIZES = (1, 4)
CPU_ONLY_CALLS = 8


def _stage(cin: int, cout: int, stride: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def resnet_blocks() -> list[tuple[nn.Module, tuple[int, ...], tuple[int, ...]]]:
    """Four blocks of a ResNet-18-sized network (random weights: timing needs no training)."""
    stem = nn.Sequential(
        nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False),
        nn.BatchNorm2d(64),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, stride=2, padding=1),
        _stage(64, 64, 1),
    )
    blocks = [stem, _stage(64, 128, 2), _stage(128, 256, 2), _stage(256, 512, 2)]
    shapes = [(3, 224, 224), (64, 56, 56), (128, 28, 28), (256, 14, 14), (512, 7, 7)]
    return [(b.eval(), shapes[i], shapes[i + 1]) for i, b in enumerate(blocks)]


def write_repository(out: Path, kind: str, max_batch: int) -> list[str]:
    names = []
    for i, (module, inp, outp) in enumerate(resnet_blocks()):
        name = f"rn.b{i}"
        write_onnx_model(
            out,
            name,
            module,
            inputs=[TensorSpec(name="INPUT__0", datatype="FP32", shape=list(inp))],
            outputs=[TensorSpec(name="OUTPUT__0", datatype="FP32", shape=list(outp))],
            max_batch_size=max_batch,
            instance_kind=kind,
            example_inputs=(torch.zeros((1, *inp)),),
        )
        names.append(name)
    return names


def _summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(ordered) * 1e3, 3),
        "p90_ms": round(ordered[int(0.9 * (len(ordered) - 1))] * 1e3, 3),
        "calls": len(ordered),
    }


def time_blocks(
    grpc_url: str, names: list[str], batch_sizes: tuple[int, ...], calls: int
) -> dict[str, dict[str, Any]]:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(grpc_url)
    shapes = {f"rn.b{i}": inp for i, (_, inp, _) in enumerate(resnet_blocks())}
    results: dict[str, dict[str, Any]] = {}
    for name in names:
        per_batch: dict[str, Any] = {}
        for batch in batch_sizes:
            data = np.random.default_rng(0).standard_normal((batch, *shapes[name]), np.float32)
            tensor = grpcclient.InferInput("INPUT__0", list(data.shape), "FP32")
            tensor.set_data_from_numpy(data)
            samples = []
            for i in range(WARMUP + calls):
                start = time.perf_counter()
                client.infer(name, [tensor])
                if i >= WARMUP:
                    samples.append(time.perf_counter() - start)
            per_batch[str(batch)] = _summary(samples)
        results[name] = per_batch
    client.close()
    return results


def gateway_vs_direct(kind: str, work: Path, calls: int) -> dict[str, Any]:
    """braid's gateway (its CLI, as the chart runs it) on the synthetic pair's original path,
    hop by hop, against the same hops called directly; both servers' models on ``kind``."""
    import tritonclient.grpc as grpcclient

    from braid_dev import synthetic

    built = synthetic.build_synthetic_repository(work / "repository", instance_kind=kind)
    path = next(p for p in built.catalog.paths if p.id == synthetic.ORIGINAL)
    hops = [hop.triton_model for hop in path.hops]
    server = start_triton(built.repository, workdir=work / "server", name=f"gw-{kind.lower()}")
    http_port, grpc_port = free_ports(2)
    src = os.pathsep.join([str(ROOT / "src"), str(ROOT / "dev" / "src")])
    with (work / "gateway.log").open("wb") as log:
        gateway = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "braid.cli",
                "gateway",
                f"--catalog={built.repository / synthetic.CATALOG_FILE}",
                f"--endpoint=local={server.grpc_address}",
                f"--endpoint=host={server.grpc_address}",
                f"--http-port={http_port}",
                f"--grpc-port={grpc_port}",
                "--no-fuse",
            ],
            env={**os.environ, "PYTHONPATH": src},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        via = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}")
        direct = grpcclient.InferenceServerClient(server.grpc_address)
        deadline = time.monotonic() + 120
        while not _ready(via, synthetic.LOCAL):
            if time.monotonic() > deadline or gateway.poll() is not None:
                raise RuntimeError(f"the gateway did not come up: see {work / 'gateway.log'}")
            time.sleep(0.5)
        data = np.random.default_rng(0).standard_normal((1, *synthetic.INPUT_SHAPE), np.float32)
        samples: dict[str, list[float]] = {"direct_hops": [], "gateway_hop_by_hop": []}
        for mode in ("direct_hops", "gateway_hop_by_hop") * 2:  # alternated
            for i in range(WARMUP + calls):
                start = time.perf_counter()
                if mode == "gateway_hop_by_hop":
                    via.infer(synthetic.LOCAL, [_input(grpcclient, data)])
                else:
                    x = data
                    for name in hops:
                        x = direct.infer(name, [_input(grpcclient, x)]).as_numpy("OUTPUT__0")
                if i >= WARMUP:
                    samples[mode].append(time.perf_counter() - start)
        return {"hops": hops, **{mode: _summary(s) for mode, s in samples.items()}}
    finally:
        gateway.terminate()
        gateway.wait(10)
        server.stop()


def _ready(client: Any, model: str) -> bool:
    try:
        return bool(client.is_model_ready(model))
    except Exception:
        return False


def _input(grpcclient: Any, x: np.ndarray[Any, Any]) -> Any:
    tensor = grpcclient.InferInput("INPUT__0", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    return tensor


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "results")))
    parser.add_argument("--work", type=Path, default=Path("/tmp/braid-gpu-check"))
    parser.add_argument("--cpu-only", action="store_true")
    args = parser.parse_args()
    gpu = torch.cuda.is_available() and not args.cpu_only
    import onnxruntime

    providers = onnxruntime.get_available_providers()
    if gpu and "CUDAExecutionProvider" not in providers:
        # The runner would refuse every KIND_GPU instance; say so before starting servers.
        sys.exit(
            f"onnxruntime {onnxruntime.__version__} offers no CUDAExecutionProvider "
            f"({providers}): install onnxruntime-gpu (hack/gpu-check.sh prepare/run do)"
        )
    report: dict[str, Any] = {
        "benchmark": "gpu_check",
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "gpu": gpu,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__,
            "onnxruntime_providers": providers,
            "device": torch.cuda.get_device_name(0) if gpu else None,
        },
    }
    batch_sizes, calls = (BATCH_SIZES, CALLS) if gpu else (CPU_ONLY_BATCH_SIZES, CPU_ONLY_CALLS)
    report.update(batch_sizes=list(batch_sizes), calls_per_point=calls)
    for kind in ("KIND_GPU", "KIND_CPU") if gpu else ("KIND_CPU",):
        repo = args.work / kind.lower() / "repository"
        names = write_repository(repo, kind, max(batch_sizes))
        server = start_triton(repo, workdir=args.work / kind.lower() / "server", name=kind.lower())
        try:
            blocks = time_blocks(server.grpc_address, names, batch_sizes, calls)
            report.setdefault("blocks", {})[kind] = blocks
        finally:
            server.stop()
    kind = "KIND_GPU" if gpu else "KIND_CPU"
    report["gateway"] = gateway_vs_direct(kind, args.work / "gateway", calls)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))  # noqa: T201 - the script's output
    return 0


if __name__ == "__main__":
    sys.exit(main())
