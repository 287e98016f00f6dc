"""Export a build as a Triton model repository: one Triton model per block, link and exit head.

Each model is a Python-backend model running an ONNX file with onnxruntime (the layout and
the generic ``model.py`` come from ``braid.tooling.triton_repository``), with dynamic batching so
a loaded Triton batches concurrent requests of different paths that share a block. The
catalog goes beside the models as ``catalog.json``; Triton ignores a top-level file.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path

import torch

from braid.api.catalog import PathCatalog
from braid.api.v1alpha1.block import DynamicBatching
from braid.logs import log_event
from braid.tooling.build import BuildResult
from braid.tooling.triton_repository import write_onnx_model

logger = logging.getLogger(__name__)

CATALOG_FILE = "catalog.json"
MAX_BATCH_SIZE = 64
DYNAMIC_BATCHING = DynamicBatching(max_queue_delay_microseconds=200)
"""A short queue delay: batching pays off under load, and 0.2 ms is small next to a hop."""


def write_catalog(catalog: PathCatalog, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(catalog.model_dump(mode="json", by_alias=True), indent=2) + "\n"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def read_catalog(path: Path) -> PathCatalog:
    return PathCatalog.model_validate_json(path.read_text())


def models_in_catalog(catalog: PathCatalog) -> list[str]:
    """Every Triton model some path of the catalog calls, plus every local block."""
    names = {h.triton_model for p in catalog.paths for h in p.hops}
    for model in catalog.models:
        if model.role == "local":
            names.update(b.triton_model for b in model.blocks)
    return sorted(names)


def export_repository(
    result: BuildResult, out: Path, *, on_model: Callable[[], None] | None = None
) -> list[str]:
    """Write the Triton repository and ``catalog.json`` into ``out``; returns the model names.

    Model folders of earlier builds that this catalog no longer uses are removed (only
    folders holding a ``config.pbtxt``; anything else in ``out`` is left alone).
    """
    out.mkdir(parents=True, exist_ok=True)
    names = models_in_catalog(result.catalog)
    keep = set(names)
    for child in out.iterdir():
        if child.is_dir() and (child / "config.pbtxt").is_file() and child.name not in keep:
            shutil.rmtree(child)
    hops = {h.triton_model: h for p in result.catalog.paths for h in p.hops}
    blocks = {b.triton_model: b for m in result.catalog.models for b in m.blocks}
    for name in names:
        sig = hops.get(name) or blocks[name]
        in_shape, _ = result.shapes[name]
        write_onnx_model(
            out,
            name,
            result.modules[name],
            inputs=[sig.input],
            outputs=[sig.output],
            max_batch_size=MAX_BATCH_SIZE,
            dynamic_batching=DYNAMIC_BATCHING,
            example_inputs=(torch.zeros((1, *in_shape)),),
        )
        if on_model:
            on_model()
    write_catalog(result.catalog, out / CATALOG_FILE)
    log_event(logger, "export.done", models=len(names), out=out)
    return names
