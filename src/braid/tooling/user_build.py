"""``braid models build -f spec.yaml``: a user's own model through the same build.

Two steps, so that every mistake in the spec shows before anything is trained:

1. ``prepare``: import or load the model, trace it, turn the named cuts into the
   partition, split and probe every block, load the dataset and check its splits, check the
   path grid's block names. Raises ``BuildSpecError`` / ``PartitionError``.
2. ``run_user_build``: train the whole model if the spec asks (seeded, cached), then the
   same cached build as the built-in models (links, exit heads, every path measured),
   export the Triton repository and the catalog, and choose on the *validation* split:
   which path cuts the most local MACs within the accuracy budget, and which confidence
   threshold each exit head uses. The test split only reports the chosen figures.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from braid.api.catalog import PathCatalog
from braid.api.v1alpha1.model import Partition, PartitionBlock
from braid.logs import log_event
from braid.tooling import train as training
from braid.tooling.build import BuildConfig, BuildResult, ProviderInfo, Providers, build
from braid.tooling.build_spec import BuildSpec, BuildSpecError, CutPoint, ModelSource
from braid.tooling.data import Dataset, Split
from braid.tooling.export import export_repository, models_in_catalog
from braid.tooling.graph_split import (
    GraphLayer,
    graph_layers,
    partition_from_cuts,
    set_training,
    split_graph,
    trace_model,
)
from braid.tooling.measure import EXIT_THRESHOLDS, accuracy, evaluate_paths
from braid.tooling.paths import Grid
from braid.tooling.progress import Progress, stage
from braid.tooling.split import Block
from braid.tooling.train import TrainConfig

logger = logging.getLogger(__name__)

USER_BUILD_VERSION = "1"
_DTYPES = {"FP32": torch.float32, "INT64": torch.int64}


def import_callable(ref: str, what: str) -> Callable[..., Any]:
    """``module:function`` imported, or a ``BuildSpecError`` saying what is wrong with it."""
    module_name, sep, attr = ref.partition(":")
    if not sep or not module_name or not attr:
        raise BuildSpecError(f"{what}: {ref!r} must be module:function")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BuildSpecError(f"{what}: cannot import {module_name}: {exc}") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise BuildSpecError(f"{what}: {module_name} has no function {attr}")
    return fn  # type: ignore[no-any-return]  # checked callable above


def load_model(spec: BuildSpec) -> tuple[nn.Module, tuple[str, ...]]:
    """The user's model (seeded before it is built) and the tracer's leaf patterns."""
    return load_source(spec.model, spec.train.seed, "model")


def load_source(
    source: ModelSource, seed: int, where: str
) -> tuple[nn.Module, tuple[str, ...]]:  # fmt: skip
    """The model ``source`` names (seeded before it is built) and its leaf patterns;
    ``where`` (``model`` or ``host.model``) prefixes the errors."""
    leaves = tuple(source.leaf_modules)
    torch.manual_seed(seed)
    if source.function is not None:
        model = import_callable(source.function, f"{where}.function")()
        if not isinstance(model, nn.Module):
            raise BuildSpecError(
                f"{where}.function: {source.function} returned {type(model).__name__}, "
                "not a torch nn.Module"
            )
        return model, leaves
    if source.exported is not None:
        if not source.exported.is_file():
            raise BuildSpecError(f"{where}.exported: {source.exported} does not exist")
        program = torch.export.load(str(source.exported))
        return program.module(), leaves
    assert source.torchscript is not None
    if not source.torchscript.is_file():
        raise BuildSpecError(f"{where}.torchscript: {source.torchscript} does not exist")
    scripted = torch.jit.load(str(source.torchscript), map_location="cpu")  # type: ignore[no-untyped-call]
    return _script_as_sequence(scripted, source.input_shape, _DTYPES[source.input_dtype])


def _script_as_sequence(
    scripted: nn.Module, input_shape: Sequence[int], dtype: torch.dtype
) -> tuple[nn.Module, tuple[str, ...]]:
    """A TorchScript module split at its children, if running them in order is the module.

    torch.fx cannot trace TorchScript, so its graph is not read: the children are checked to
    reproduce the module's output on a sample, and each is kept whole. A module that does
    more than call its children in order (a residual add at the top level) is refused.
    """
    children = OrderedDict(scripted.named_children())
    sample = (
        torch.rand((2, *input_shape))
        if dtype.is_floating_point
        else torch.ones((2, *input_shape), dtype=dtype)
    )
    scripted.eval()
    with torch.no_grad():
        whole = scripted(sample)
        x = sample
        for child in children.values():
            x = child(x)
    if (
        not children
        or not isinstance(whole, torch.Tensor)
        or x.shape != whole.shape
        or not (torch.allclose(x, whole, atol=1e-5))
    ):
        raise BuildSpecError(
            "model.torchscript: the module is not its children run in order, and torch.fx "
            "cannot read a TorchScript graph; give model.function or model.exported "
            "(torch.export.save) instead"
        )
    return nn.Sequential(children), tuple(children)


def _split(raw: Any, name: str, where: str) -> Split:
    if isinstance(raw, Split):
        return raw
    if isinstance(raw, Mapping):
        raw = (raw.get("inputs", raw.get("images")), raw.get("labels"))
    if not isinstance(raw, tuple | list) or len(raw) != 2:
        raise BuildSpecError(f"{where}: split {name!r} must be (inputs, labels)")
    inputs, labels = (torch.as_tensor(v) for v in raw)
    if inputs.shape[0] != labels.shape[0] or labels.dim() != 1:
        raise BuildSpecError(
            f"{where}: split {name!r} has {inputs.shape[0]} inputs and labels of shape "
            f"{tuple(labels.shape)}; expected one label per input"
        )
    return Split(inputs.contiguous(), labels.long())


def load_dataset(spec: BuildSpec) -> Dataset:
    """The loader's train / validation / test splits, checked against the model's input."""
    where = f"dataset.loader {spec.dataset.loader}"
    raw = import_callable(spec.dataset.loader, "dataset.loader")()
    if not isinstance(raw, Mapping):
        raise BuildSpecError(f"{where}: returned {type(raw).__name__}, not a mapping of splits")
    missing = [s for s in ("train", spec.selection_split, "test") if s not in raw]
    if missing:
        raise BuildSpecError(
            f"{where}: no {', '.join(repr(m) for m in missing)} split (it has "
            f"{', '.join(map(repr, raw)) or 'none'}); selectionSplit "
            f"{spec.selection_split!r} chooses paths and thresholds, and the test split only "
            "reports, so all three are needed"
        )
    splits = {name: _split(raw[name], name, where) for name in ("train", "validation", "test")}
    for name, limit in (
        ("validation", spec.dataset.validation_samples),
        ("test", spec.dataset.test_samples),
    ):
        if limit is not None:
            splits[name] = splits[name].head(limit)
    expected = tuple(spec.model.input_shape)
    for name, split in splits.items():
        if tuple(split.images.shape[1:]) != expected:
            raise BuildSpecError(
                f"{where}: split {name!r} has inputs of shape {tuple(split.images.shape[1:])}, "
                f"the model takes {expected} (model.inputShape)"
            )
    digest = hashlib.sha256()
    for name in ("train", "validation", "test"):
        digest.update(splits[name].images.numpy().tobytes())
        digest.update(splits[name].labels.numpy().tobytes())
    return Dataset(
        spec.name,
        splits["train"],
        splits["test"],
        digest.hexdigest()[:16],
        validation=splits["validation"],
    )


@dataclass
class PreparedHost:
    """The spec's host: pretrained, frozen, split; its blocks serve cross paths."""

    model: nn.Module
    partition: Partition
    blocks: list[Block]
    weights: str
    """Digest of its weights (part of the build's cache key)."""


