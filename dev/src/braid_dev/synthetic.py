"""A small synthetic provider pair with every kind of path, for the data plane's tests and bench.

``braid models build`` trains real links and exit heads for minutes; the gateway's tests and
benchmark need the same *shapes* of thing in seconds: a local model of four blocks, a skip
link, an exit head and a cross-connection through a host model's block, exported as a Triton
repository with a ``catalog.json`` in the real format. Weights are random but fixed (seeded).

Every module is bias-free with ReLU, so it is positively homogeneous: ``f(s*x) = s*f(x)`` for
``s > 0``. Scaling an input therefore scales the exit head's logits, which makes its
max-softmax confidence a dial: tiny inputs are unconfident (near 1/10), large ones confident
(near 1). The tests use that to make early exits happen, or not, on purpose.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from braid.api.catalog import (
    BlockInfo,
    Crossing,
    Hop,
    Measurement,
    PathCatalog,
    PathEntry,
    PathMetrics,
    ProviderModel,
)
from braid.api.common import TensorSpec
from braid.api.v1alpha1.model import Partition, PartitionBlock
from braid.render.naming import block_model_name
from braid.tooling.triton_repository import write_onnx_model

LOCAL = "toy"
HOST = "toyhost"
CLASSES = 10
CATALOG_FILE = "catalog.json"
INPUT_SHAPE = (1, 8, 8)
EXIT_BLOCK = 1

ORIGINAL = f"{LOCAL}/original"
SKIP = f"{LOCAL}/skip/0-2/normal"
CROSS = f"{LOCAL}/cross/0-{HOST}:1-1-2/normal"
EXIT = f"{LOCAL}/exit/{EXIT_BLOCK}"

SKIP_LINK = f"{LOCAL}.skip.0-2.normal"
XIN = f"{HOST}.xin.{LOCAL}.0-1-1-2.normal"
XOUT = f"{HOST}.xout.{LOCAL}.0-1-1-2.normal"
EXIT_HEAD = f"{LOCAL}.exit.{EXIT_BLOCK}"


def _conv(cin: int, cout: int, stride: int = 1, kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False), nn.ReLU()
    )


def _spec(shape: tuple[int, ...], name: str) -> TensorSpec:
    return TensorSpec(name=name, datatype="FP32", shape=list(shape))


@dataclass
class SyntheticModels:
    """The exported repository and the in-process modules it came from."""

    repository: Path
    catalog: PathCatalog
    modules: dict[str, nn.Module] = field(default_factory=dict)

    @property
    def catalog_path(self) -> Path:
        return self.repository / CATALOG_FILE

    def run_hops(self, names: list[str], x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """Run Triton models ``names`` in order, in process (the reference for the gateway)."""
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        with torch.inference_mode():
            for name in names:
                t = self.modules[name](t)
        out: np.ndarray[Any, Any] = t.numpy()
        return out

    def run_path(
        self, path_id: str, x: np.ndarray[Any, Any], threshold: float | None = None
    ) -> np.ndarray[Any, Any]:
        """The in-process result of a path, with the gateway's early-exit rule.

        On an exit path without a threshold every sample exits; with one, samples whose
        max-softmax reaches it exit and the others continue through the original's blocks.
        """
        hops = [h.triton_model for h in self.catalog.path(path_id).hops]
        if hops[-1] != EXIT_HEAD:
            return self.run_hops(hops, x)
        features = self.run_hops(hops[:-1], x)
        logits = self.run_hops([EXIT_HEAD], features)
        if threshold is None:
            return logits
        rest = self.run_hops(
            [block_model_name(LOCAL, f"b{i}") for i in range(EXIT_BLOCK + 1, 4)], features
        )
        confident = exit_confidence(logits) >= threshold
        return np.where(confident[:, None], logits, rest)


def exit_confidence(logits: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Max-softmax per row."""
    shifted = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    out: np.ndarray[Any, Any] = 1.0 / np.exp(shifted).sum(axis=1)
    return out


