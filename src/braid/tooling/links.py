"""Links (skip and cross connections) and early-exit heads.

A link maps the output tensor of one block to the input shape of another. Following CoDE,
a *normal* link is one layer that converts the shape (a 3x3 conv for feature maps, a linear
layer for vectors) and a *reduced-k* link is two layers whose first shrinks the channels
k-fold and whose second restores them, trading accuracy for parameters. Spatial sizes are
matched with an adaptive max pool (down, before the conv, where it is cheaper) or a
nearest-neighbour upsample (up, after it). Every link ends in a ReLU because every block
input it stands in for is a ReLU (or pooled ReLU) output, and every conv / linear layer of a
link is followed by batch normalisation: with frozen blocks on both sides the link must
rescale one model's feature statistics into another's, and without it the narrow reduced
links often died (all-zero ReLU outputs) in training. At serving time it is one affine op.
"""

from __future__ import annotations

import re

from torch import nn

from braid.tooling.split import Shape

_SIZE_RE = re.compile(r"^(normal|reduced(\d+))$")


def reduction(size: str) -> int:
    """The channel reduction k of a link size (``normal`` is 1, ``reduced4`` is 4)."""
    match = _SIZE_RE.match(size)
    if match is None:
        raise ValueError(f"link size {size!r} must be 'normal' or 'reduced<k>'")
    k = int(match.group(2)) if match.group(2) else 1
    if k < 1:
        raise ValueError(f"link size {size!r}: k must be >= 1")
    return k


def link_architecture(in_shape: Shape, out_shape: Shape, size: str) -> str:
    """The ``Link`` resource's architecture type: conv, bottleneck or linear."""
    if len(in_shape) == 3 and len(out_shape) == 3:
        return "conv" if reduction(size) == 1 else "bottleneck"
    return "linear"


def _resize(src: tuple[int, int], dst: tuple[int, int]) -> tuple[list[nn.Module], list[nn.Module]]:
    """Layers to put before and after the conv so (H, W) becomes ``dst``."""
    if src == dst:
        return [], []
    if src[0] >= dst[0] and src[1] >= dst[1]:
        return [nn.AdaptiveMaxPool2d(dst)], []
    return [], [nn.Upsample(size=dst, mode="nearest")]


def make_link(in_shape: Shape, out_shape: Shape, size: str = "normal") -> nn.Sequential:
    """A fresh (untrained) link from ``in_shape`` to ``out_shape`` (shapes without batch)."""
    k = reduction(size)
    if len(in_shape) == 3 and len(out_shape) == 3:
        c1, h1, w1 = in_shape
        c2, h2, w2 = out_shape
        before, after = _resize((h1, w1), (h2, w2))
        if k == 1:
            core: list[nn.Module] = [*_conv(c1, c2, 3)]
        else:
            mid = max(2, min(c1, c2) // k)
            core = [*_conv(c1, mid, 3), *_conv(mid, c2, 1)]
        return nn.Sequential(*before, *core, *after)
    if len(in_shape) == 3 and len(out_shape) == 1:
        c1, h1, w1 = in_shape
        (d2,) = out_shape
        side = (min(h1, 3), min(w1, 3))
        flat = c1 * side[0] * side[1]
        head: list[nn.Module] = [nn.AdaptiveAvgPool2d(side), nn.Flatten()]
        return nn.Sequential(*head, *_dense(flat, d2, k))
    if len(in_shape) == 1 and len(out_shape) == 1:
        return nn.Sequential(*_dense(in_shape[0], out_shape[0], k))
    if len(in_shape) == 1 and len(out_shape) == 3:
        (d1,) = in_shape
        c2, h2, w2 = out_shape
        if k == 1:
            return nn.Sequential(*_dense(d1, c2 * h2 * w2, 1), nn.Unflatten(1, (c2, h2, w2)))
        mid = max(2, c2 // k)
        return nn.Sequential(
            *_dense(d1, mid * h2 * w2, 1), nn.Unflatten(1, (mid, h2, w2)), *_conv(mid, c2, 1)
        )
    raise ValueError(f"no link from shape {in_shape} to shape {out_shape}")


def _conv(cin: int, cout: int, kernel: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel, padding=kernel // 2), nn.BatchNorm2d(cout), nn.ReLU()]


def _dense(d1: int, d2: int, k: int) -> list[nn.Module]:
    if k == 1:
        return [nn.Linear(d1, d2), nn.BatchNorm1d(d2), nn.ReLU()]
    mid = max(2, min(d1, d2) // k)
    return [
        nn.Linear(d1, mid),
        nn.BatchNorm1d(mid),
        nn.ReLU(),
        nn.Linear(mid, d2),
        nn.BatchNorm1d(d2),
        nn.ReLU(),
    ]


def make_exit_head(in_shape: Shape, num_classes: int) -> nn.Sequential:
    """A small classifier after a block: pool to at most 4x4, then one linear layer.

    Kept to one layer on purpose: CoDE's point against early exits is the parameters they
    add on the local server, so the heads here are the cheapest reasonable ones.
    """
    if len(in_shape) == 1:
        return nn.Sequential(nn.Linear(in_shape[0], num_classes))
    c, h, w = in_shape
    side = (min(h, 4), min(w, 4))
    return nn.Sequential(
        nn.AdaptiveAvgPool2d(side), nn.Flatten(), nn.Linear(c * side[0] * side[1], num_classes)
    )