@dataclass
class PreparedBuild:
    """A spec checked end to end; nothing trained yet."""

    spec: BuildSpec
    model: nn.Module
    layers: list[GraphLayer]
    partition: Partition
    blocks: list[Block]
    data: Dataset
    grid: Grid
    host: PreparedHost | None = None


def resolve_partition(spec: BuildSpec, layers: Sequence[GraphLayer]) -> Partition:
    return partition_by_name(spec.partition.blocks, layers)


def partition_by_name(cuts: Sequence[CutPoint], layers: Sequence[GraphLayer]) -> Partition:
    """The cuts as a ``Partition`` (indices into ``layers``)."""
    if all(c.first_layer is not None for c in cuts):
        return Partition(
            blocks=[
                PartitionBlock(name=c.name, first_layer=c.first_layer, last_layer=c.last_layer)
                for c in cuts
                if c.first_layer is not None and c.last_layer is not None
            ]
        )
    if any(c.first_layer is not None for c in cuts):
        raise BuildSpecError("partition: give every block by end, or every block by layers")
    return partition_from_cuts(layers, [(c.name, c.end) for c in cuts])


def _grid(spec: BuildSpec, partition: Partition, host: Partition | None = None) -> Grid:
    index = {b.name: i for i, b in enumerate(partition.blocks)}
    n = len(index)

    def block(name: str, what: str) -> int:
        if name not in index:
            raise BuildSpecError(
                f"paths.{what}: no block named {name!r} (blocks: {', '.join(index)})"
            )
        return index[name]

    cross = _cross(spec, index, host)

    exits = tuple(block(b, "exits") for b in spec.paths.exits)
    for k in exits:
        if k >= n - 1:
            raise BuildSpecError(
                f"paths.exits: an exit after the last block {partition.blocks[k].name} would be "
                "the model's own output"
            )
    skips = tuple((block(a, "skips"), block(b, "skips")) for a, b in spec.paths.skips)
    for lout, lin in skips:
        if lin <= lout + 1:
            raise BuildSpecError(
                f"paths.skips: ({partition.blocks[lout].name}, {partition.blocks[lin].name}) "
                "skips nothing; the second block must come at least two after the first"
            )
    return Grid(
        sizes=tuple(spec.paths.sizes), skip_pairs=skips, cross=cross, exits=exits, combos=()
    )


