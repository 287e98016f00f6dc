"""The graph splitter: cuts by name, one tensor per cut, clear errors before any training."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from braid.api.v1alpha1.model import Partition, PartitionBlock
from braid.tooling.build import seeded_model
from braid.tooling.build_spec import BuildSpecError, load_build_spec
from braid.tooling.graph_split import graph_layers, partition_from_cuts, split_graph, trace_model
from braid.tooling.split import PartitionError
from braid.tooling.user_build import prepare
from braid.tooling.zoo import fmnist_cnn

pytestmark = pytest.mark.unit


class Residual(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(width, width, 3, padding=1)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv(x) + x)


class TinyResNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.block1 = Residual(4)
        self.block2 = Residual(4)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block2(self.block1(self.stem(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


def tiny_resnet() -> nn.Module:
    torch.manual_seed(0)
    return TinyResNet().eval()


def tiny_splits(with_validation: bool = True) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    splits = {
        name: (torch.rand((8, 1, 6, 6), generator=gen), torch.randint(0, 3, (8,), generator=gen))
        for name in ("train", "validation", "test")
    }
    if not with_validation:
        del splits["validation"]
    return splits


def splits_without_validation() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    return tiny_splits(with_validation=False)


CUTS = [("stem", "stem"), ("r1", "block1"), ("r2", "block2"), ("head", None)]


def test_residual_model_splits_at_named_blocks_and_chains_to_the_same_output() -> None:
    model = tiny_resnet()
    layers = graph_layers(trace_model(model))
    partition = partition_from_cuts(layers, CUTS)
    blocks = split_graph(model, partition, (1, 6, 6), "tiny")
    x = torch.rand((5, 1, 6, 6))
    with torch.no_grad():
        chained = x
        for block in blocks:
            chained = block.module(x if block.index == 0 else chained)
        assert torch.allclose(chained, model(x), atol=1e-6)
    assert [b.output_shape for b in blocks] == [(4, 6, 6), (4, 6, 6), (4, 6, 6), (3,)]
    assert sum(b.params for b in blocks) == sum(p.numel() for p in model.parameters())


def test_a_cut_inside_a_residual_block_is_refused_naming_both_tensors() -> None:
    model = tiny_resnet()
    layers = graph_layers(trace_model(model))
    partition = partition_from_cuts(layers, [("a", "block1.conv"), ("b", None)])
    with pytest.raises(PartitionError, match="2 tensors cross") as err:
        split_graph(model, partition, (1, 6, 6), "tiny")
    assert "stem" in str(err.value)
    assert "block1_conv" in str(err.value)


def test_an_unknown_layer_name_is_refused_with_the_closest_names() -> None:
    layers = graph_layers(trace_model(tiny_resnet()))
    with pytest.raises(PartitionError, match=r"no layer or module named 'blok1'.*block1"):
        partition_from_cuts(layers, [("a", "blok1"), ("b", None)])


def test_cuts_out_of_execution_order_are_refused() -> None:
    layers = graph_layers(trace_model(tiny_resnet()))
    with pytest.raises(PartitionError, match="execution order"):
        partition_from_cuts(layers, [("a", "block2"), ("b", "block1"), ("c", None)])


def test_a_model_with_two_inputs_is_refused() -> None:
    class TwoInputs(nn.Module):
        def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return x + y

    with pytest.raises(PartitionError, match="takes 2 inputs"):
        split_graph(
            TwoInputs(),
            Partition(blocks=[PartitionBlock(name="a", first_layer=0, last_layer=0)]),
            (3,),
            "two",
        )


def test_torch_export_program_splits_like_the_module(tmp_path: Path) -> None:
    model = seeded_model(fmnist_cnn, 0).eval()
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.export.export(
        model, (torch.zeros((2, 1, 28, 28)),), dynamic_shapes=({0: batch},)
    )
    path = tmp_path / "cnn.pt2"
    torch.export.save(program, str(path))
    exported = torch.export.load(str(path)).module()
    layers = graph_layers(trace_model(exported))
    # torch.export keeps the module paths, so the cuts are named as for the module itself.
    partition = partition_from_cuts(layers, [("a", "4"), ("b", "18"), ("c", None)])
    blocks = split_graph(exported, partition, (1, 28, 28), "exported")
    x = torch.rand((3, 1, 28, 28))
    with torch.no_grad():
        out = x
        for block in blocks:
            out = block.module(out)
        assert torch.allclose(out, model(x), atol=1e-5)


def test_seeded_model_gives_the_same_initial_weights_whatever_was_drawn_before() -> None:
    first = seeded_model(fmnist_cnn, 7)
    torch.rand(1000)  # another draw in between, as a fresh process's imports may make
    second = seeded_model(fmnist_cnn, 7)
    for (name, a), (_, b) in zip(
        first.state_dict().items(), second.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name


def _spec(tmp_path: Path, **overrides: str) -> Path:
    fields = {
        "loader": "tests.unit.test_graph_split:tiny_splits",
        "end1": "block1",
    } | overrides
    text = f"""
name: tiny
model:
  function: tests.unit.test_graph_split:tiny_resnet
  inputShape: [1, 6, 6]
dataset:
  loader: {fields["loader"]}
partition:
  blocks:
    - {{name: stem, end: stem}}
    - {{name: r1, end: "{fields["end1"]}"}}
    - {{name: head}}
paths: {{exits: [r1]}}
"""
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    return path


def test_a_good_spec_prepares_its_blocks_and_splits(tmp_path: Path) -> None:
    prepared = prepare(load_build_spec(_spec(tmp_path)))
    assert [b.name for b in prepared.blocks] == ["stem", "r1", "head"]
    assert prepared.data.validation is not None
    assert len(prepared.data.validation) == 8
    assert prepared.grid.exits == (1,)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"end1": "block9"}, "no layer or module named 'block9'"),
        ({"end1": "block1.conv"}, "2 tensors cross"),
        ({"loader": "tests.unit.test_graph_split:splits_without_validation"}, "no 'validation'"),
        ({"loader": "tests.unit.test_graph_split:nowhere"}, "has no function nowhere"),
    ],
)
def test_bad_specs_fail_in_prepare_before_any_training(
    tmp_path: Path, overrides: dict[str, str], message: str
) -> None:
    with pytest.raises((BuildSpecError, PartitionError), match=message):
        prepare(load_build_spec(_spec(tmp_path, **overrides)))
