"""The sentence-disjoint validation split and the training batches, on made-up phrases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from braid.dimee.data import disjoint_split, normalize, source_sentences
from braid.dimee.evaluate import SLACK_PT, pick
from braid.dimee.train import exit_weights, length_batches

pytestmark = pytest.mark.unit

# Three source sentences and their sub-phrases, as GLUE's SST-2 train lists them.
PHRASES = [
    "a gorgeous , witty film",  # source 0
    "gorgeous , witty",
    "witty",
    "the film",
    "the film 's plot is a mess",  # source 1
    "'s plot is a mess",
    "is a mess",
    "a mess",
    "the film drags",  # source 2
    "drags",
    "The  Film",  # the same phrase as "the film" after normalising
]


def test_source_sentences_are_the_phrases_no_other_phrase_contains() -> None:
    roots = source_sentences(PHRASES)
    assert [PHRASES[i] for i in roots] == [
        "a gorgeous , witty film",
        "the film 's plot is a mess",
        "the film drags",
    ]
    assert normalize(" The  Film ") == "the film"


@pytest.mark.parametrize("seed", range(6))
def test_no_training_phrase_comes_only_from_a_validation_sentence(seed: int) -> None:
    split = disjoint_split(PHRASES, validation_sentences=1, seed=seed)
    (held,) = split.validation
    assert held in source_sentences(PHRASES)
    held_text = normalize(PHRASES[held])
    trained = {normalize(PHRASES[i]) for i in split.train}
    assert held_text not in trained
    others = [normalize(PHRASES[i]) for i in source_sentences(PHRASES) if i != held]
    for phrase in trained:  # each comes from a training sentence
        assert any(f" {phrase} " in f" {o} " for o in others)
    if held_text == "the film 's plot is a mess":
        assert "a mess" not in trained
        assert "'s plot is a mess" not in trained
        assert "the film" in trained  # also a phrase of "the film drags"
    if held_text == "the film drags":
        assert "drags" not in trained
        assert "the film" in trained  # also a phrase of a training sentence
    assert set(split.train).isdisjoint(split.validation)


def test_exit_weights_grow_with_depth_and_sum_to_one() -> None:
    w = exit_weights(6)
    assert torch.isclose(w.sum(), torch.tensor(1.0))
    assert torch.all(w[1:] > w[:-1])
    assert torch.isclose(w[5] / w[0], torch.tensor(6.0))


def test_length_batches_cover_every_row_once_with_similar_lengths() -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 60, size=5000)
    batches = length_batches(lengths, 32, np.random.default_rng(1))
    rows = np.concatenate(batches)
    assert sorted(rows.tolist()) == list(range(5000))
    spread = np.mean([lengths[b].max() - lengths[b].min() for b in batches])
    assert spread < 5  # against ~55 for batches drawn at random


def test_the_operating_point_is_the_cheapest_within_the_slack_else_the_most_accurate() -> None:
    points = [(0.5, 0.80, 0.2), (0.9, 0.897, 0.5), (0.99, 0.90, 0.8), (1.0, 0.901, 1.0)]
    assert pick(points, reference=0.90) == 1  # 0.3 pt below 0.90 is allowed
    assert SLACK_PT == 0.3
    assert pick(points, reference=0.95) == 3  # none within: the most accurate