def _cross(
    spec: BuildSpec, local: Mapping[str, int], host: Partition | None
) -> tuple[tuple[int, int, int, int], ...]:
    """``paths.cross`` by index; every name checked against the local or the host blocks."""
    if not spec.paths.cross:
        return ()
    if host is None:
        raise BuildSpecError("paths.cross: cross paths need a host (the spec has no host:)")
    remote = {b.name: i for i, b in enumerate(host.blocks)}
    out = []
    for names in spec.paths.cross:
        lout_n, hin_n, hout_n, lin_n = names
        for name, blocks, whose in (
            (lout_n, local, "local"),
            (hin_n, remote, "host"),
            (hout_n, remote, "host"),
            (lin_n, local, "local"),
        ):
            if name not in blocks:
                raise BuildSpecError(
                    f"paths.cross {list(names)}: no {whose} block named {name!r} "
                    f"({whose} blocks: {', '.join(blocks)})"
                )
        lout, hin, hout, lin = local[lout_n], remote[hin_n], remote[hout_n], local[lin_n]
        if not lout < lin:
            raise BuildSpecError(
                f"paths.cross {list(names)}: the path must come back to a local block after "
                f"{lout_n} (lin after lout)"
            )
        if not hin <= hout:
            raise BuildSpecError(
                f"paths.cross {list(names)}: host block {hout_n} comes before {hin_n}"
            )
        out.append((lout, hin, hout, lin))
    return tuple(out)


QUICK_LIMITS = {
    "epochs": 1,
    "samples": 12000,
    "link_samples": 3000,
    "link_epochs": 2,
    "validation_samples": 2000,
    "test_samples": 2000,
}
"""``--quick`` caps, the built-in quick profile's sizes: about a minute or two on 2 cores."""


def quick_spec(spec: BuildSpec) -> BuildSpec:
    """``spec`` with its training and evaluation sizes capped at ``QUICK_LIMITS``."""

    def cap(value: int | None, key: str) -> int:
        return QUICK_LIMITS[key] if value is None else min(value, QUICK_LIMITS[key])

    train = spec.train.model_copy(
        update={
            "epochs": min(spec.train.epochs, QUICK_LIMITS["epochs"]),
            "samples": cap(spec.train.samples, "samples"),
            "link_samples": cap(spec.train.link_samples, "link_samples"),
            "link_epochs": cap(spec.train.link_epochs, "link_epochs"),
        }
    )
    dataset = spec.dataset.model_copy(
        update={
            "validation_samples": cap(spec.dataset.validation_samples, "validation_samples"),
            "test_samples": cap(spec.dataset.test_samples, "test_samples"),
        }
    )
    return spec.model_copy(update={"train": train, "dataset": dataset})


