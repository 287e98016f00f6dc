"""Export a torch module to one ONNX file, the format braid's block runtime serves.

torch's TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``), on purpose:
it exports every block kind braid serves (flat CNNs, fx-split residual stages, MiniLM
encoder layers, links, exit heads) in well under a second each (0.07 s against the dynamo
exporter's 2.5 s for a small CNN here), and a build exports and times dozens of modules.
Neither exporter writes adaptive pooling whose output size does not divide its input (an
exit head pooling 7x7 to 4x4, a link max-pooling 7x7 to 3x3: both in braid's own builds;
the dynamo exporter has no ONNX function for the max case either), so those layers are
exported as the explicit bins torch computes (``BinnedAdaptivePool2d``).
"""

from __future__ import annotations

import contextlib
import copy
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal

import torch
from torch import nn

ONNX_OPSET = 17
"""Opset 17 (LayerNormalization is one op there) is read by every onnxruntime since 1.14,
so the files also load in the older onnxruntime that a cluster's Triton backend bundles."""


class BinnedAdaptivePool2d(nn.Module):
    """``nn.AdaptiveAvgPool2d`` / ``nn.AdaptiveMaxPool2d`` written as the bins they pool.

    Output cell (i, j) pools rows ``floor(i*H/oh) .. ceil((i+1)*H/oh)`` and the same for
    columns: torch's definition, so the result is the original layer's (up to the order of
    a mean's float sum). The spatial size is read as a Python int while tracing (only the
    batch axis is dynamic); when the output divides the input the original op is used,
    which every exporter writes as one pooling node.
    """

    def __init__(
        self, output_size: tuple[int | None, int | None], reduce: Literal["mean", "max"]
    ) -> None:
        super().__init__()
        self.output_size = output_size
        self.reduce = reduce

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = int(x.shape[-2]), int(x.shape[-1])
        oh = self.output_size[0] or h
        ow = self.output_size[1] or w
        if h % oh == 0 and w % ow == 0:
            if self.reduce == "max":
                return nn.functional.adaptive_max_pool2d(x, (oh, ow))
            return nn.functional.adaptive_avg_pool2d(x, (oh, ow))
        rows = []
        for i in range(oh):
            top, bottom = (i * h) // oh, -(-(i + 1) * h // oh)
            cells = []
            for j in range(ow):
                left, right = (j * w) // ow, -(-(j + 1) * w // ow)
                cell = x[..., top:bottom, left:right]
                cells.append(
                    cell.amax(dim=(-2, -1)) if self.reduce == "max" else cell.mean(dim=(-2, -1))
                )
            rows.append(torch.stack(cells, dim=-1))
        return torch.stack(rows, dim=-2)


def _pair(size: int | tuple[int | None, ...] | None) -> tuple[int | None, int | None]:
    if isinstance(size, tuple):
        return size[0], size[1]
    return size, size


def exportable(module: nn.Module) -> nn.Module:
    """``module``, or a copy whose adaptive 2-d pools are ``BinnedAdaptivePool2d``."""
    pools = [
        name
        for name, child in module.named_modules()
        if isinstance(child, nn.AdaptiveAvgPool2d)
        or (isinstance(child, nn.AdaptiveMaxPool2d) and not child.return_indices)
    ]
    if not pools:
        return module
    module = copy.deepcopy(module)
    for name in pools:
        old = module.get_submodule(name)
        reduce: Literal["mean", "max"] = "max" if isinstance(old, nn.AdaptiveMaxPool2d) else "mean"
        new = BinnedAdaptivePool2d(_pair(old.output_size), reduce)  # type: ignore[arg-type]
        if name == "":
            return new
        parent_name, _, attr = name.rpartition(".")
        setattr(module.get_submodule(parent_name), attr, new)
    return module


@contextlib.contextmanager
def _native_stdout_silenced() -> Iterator[None]:
    """File descriptor 1 to /dev/null for the duration: when the exporter fails it dumps
    both graphs to stdout from C++ (torch 2.15 leaves its ONNX log enabled:
    ``setup_onnx_logging`` tests a function object for truth), which a redirect of
    ``sys.stdout`` cannot catch; the exception says what failed."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 1)
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def export_onnx(
    module: nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    input_names: Sequence[str],
    output_names: Sequence[str],
    path: Path,
    *,
    dynamic_batch: bool = True,
) -> Path:
    """Export ``module`` (eval mode) to ``path``, one self-contained file, axis 0 of every
    input and output dynamic when batching. The module returns a tensor, or a tuple/list of
    tensors in the order of ``output_names``; the graph's tensors carry the given names."""
    module = exportable(module.eval())
    names = [*input_names, *output_names]
    axes = {name: {0: "batch"} for name in names} if dynamic_batch else None
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), torch.no_grad(), _native_stdout_silenced():
        # The exporter is deprecated in favour of dynamo (see the module docstring for why
        # it is used) and warns on tracing-time constants the blocks hold on purpose
        # (MiniLM's alpha, the bins' spatial size), so its warnings are expected here.
        warnings.simplefilter("ignore", (DeprecationWarning, FutureWarning))
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # type: ignore[attr-defined]
        torch.onnx.export(
            module,
            example_inputs,
            str(path),
            input_names=list(input_names),
            output_names=list(output_names),
            dynamic_axes=axes,
            opset_version=ONNX_OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    return path
