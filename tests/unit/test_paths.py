"""Path ids and the default grid: stable names the CRs, controller and gateway rely on."""

from __future__ import annotations

import pytest
import torch

from braid.tooling.links import make_exit_head, make_link, reduction
from braid.tooling.paths import Grid, plan_paths
from braid.tooling.split import split_model
from braid.tooling.zoo import (
    FMNIST_PARTITION,
    INPUT_SHAPE,
    MNIST_PARTITION,
    fmnist_cnn,
    mnist_cnn,
)


@pytest.fixture(scope="module")
def blocks() -> tuple[list, list]:  # type: ignore[type-arg]
    local = split_model(fmnist_cnn().eval(), FMNIST_PARTITION, INPUT_SHAPE, "fmnist-cnn")
    host = split_model(mnist_cnn().eval(), MNIST_PARTITION, INPUT_SHAPE, "mnist-cnn")
    return local, host


def test_default_grid(blocks: tuple[list, list]) -> None:  # type: ignore[type-arg]
    local, host = blocks
    plans = plan_paths(local, host, Grid())
    ids = [p.id for p in plans]
    assert ids[0] == "fmnist-cnn/original"
    assert len(ids) == len(set(ids))
    kinds = [p.kind for p in plans]
    assert kinds.count("skip") == 15 * 2  # every lin > lout + 1 among 7 blocks, two sizes
    assert kinds.count("exit") == 5
    assert "fmnist-cnn/skip/1-4/reduced4" in ids
    assert "fmnist-cnn/cross/0-mnist-cnn:1-2-5/normal" in ids
    assert "fmnist-cnn/exit/3" in ids
    assert "fmnist-cnn/skip/1-3/normal+exit/3" in ids


def test_cross_path_hops_and_servers(blocks: tuple[list, list]) -> None:  # type: ignore[type-arg]
    local, host = blocks
    grid = Grid(sizes=("reduced4",), skip_pairs=(), cross=((0, 1, 2, 5),), exits=(), combos=())
    (original, cross) = plan_paths(local, host, grid)
    assert [(h.name, h.server) for h in cross.hops] == [
        ("fmnist-cnn.b0", "local"),
        ("mnist-cnn.xin.fmnist-cnn.0-1-2-5.reduced4", "host"),
        ("mnist-cnn.b1", "host"),
        ("mnist-cnn.b2", "host"),
        ("mnist-cnn.xout.fmnist-cnn.0-1-2-5.reduced4", "host"),
        ("fmnist-cnn.b5", "local"),
        ("fmnist-cnn.b6", "local"),
    ]
    assert all(link.server == "host" for link in cross.links)  # CoDE: cross links on the host
    assert original.hops[-1].name == "fmnist-cnn.b6"


def test_invalid_grid_entries_are_refused(blocks: tuple[list, list]) -> None:  # type: ignore[type-arg]
    local, host = blocks
    with pytest.raises(ValueError, match="lin > lout"):
        plan_paths(local, host, Grid(skip_pairs=((2, 3),)))
    with pytest.raises(ValueError, match="exit"):
        plan_paths(local, host, Grid(skip_pairs=(), cross=(), exits=(6,), combos=()))


@pytest.mark.parametrize(
    ("src", "dst"),
    [
        ((16, 14, 14), (64, 3, 3)),
        ((128, 3, 3), (64, 7, 7)),
        ((64, 3, 3), (128,)),
        ((256,), (128,)),
        ((256,), (64, 3, 3)),
    ],
)
@pytest.mark.parametrize("size", ["normal", "reduced4"])
def test_links_map_shapes_and_reduced_ones_are_smaller(
    src: tuple[int, ...], dst: tuple[int, ...], size: str
) -> None:
    link = make_link(src, dst, size)
    assert tuple(link(torch.rand(2, *src)).shape[1:]) == dst
    if size != "normal":
        small = sum(p.numel() for p in link.parameters())
        big = sum(p.numel() for p in make_link(src, dst, "normal").parameters())
        assert small < big


def test_exit_head_and_sizes() -> None:
    assert make_exit_head((64, 7, 7), 10)(torch.rand(3, 64, 7, 7)).shape == (3, 10)
    assert reduction("normal") == 1
    assert reduction("reduced25") == 25
    with pytest.raises(ValueError, match="reduced"):
        reduction("tiny")