def prepare(spec: BuildSpec) -> PreparedBuild:
    """Every check of the spec that needs no training; raises with the reason."""
    model, leaves = load_model(spec)
    graph = trace_model(model, leaves)
    layers = graph_layers(graph)
    partition = resolve_partition(spec, layers)
    blocks = split_graph(
        model,
        partition,
        spec.model.input_shape,
        spec.name,
        leaf_modules=leaves,
        input_dtype=_DTYPES[spec.model.input_dtype],
    )
    if spec.model.input_dtype != "FP32":
        raise BuildSpecError(
            "model.inputDtype: the build trains links and times blocks on FP32 inputs; "
            "an INT64 model (token ids) can be split and exported (braid models layers) "
            "but not built yet"
        )
    if spec.model.exported is not None and spec.train.epochs > 0:
        raise BuildSpecError(
            "train.epochs: a torch.export program is inference-only; train the model before "
            "exporting it, or give it as model.function"
        )
    host = _prepare_host(spec)
    data = load_dataset(spec)
    grid = _grid(spec, partition, None if host is None else host.partition)
    log_event(
        logger,
        "user_build.prepared",
        model=spec.name,
        layers=len(layers),
        blocks=len(blocks),
        host_blocks=0 if host is None else len(host.blocks),
    )
    return PreparedBuild(spec, model, layers, partition, blocks, data, grid, host)


def _prepare_host(spec: BuildSpec) -> PreparedHost | None:
    """Load, freeze and split the host; it must take the local model's inputs."""
    if spec.host is None:
        return None
    source = spec.host.model
    if list(source.input_shape) != list(spec.model.input_shape):
        raise BuildSpecError(
            f"host.model.inputShape: {source.input_shape} differs from model.inputShape "
            f"{spec.model.input_shape}; the host takes the local model's inputs (resize them "
            "inside the host's model function)"
        )
    model, leaves = load_source(source, spec.train.seed, "host.model")
    freeze(model)
    layers = graph_layers(trace_model(model, leaves))
    partition = partition_by_name(spec.host.partition.blocks, layers)
    blocks = split_graph(
        model,
        partition,
        source.input_shape,
        spec.host.name,
        leaf_modules=leaves,
        input_dtype=_DTYPES[source.input_dtype],
    )
    for block in blocks:
        freeze(block.module)
    return PreparedHost(model, partition, blocks, _state_digest(model))