def _modules() -> tuple[dict[str, nn.Module], dict[str, tuple[tuple[int, ...], tuple[int, ...]]]]:
    torch.manual_seed(7)
    local = [
        _conv(1, 4),  # [1,8,8] -> [4,8,8]
        _conv(4, 8, stride=2),  # -> [8,4,4]
        _conv(8, 8),  # -> [8,4,4]
        nn.Sequential(nn.Flatten(), nn.Linear(128, CLASSES, bias=False)),  # -> [10]
    ]
    shapes_local = [(1, 8, 8), (4, 8, 8), (8, 4, 4), (8, 4, 4), (CLASSES,)]
    modules: dict[str, nn.Module] = {}
    shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {}
    for i, module in enumerate(local):
        name = block_model_name(LOCAL, f"b{i}")
        modules[name] = module.eval()
        shapes[name] = (shapes_local[i], shapes_local[i + 1])
    modules[SKIP_LINK] = _conv(4, 8, stride=2).eval()
    shapes[SKIP_LINK] = ((4, 8, 8), (8, 4, 4))
    modules[EXIT_HEAD] = nn.Sequential(nn.Flatten(), nn.Linear(128, CLASSES, bias=False)).eval()
    shapes[EXIT_HEAD] = ((8, 4, 4), (CLASSES,))
    host_b1 = block_model_name(HOST, "b1")
    modules[XIN] = _conv(4, 4, kernel=1).eval()
    shapes[XIN] = ((4, 8, 8), (4, 8, 8))
    modules[host_b1] = _conv(4, 8, stride=2).eval()
    shapes[host_b1] = ((4, 8, 8), (8, 4, 4))
    modules[XOUT] = _conv(8, 8, kernel=1).eval()
    shapes[XOUT] = ((8, 4, 4), (8, 4, 4))
    return modules, shapes


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def build_catalog(
    modules: Mapping[str, nn.Module], shapes: Mapping[str, tuple[tuple[int, ...], tuple[int, ...]]]
) -> PathCatalog:
    """The catalog of the synthetic pair (the times are nominal, not measured)."""

    def hop(name: str, role: str, server: str, provider: str) -> Hop:
        inp, out = shapes[name]
        return Hop(
            triton_model=name,
            role=role,  # type: ignore[arg-type]
            server=server,  # type: ignore[arg-type]
            provider=provider,
            input=_spec(inp, "INPUT__0"),
            output=_spec(out, "OUTPUT__0"),
            params=_params(modules[name]),
            macs=0,
            compute_us=100.0,
        )

    b = [hop(block_model_name(LOCAL, f"b{i}"), "block", "local", LOCAL) for i in range(4)]
    paths_hops = {
        ORIGINAL: ("original", b),
        SKIP: ("skip", [b[0], hop(SKIP_LINK, "link", "local", LOCAL), b[2], b[3]]),
        CROSS: (
            "cross",
            [
                b[0],
                hop(XIN, "link", "host", HOST),
                hop(block_model_name(HOST, "b1"), "block", "host", HOST),
                hop(XOUT, "link", "host", HOST),
                b[2],
                b[3],
            ],
        ),
        EXIT: ("exit", [b[0], b[1], hop(EXIT_HEAD, "exit", "local", LOCAL)]),
    }
    extras: dict[str, dict[str, Any]] = {
        ORIGINAL: {},
        SKIP: {"lout": 0, "lin": 2, "link_size": "normal"},
        CROSS: {
            "lout": 0,
            "lin": 2,
            "hin": 1,
            "hout": 1,
            "host_model": HOST,
            "link_size": "normal",
        },
        EXIT: {"exit_after": EXIT_BLOCK},
    }
    entries = []
    for path_id, (kind, hops) in paths_hops.items():
        crossings = []
        for i, (prev, cur) in enumerate(itertools.pairwise(hops)):
            if prev.server != cur.server:
                size = 4 * int(np.prod(prev.output.shape))
                crossings.append(
                    Crossing(after_hop=i, source=prev.server, target=cur.server, bytes=size)
                )
        entries.append(
            PathEntry(
                id=path_id,
                kind=kind,  # type: ignore[arg-type]
                hops=hops,
                crossings=crossings,
                metrics=PathMetrics(
                    accuracy=0.5,
                    params_local=sum(h.params for h in hops if h.server == "local"),
                    params_host=sum(h.params for h in hops if h.server == "host"),
                    macs_local=0,
                    macs_host=0,
                    compute_us_local=sum(h.compute_us for h in hops if h.server == "local"),
                    compute_us_host=sum(h.compute_us for h in hops if h.server == "host"),
                    bytes_crossing=sum(c.bytes for c in crossings),
                ),
                **extras[path_id],
            )
        )

    def provider(name: str, role: str, blocks: list[Hop], first: int = 0) -> ProviderModel:
        """``first``: index of the first exported block; the host exports only its block 1,
        but its partition still starts at layer 0 as every partition must."""
        return ProviderModel(
            name=name,
            role=role,  # type: ignore[arg-type]
            task="synthetic",
            source="braid_dev.synthetic (seeded random weights)",
            input=_spec(INPUT_SHAPE, "INPUT__0"),
            output=_spec((CLASSES,), "OUTPUT__0"),
            partition=Partition(
                blocks=[
                    PartitionBlock(name=f"b{i}", first_layer=i, last_layer=i)
                    for i in range(first + len(blocks))
                ]
            ),
            blocks=[
                BlockInfo(
                    index=i,
                    triton_model=h.triton_model,
                    input=h.input,
                    output=h.output,
                    params=h.params,
                    macs=0,
                    compute_us=h.compute_us,
                )
                for i, h in enumerate(blocks, start=first)
            ],
        )

    host_block = hop(block_model_name(HOST, "b1"), "block", "host", HOST)
    return PathCatalog(
        build_hash="synthetic-v1",
        local_model=LOCAL,
        baseline_accuracy=0.5,
        original_path=ORIGINAL,
        models=[provider(LOCAL, "local", b), provider(HOST, "host", [host_block], first=1)],
        measurement=Measurement(repeats=0),
        paths=entries,
    )


def synthetic_catalog() -> PathCatalog:
    """The synthetic pair's catalog without writing a repository (for tests of pure code)."""
    modules, shapes = _modules()
    return build_catalog(modules, shapes)


def build_synthetic_repository(
    out: Path, *, max_batch_size: int = 16, instance_kind: str = "KIND_CPU"
) -> SyntheticModels:
    """Write every Triton model of the synthetic pair and ``catalog.json`` into ``out``
    (``instance_kind`` KIND_GPU puts every model on the GPU, for the GPU check)."""
    modules, shapes = _modules()
    catalog = build_catalog(modules, shapes)
    out.mkdir(parents=True, exist_ok=True)
    for name, module in modules.items():
        inp, outp = shapes[name]
        write_onnx_model(
            out,
            name,
            module,
            inputs=[_spec(inp, "INPUT__0")],
            outputs=[_spec(outp, "OUTPUT__0")],
            max_batch_size=max_batch_size,
            instance_kind=instance_kind,
            example_inputs=(torch.zeros((1, *inp)),),
        )
    text = json.dumps(catalog.model_dump(mode="json"), indent=2) + "\n"
    (out / CATALOG_FILE).write_text(text)
    return SyntheticModels(repository=out, catalog=catalog, modules=dict(modules))
