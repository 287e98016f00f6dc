"""Write Triton models into a model repository: one TorchScript file per model.

Every block, link and exit head braid serves becomes one Triton model laid out as::

    <repository>/<name>/config.pbtxt
    <repository>/<name>/<version>/model.py   (the generic TorchScript runner)
    <repository>/<name>/<version>/model.pt   (the scripted or traced module)

The config comes from the pure renderer in ``braid.render.triton_config`` so the exporter,
the operator and the tests agree on it.
"""

from __future__ import annotations

import logging
import shutil
import warnings
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path

import torch

from braid.api.common import TensorSpec
from braid.api.v1alpha1.block import DynamicBatching
from braid.logs import log_event
from braid.render.triton_config import DEFAULT_DYNAMIC_BATCHING, render_model_config

logger = logging.getLogger(__name__)

TORCHSCRIPT_FILE = "model.pt"
_RUNNER_MODULE = "triton_torchscript_model.py"
# torch 2.x marks TorchScript deprecated in favour of torch.export, but a self-contained
# scripted file is exactly what the Python-backend runner needs: it loads without the
# model's Python source. The warning is expected, so it is silenced where we script.
_JIT_DEPRECATION = r".*torch\.jit\..* is deprecated.*"

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


def torch_datatype(dtype: torch.dtype) -> str:
    """The Triton protocol datatype (``FP32``...) of a torch dtype."""
    try:
        return _TORCH_TO_DATATYPE[dtype]
    except KeyError:
        raise ValueError(f"torch dtype {dtype} has no Triton datatype") from None


def runner_source() -> str:
    """The text of the generic Python-backend ``model.py`` that runs a TorchScript file."""
    return resources.files("braid.tooling").joinpath(_RUNNER_MODULE).read_text()


def _script(
    module: torch.nn.Module, example_inputs: tuple[torch.Tensor, ...] | None
) -> torch.jit.ScriptModule:
    if isinstance(module, torch.jit.ScriptModule):
        return module
    module = module.eval()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, message=_JIT_DEPRECATION)
        if example_inputs is not None:
            # Tracing records one path through the module: right for frozen feed-forward
            # blocks, and it works where scripting fails on dynamic Python.
            with torch.no_grad():
                traced: torch.jit.ScriptModule = torch.jit.trace(  # type: ignore[no-untyped-call]
                    module, example_inputs
                )
            return traced
        scripted: torch.jit.ScriptModule = torch.jit.script(module)
        return scripted


def write_torchscript_model(
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
    torch_num_threads: int = 1,
    example_inputs: tuple[torch.Tensor, ...] | None = None,
    parameters: Mapping[str, str] | None = None,
) -> Path:
    """Write model ``name`` (config, runner, TorchScript file) into ``repository``.

    ``module`` is a scripted module, a plain module (scripted, or traced when
    ``example_inputs`` are given) or the path of a saved TorchScript file (copied).
    The module takes the inputs positionally in the order given and returns a tensor, a
    tuple of tensors in the order of ``outputs``, or a dict keyed by output name.
    Rewrites an existing version in place; returns the model's directory.
    """
    if version < 1:
        raise ValueError(f"model versions start at 1, got {version}")
    params = {"torch_num_threads": str(torch_num_threads), "torchscript_file": TORCHSCRIPT_FILE}
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
    artifact = version_dir / TORCHSCRIPT_FILE
    if isinstance(module, Path):
        shutil.copyfile(module, artifact)
    else:
        scripted = _script(module, example_inputs)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning, message=_JIT_DEPRECATION)
            torch.jit.save(scripted, str(artifact))
    (version_dir / "model.py").write_text(runner_source())
    (model_dir / "config.pbtxt").write_text(config)
    log_event(logger, "triton.model.written", model=name, version=version, path=model_dir)
    return model_dir