def freeze(module: nn.Module) -> nn.Module:
    """Eval mode and no gradients, set flag by flag (a torch.export module refuses eval())."""
    set_training(module, False)
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def _state_digest(model: nn.Module) -> str:
    digest = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def _trained_model(prepared: PreparedBuild, cache: Path, progress: Progress) -> str:
    """Train the whole model if the spec asks (cached by its initial weights, data, settings);
    returns the digest of the weights the blocks now hold."""
    spec, model, data = prepared.spec, prepared.model, prepared.data
    cfg = spec.train
    if cfg.epochs == 0:
        freeze(model)
        return _state_digest(model)
    key = hashlib.sha256(
        json.dumps(
            [USER_BUILD_VERSION, _state_digest(model), data.digest, cfg.model_dump(mode="json")]
        ).encode()
    ).hexdigest()[:16]
    path = cache / f"user-{spec.name}-{key}.pt"
    if path.is_file():
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        log_event(logger, "user_build.model.cached", path=path)
    else:
        train = data.train if cfg.samples is None else data.train.head(cfg.samples)
        steps = cfg.epochs * -(-len(train) // cfg.batch_size)
        with stage(progress, f"train {spec.name}", steps) as step:
            training.train_classifier(
                model,
                train.images,
                train.labels,
                epochs=cfg.epochs,
                batch_size=cfg.batch_size,
                lr=cfg.lr,
                seed=cfg.seed,
                on_step=step,
                augment=cfg.augment,
            )
        torch.save(model.state_dict(), path)
    freeze(model)
    return _state_digest(model)


@dataclass
class UserBuildOutput:
    result: BuildResult
    models: list[str]
    summary: dict[str, Any]
    seconds: float


def run_user_build(
    prepared: PreparedBuild,
    out: Path,
    cache: Path,
    *,
    progress: Progress | None = None,
    results_path: Path | None = None,
) -> UserBuildOutput:
    """Train, build, export; choose on the validation split, report on the test split."""
    started = time.monotonic()
    progress = progress or Progress()
    cache.mkdir(parents=True, exist_ok=True)
    spec = prepared.spec
    weights = _trained_model(prepared, cache, progress)
    for block in prepared.blocks:
        freeze(block.module)
    data = prepared.data
    local_accuracy = accuracy(
        training.run_batched(prepared.model, data.test.images), data.test.labels
    )
    host = prepared.host
    providers = Providers(
        local=prepared.model,
        host=None if host is None else host.model,
        local_blocks=prepared.blocks,
        host_blocks=[] if host is None else host.blocks,
        local_accuracy=local_accuracy,
        local_hash=weights,
        host_hash="" if host is None else host.weights,
        local_info=ProviderInfo(spec.name, spec.task, _source(spec.model), prepared.partition),
        host_info=None
        if host is None or spec.host is None
        else ProviderInfo(spec.host.name, spec.host.task, _source(spec.host.model), host.partition),
    )
    cfg = spec.train
    config = BuildConfig(
        profile=f"user:{spec.name}",
        train=TrainConfig(
            batch_size=cfg.batch_size,
            link_samples=cfg.link_samples,
            mimic_epochs=cfg.link_epochs,
            finetune_epochs=1,
            finetune_samples=min(cfg.link_samples, 2000),
            exit_epochs=cfg.link_epochs,
            seed=cfg.seed,
        ),
        grid=prepared.grid,
        timing_repeats=50,
    )
    result = build(config, cache_dir=cache, dataset=data, progress=progress, providers=providers)
    step = progress.stage("export Triton repository", len(models_in_catalog(result.catalog)))
    models = export_repository(result, out, on_model=step)
    progress.done("export Triton repository")
    assert data.validation is not None
    validation_acc, validation_exits = evaluate_paths(
        result.plans, result.modules, prepared.blocks, data.validation, progress
    )
    summary = select_on_validation(
        result.catalog, validation_acc, validation_exits, spec.max_accuracy_drop_pt
    )
    summary = {"model": spec.name, "build_hash": result.build_hash, **summary}
    if results_path is not None:
        results_path.parent.mkdir(parents=True, exist_ok=True)
        results_path.write_text(json.dumps(summary, indent=2) + "\n")
    return UserBuildOutput(result, models, summary, time.monotonic() - started)


def _source(model: ModelSource) -> str:
    return model.function or str(model.exported or model.torchscript)


def select_on_validation(
    catalog: PathCatalog,
    validation_accuracy: Mapping[str, float],
    validation_exits: Mapping[str, list[dict[str, float]]],
    max_drop_pt: float,
) -> dict[str, Any]:
    """The path and exit thresholds chosen on validation, with their test figures.

    Local compute is counted both ways: MACs skipped locally (as the CoDE paper counts) and
    measured batch-1 time.
    """
    original = catalog.path(catalog.original_path)
    base_val = validation_accuracy[original.id]
    base_macs = original.metrics.macs_local
    base_us = original.metrics.compute_us_local
    rows: list[dict[str, Any]] = []
    for p in catalog.paths:
        rows.append(
            {
                "path": p.id,
                "validation_accuracy": round(validation_accuracy[p.id], 4),
                "test_accuracy": round(p.metrics.accuracy, 4),
                "local_macs_cut_pct": round(100 * (1 - p.metrics.macs_local / base_macs), 1)
                if base_macs
                else 0.0,
                "local_time_cut_pct": round(100 * (1 - p.metrics.compute_us_local / base_us), 1),
            }
        )
    within = [r for r in rows if 100 * (base_val - r["validation_accuracy"]) <= max_drop_pt + 1e-9]
    chosen = max(within, key=lambda r: (r["local_macs_cut_pct"], r["validation_accuracy"]))
    thresholds: dict[str, dict[str, Any]] = {}
    for p in catalog.paths:
        val = validation_exits.get(p.id)
        if not val or not p.exit_profile:
            continue
        ok = [pt for pt in val if 100 * (base_val - pt["accuracy"]) <= max_drop_pt + 1e-9]
        pick = min(ok, key=lambda pt: pt["confidence"]) if ok else None
        if pick is None:
            thresholds[p.id] = {"confidence": None, "reason": "no threshold within the budget"}
            continue
        test = next(e for e in p.exit_profile if e.confidence == pick["confidence"])
        thresholds[p.id] = {
            "confidence": pick["confidence"],
            "validation_exit_rate": round(pick["exit_rate"], 4),
            "validation_accuracy": round(pick["accuracy"], 4),
            "test_exit_rate": test.exit_rate,
            "test_accuracy": test.accuracy,
            "expected_local_time_cut_pct": round(100 * (1 - test.compute_us_local / base_us), 1),
        }
    return {
        "selection_split": "validation",
        "max_accuracy_drop_pt": max_drop_pt,
        "baseline": {
            "validation_accuracy": round(base_val, 4),
            "test_accuracy": original.metrics.accuracy,
        },
        "chosen_path": chosen,
        "exit_thresholds": thresholds,
        "thresholds_tried": list(EXIT_THRESHOLDS),
        "paths": rows,
    }
