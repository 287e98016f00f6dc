"""Write Triton models into a model repository: one ONNX file per model.

Every block, link and exit head braid serves becomes one Triton model laid out as::

    <repository>/<name>/config.pbtxt
    <repository>/<name>/<version>/model.py     (the generic onnxruntime runner)
    <repository>/<name>/<version>/model.onnx   (the exported graph, batch axis dynamic)

Why ONNX run by onnxruntime, not TorchScript run by torch: the Triton runtime image then
holds tritonserver, Python, numpy and onnxruntime (tens of MB) instead of the CUDA build of
torch (~4.5 GB), and on a GPU cluster the same files are served by onnxruntime's CUDA
execution provider (``onnxruntime-gpu``). The graph's input and output names are the
config's tensor names, so the version folder is also exactly what Triton's native
``onnxruntime`` backend reads (``backend: "onnxruntime"``, ``model.onnx``) where a cluster's
Triton image ships it; the Python-backend runner is what the CPU ``tritonserver`` of the
nvidia-pytriton wheel can run.

The config comes from the pure renderer in ``braid.render.triton_config`` so the exporter,
the operator and the tests agree on it.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path

import onnxruntime
import torch

from braid.api.common import TensorSpec
from braid.api.v1alpha1.block import DynamicBatching
from braid.logs import log_event
from braid.render.model_repository import ONNX_FILE
from braid.render.triton_config import DEFAULT_DYNAMIC_BATCHING, render_model_config
from braid.tooling.onnx_export import ONNX_OPSET, export_onnx

logger = logging.getLogger(__name__)

BLOCK_RUNTIME = f"onnxruntime-{onnxruntime.__version__}/onnx-opset-{ONNX_OPSET}"
"""What serves (and so what times) the exported blocks: part of the build's cache key, so a
build measured on another runtime is never reused."""
_RUNNER_MODULE = "triton_onnx_model.py"

_TORCH_TO_DATATYPE: dict[torch.dtype, str] = {
    torch.bool: "BOOL",
    torch.uint8: "UINT8",
    torch.int8: "INT8",
    torch.int16: "INT16",
    torch.int32: "INT32",
    torch.int64: "INT64",
    torch.float16: "FP16",
    torch.float32: "FP32",
    torch.float64: "FP64",
    torch.bfloat16: "BF16",
}
_DATATYPE_TO_TORCH = {v: k for k, v in _TORCH_TO_DATATYPE.items()}


def torch_datatype(dtype: torch.dtype) -> str:
    """The Triton protocol datatype (``FP32``...) of a torch dtype."""
    try:
        return _TORCH_TO_DATATYPE[dtype]
    except KeyError:
        raise ValueError(f"torch dtype {dtype} has no Triton datatype") from None


def runner_source() -> str:
    """The text of the generic Python-backend ``model.py`` that runs an ONNX file."""
    return resources.files("braid.tooling").joinpath(_RUNNER_MODULE).read_text()


def example_batch(inputs: Sequence[TensorSpec]) -> tuple[torch.Tensor, ...]:
    """Zeros of batch 1 for each input: what the exporter traces with when given nothing.

    Variable dimensions (-1) trace at 1; only the batch axis is exported dynamic.
    """
    out = []
    for spec in inputs:
        if spec.datatype not in _DATATYPE_TO_TORCH:
            raise ValueError(f"input {spec.name}: {spec.datatype} has no torch dtype")
        shape = [1, *(d if d > 0 else 1 for d in spec.shape)]
        out.append(torch.zeros(shape, dtype=_DATATYPE_TO_TORCH[spec.datatype]))
    return tuple(out)


def write_onnx_model(
    repository: Path,
    name: str,
    module: torch.nn.Module | Path,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    max_batch_size: int,
    *,
    version: int = 1,
    dynamic_batching: DynamicBatching | None = DEFAULT_DYNAMIC_BATCHING,
    instance_count: int = 1,
    instance_kind: str = "KIND_CPU",
    intra_op_threads: int = 1,
    example_inputs: tuple[torch.Tensor, ...] | None = None,
    parameters: Mapping[str, str] | None = None,
) -> Path:
    """Write model ``name`` (config, runner, ONNX file) into ``repository``.

    ``module`` is a torch module (exported with ``example_inputs``, or zeros of batch 1 built
    from ``inputs``) or the path of an ONNX file (copied; its tensor names must be the
    config's). The module takes the inputs positionally in the order given and returns a
    tensor or a tuple of tensors in the order of ``outputs``. ``intra_op_threads`` is
    onnxruntime's thread count per instance (see the runner for why 1).
    Rewrites an existing version in place; returns the model's directory.
    """
    if version < 1:
        raise ValueError(f"model versions start at 1, got {version}")
    params = {"intra_op_threads": str(intra_op_threads), "onnx_file": ONNX_FILE}
    params.update(parameters or {})
    config = render_model_config(
        name,
        inputs,
        outputs,
        max_batch_size,
        backend="python",
        dynamic_batching=dynamic_batching,
        instance_count=instance_count,
        instance_kind=instance_kind,
        parameters=params,
    )
    model_dir = repository / name
    version_dir = model_dir / str(version)
    version_dir.mkdir(parents=True, exist_ok=True)
    artifact = version_dir / ONNX_FILE
    if isinstance(module, Path):
        shutil.copyfile(module, artifact)
    else:
        export_onnx(
            module,
            example_inputs if example_inputs is not None else example_batch(inputs),
            [t.name for t in inputs],
            [t.name for t in outputs],
            artifact,
            dynamic_batch=max_batch_size > 0,
        )
    (version_dir / "model.py").write_text(runner_source())
    (model_dir / "config.pbtxt").write_text(config)
    log_event(logger, "triton.model.written", model=name, version=version, path=model_dir)
    return model_dir
