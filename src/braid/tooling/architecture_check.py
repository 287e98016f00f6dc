"""Split, export and re-chain a model: does the served block chain compute the model?

Each block is exported as the block runtime serves it (an ONNX file in a Triton model
folder, ``braid.tooling.triton_repository``), loaded back into an onnxruntime session as
the runner loads it, and the chain of those sessions is run on a sample batch (larger than
the export's batch of one: the batch axis must be dynamic) next to the whole torch model. ``bench/architectures.py``
writes the result for the three architectures into ``results/code.json``; the integration
test asserts on it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from braid.api.common import DataType, TensorSpec
from braid.render.model_repository import ONNX_FILE
from braid.tooling.graph_split import graph_layers, partition_from_cuts, split_graph, trace_model
from braid.tooling.split import Block, count_macs, count_params
from braid.tooling.triton_repository import torch_datatype, write_onnx_model


@dataclass(frozen=True)
class ArchitectureCase:
    name: str
    family: str
    factory: Callable[[], nn.Module]
    input_shape: tuple[int, ...]
    cuts: tuple[tuple[str, str | None], ...]
    sample: Callable[[int], torch.Tensor]
    leaf_modules: tuple[str, ...] = ()
    input_dtype: torch.dtype = torch.float32


@dataclass(frozen=True)
class ChainCheck:
    name: str
    family: str
    graph_layers: int
    blocks: list[Block]
    max_abs_diff: float
    same_prediction: bool
    params: int
    macs: int
    seconds: float

    def as_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "family": self.family,
            "graph_layers": self.graph_layers,
            "params": self.params,
            "macs": self.macs,
            "blocks": [
                {
                    "name": b.name,
                    "layers": [b.first_layer, b.last_layer],
                    "output_shape": list(b.output_shape),
                    "params": b.params,
                    "macs": b.macs,
                }
                for b in self.blocks
            ],
            "served_chain_max_abs_diff": self.max_abs_diff,
            "served_chain_same_prediction": self.same_prediction,
        }


def check_architecture(case: ArchitectureCase, repository: Path, batch: int = 4) -> ChainCheck:
    """Split ``case``'s model at its cuts, export every block, compare chain and model."""
    started = time.monotonic()
    model = case.factory().eval()
    layers = graph_layers(trace_model(model, case.leaf_modules))
    partition = partition_from_cuts(layers, case.cuts)
    blocks = split_graph(
        model,
        partition,
        case.input_shape,
        case.name,
        leaf_modules=case.leaf_modules,
        input_dtype=case.input_dtype,
    )
    served = [_export_and_load(repository, case.name, b) for b in blocks]
    x = case.sample(batch)
    with torch.no_grad():
        whole = model(x)
    chained: np.ndarray[Any, Any] = x.numpy()
    for session in served:
        (chained,) = session.run(["OUTPUT__0"], {"INPUT__0": chained})
    served_out = torch.from_numpy(chained)
    return ChainCheck(
        name=case.name,
        family=case.family,
        graph_layers=len(layers),
        blocks=blocks,
        max_abs_diff=float((whole - served_out).abs().max()),
        same_prediction=bool((whole.argmax(-1) == served_out.argmax(-1)).all()),
        params=count_params(model),
        macs=count_macs(model, case.input_shape, case.input_dtype),
        seconds=time.monotonic() - started,
    )


def _export_and_load(repository: Path, model: str, block: Block) -> ort.InferenceSession:
    name = f"{model}.{block.name}"
    example = torch.zeros((1, *block.input_shape), dtype=block.input_dtype)
    with torch.no_grad():
        out = block.module(example)
    folder = write_onnx_model(
        repository,
        name,
        block.module,
        inputs=[_spec("INPUT__0", example)],
        outputs=[_spec("OUTPUT__0", out)],
        max_batch_size=8,
        example_inputs=(example,),
    )
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # as the runner does (see triton_onnx_model)
    return ort.InferenceSession(
        str(folder / "1" / ONNX_FILE), sess_options=options, providers=["CPUExecutionProvider"]
    )


def _spec(name: str, t: torch.Tensor) -> TensorSpec:
    datatype = cast(DataType, torch_datatype(t.dtype))
    return TensorSpec(name=name, datatype=datatype, shape=list(t.shape[1:]))


def default_cases() -> Sequence[ArchitectureCase]:
    """The three architectures ``results/code.json`` lists: a flat CNN, a ResNet-18, MiniLM."""
    from braid.tooling import architectures as arch

    def images(shape: tuple[int, ...]) -> Callable[[int], torch.Tensor]:
        return lambda n: torch.rand((n, *shape), generator=torch.Generator().manual_seed(0))

    def token_ids(n: int) -> torch.Tensor:
        ids = torch.randint(1000, 20000, (n, 32), generator=torch.Generator().manual_seed(0))
        ids[0, 20:] = 0  # one padded sentence: the mask must travel with the state
        return ids

    return (
        ArchitectureCase(
            "fmnist-cnn",
            "cnn",
            arch.fmnist_cnn,
            (1, 28, 28),
            (("b0", "4"), ("b1", "8"), ("b2", "11"), ("b3", "14"), ("b4", "18"), ("b5", None)),
            images((1, 28, 28)),
        ),
        ArchitectureCase(
            "resnet18",
            "resnet",
            arch.resnet18_cifar,
            (3, 32, 32),
            (
                ("stem", "maxpool"),
                ("l1", "layer1"),
                ("l2", "layer2"),
                ("l3", "layer3"),
                ("l4", "layer4"),
                ("head", None),
            ),
            images((3, 32, 32)),
        ),
        ArchitectureCase(
            "minilm-l6",
            "transformer",
            arch.minilm_classifier,
            (32,),
            (("emb", "embeddings"), ("e01", "layers.1"), ("e23", "layers.3"), ("e45", None)),
            token_ids,
            leaf_modules=arch.MINILM_LEAF_MODULES,
            input_dtype=torch.int64,
        ),
    )
