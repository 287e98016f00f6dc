"""A partition that does not fit the model fails with the block and the shapes named."""

from __future__ import annotations

from pathlib import Path

import pytest
from torch import nn

from braid.api.v1alpha1.model import Partition, PartitionBlock
from braid.tooling.data import DatasetMissingError, load_fashion_mnist
from braid.tooling.split import PartitionError, split_model
from braid.tooling.zoo import FMNIST_PARTITION, INPUT_SHAPE, fmnist_cnn


def part(*ranges: tuple[int, int]) -> Partition:
    return Partition(
        blocks=[
            PartitionBlock(name=f"b{i}", first_layer=a, last_layer=b)
            for i, (a, b) in enumerate(ranges)
        ]
    )


def test_default_partition_cuts_the_local_model_into_seven_blocks() -> None:
    model = fmnist_cnn().eval()
    blocks = split_model(model, FMNIST_PARTITION, INPUT_SHAPE, "fmnist-cnn")
    assert [b.output_shape for b in blocks] == [
        (16, 14, 14),
        (32, 7, 7),
        (64, 7, 7),
        (64, 7, 7),
        (64, 3, 3),
        (128,),
        (10,),
    ]
    assert sum(b.params for b in blocks) == sum(p.numel() for p in model.parameters())
    assert 5_000_000 < sum(b.macs for b in blocks) < 6_500_000


def test_blocks_compute_what_the_whole_model_computes() -> None:
    import torch

    model = fmnist_cnn().eval()
    blocks = split_model(model, FMNIST_PARTITION, INPUT_SHAPE, "fmnist-cnn")
    x = torch.rand(4, *INPUT_SHAPE)
    y = x
    for b in blocks:
        y = b.module(y)
    assert torch.equal(y, model(x))


def test_splitting_a_frozen_model_keeps_its_layers_frozen() -> None:
    import torch

    model = fmnist_cnn().eval()
    stats = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    assert stats, "the model has BatchNorm layers"
    blocks = split_model(model, FMNIST_PARTITION, INPUT_SHAPE, "fmnist-cnn")
    assert not any(m.training for b in blocks for m in b.module.modules())
    y = torch.rand(8, *INPUT_SHAPE)
    for b in blocks:
        y = b.module(y)
    # Eval-mode BatchNorm reads its running statistics and never updates them.
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in stats.items())


def test_a_model_in_training_stays_in_training() -> None:
    model = fmnist_cnn().train()
    blocks = split_model(model, FMNIST_PARTITION, INPUT_SHAPE, "fmnist-cnn")
    assert all(m.training for b in blocks for m in b.module.modules())


def test_a_block_that_cannot_take_its_input_names_block_and_shapes() -> None:
    # fc1 (layers 19..21: flatten + Linear(576, 128)) placed right after conv4 (64x7x7).
    bad = part((0, 4), (5, 8), (9, 11), (12, 14), (19, 21), (22, 22))
    with pytest.raises(PartitionError) as err:
        split_model(fmnist_cnn(), bad, INPUT_SHAPE, "fmnist-cnn")
    text = str(err.value)
    assert "must start at layer 15" in text
    assert "b4" in text


def test_shape_mismatch_is_reported_with_the_producing_block() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10), nn.Linear(20, 5))
    with pytest.raises(PartitionError) as err:
        split_model(model, part((0, 1), (2, 2)), INPUT_SHAPE, "toy")
    text = str(err.value)
    assert "block b1" in text
    assert "(10,)" in text  # the shape it was handed
    assert "block b0's output" in text


def test_wrong_model_input_is_named() -> None:
    with pytest.raises(PartitionError, match=r"block b0 .*shape \(3, 32, 32\).*model input"):
        split_model(fmnist_cnn(), FMNIST_PARTITION, (3, 32, 32), "fmnist-cnn")


def test_gaps_overlaps_and_overruns_are_refused() -> None:
    model = fmnist_cnn()
    with pytest.raises(PartitionError, match=r"layers 5\.\.5 belong to no block"):
        split_model(model, part((0, 4), (6, 22)), INPUT_SHAPE, "m")
    with pytest.raises(PartitionError, match="overlaps the previous block"):
        split_model(model, part((0, 4), (4, 22)), INPUT_SHAPE, "m")
    with pytest.raises(PartitionError, match="only 23 layers"):
        split_model(model, part((0, 4), (5, 30)), INPUT_SHAPE, "m")
    with pytest.raises(PartitionError, match=r"layers 19\.\.22 belong to no block"):
        split_model(model, part((0, 4), (5, 18)), INPUT_SHAPE, "m")


def test_missing_dataset_names_the_package(tmp_path: Path) -> None:
    with pytest.raises(DatasetMissingError, match="dataset-fashion-mnist"):
        load_fashion_mnist(tmp_path)
