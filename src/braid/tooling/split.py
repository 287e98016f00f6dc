"""Cut a model into frozen blocks from a ``Partition`` (the ``Model`` resource's block list).

A partition that does not fit the model fails here, before anything is trained or served,
with an error that names the block and the shapes involved, because "RuntimeError: mat1 and
mat2 shapes cannot be multiplied" from deep inside a Triton stub tells nobody which part of
the spec to fix.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from braid.api.v1alpha1.model import Partition

Shape = tuple[int, ...]


class PartitionError(ValueError):
    """The partition does not fit the model; the message names the block and the shapes."""


@dataclass(frozen=True)
class Block:
    """One frozen block: a contiguous range of the model's layers with its signature."""

    model: str
    index: int
    name: str
    first_layer: int
    last_layer: int
    module: nn.Module
    input_shape: Shape
    output_shape: Shape
    params: int
    macs: int
    input_dtype: torch.dtype = torch.float32


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@contextmanager
def evaluating(module: nn.Module) -> Iterator[nn.Module]:
    """``module`` in eval mode for a probe pass, each layer put back in its own mode after.

    Restoring one flag for the whole module is wrong for a block: the ``nn.Sequential`` that
    wraps a slice of a frozen model is new, so in training mode, and ``train(True)`` on it
    would switch the shared layers to training too. Every later pass would then update the
    BatchNorm running statistics of the frozen model (a fresh build served 14 % accuracy
    from blocks traced with statistics drifted that way).
    """
    modes = [(m, m.training) for m in module.modules()]
    for m, _ in modes:  # not module.eval(): a torch.export module refuses it
        m.training = False
    try:
        with torch.no_grad():
            yield module
    finally:
        for m, training in modes:
            m.training = training


def count_macs(
    module: nn.Module, input_shape: Shape, input_dtype: torch.dtype = torch.float32
) -> int:
    """Multiply-accumulates of one forward pass on one sample (conv and linear layers; the
    matrix products inside attention are not counted)."""
    total = 0

    def hook(layer: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(layer, nn.Conv2d):
            kh, kw = layer.kernel_size
            per_out = (layer.in_channels // layer.groups) * kh * kw
            total += int(output[0].numel()) * per_out
        elif isinstance(layer, nn.Linear):
            # Per output element (a token's features in a transformer, not just one vector).
            total += layer.in_features * int(output[0].numel())

    handles = [m.register_forward_hook(hook) for m in module.modules()]
    try:
        with evaluating(module):
            module(torch.zeros((1, *input_shape), dtype=input_dtype))
    finally:
        for h in handles:
            h.remove()
    return total


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def split_model(
    model: nn.Sequential, partition: Partition, input_shape: Sequence[int], model_name: str
) -> list[Block]:
    """The blocks of ``model`` as ``partition`` cuts it, each checked on a sample input.

    The blocks share the model's layer objects (no copy), so the split model computes exactly
    what the whole one does.
    """
    layers = list(model)
    n_layers = len(layers)
    if not partition.blocks:
        raise PartitionError(f"{model_name}: the partition has no blocks")
    blocks: list[Block] = []
    expected_first = 0
    shape: Shape = tuple(int(d) for d in input_shape)
    seen: set[str] = set()
    for index, spec in enumerate(partition.blocks):
        where = f"{model_name}: block {spec.name} (B{index}, layers {spec.first_layer}..{spec.last_layer})"
        if spec.name in seen:
            raise PartitionError(f"{where}: the name {spec.name!r} is used by an earlier block")
        seen.add(spec.name)
        if spec.last_layer < spec.first_layer:
            raise PartitionError(f"{where}: last layer comes before the first")
        if spec.first_layer != expected_first:
            if spec.first_layer > expected_first:
                detail = f"layers {expected_first}..{spec.first_layer - 1} belong to no block"
            else:
                detail = f"it overlaps the previous block, which ends at layer {expected_first - 1}"
            raise PartitionError(f"{where}: must start at layer {expected_first}; {detail}")
        if spec.last_layer >= n_layers:
            raise PartitionError(
                f"{where}: the model has only {n_layers} layers (0..{n_layers - 1})"
            )
        module = nn.Sequential(*layers[spec.first_layer : spec.last_layer + 1])
        # The block is in the mode of the model it cuts (a frozen model: eval), not in the
        # training mode every new module starts in.
        module.training = model.training
        try:
            with evaluating(module):
                out = module(torch.zeros((2, *shape)))
        except (RuntimeError, ValueError, IndexError) as exc:
            producer = "the model input" if index == 0 else f"block {blocks[-1].name}'s output"
            raise PartitionError(
                f"{where}: cannot take an input of shape {shape} ({producer}): {_first_line(exc)}"
            ) from exc
        out_shape: Shape = tuple(int(d) for d in out.shape[1:])
        blocks.append(
            Block(
                model=model_name,
                index=index,
                name=spec.name,
                first_layer=spec.first_layer,
                last_layer=spec.last_layer,
                module=module,
                input_shape=shape,
                output_shape=out_shape,
                params=count_params(module),
                macs=count_macs(module, shape),
            )
        )
        shape = out_shape
        expected_first = spec.last_layer + 1
    if expected_first != n_layers:
        raise PartitionError(
            f"{model_name}: layers {expected_first}..{n_layers - 1} belong to no block "
            f"(the last block, {blocks[-1].name}, ends at layer {expected_first - 1})"
        )
    return blocks
