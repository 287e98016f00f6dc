"""The build spec of ``braid models build -f spec.yaml``: a user's model, its cuts, its data.

::

    name: resnet18-cifar                      # the Model's name (Triton models <name>.<block>)
    model:
      function: braid.tooling.architectures:resnet18_cifar   # or torchscript: / exported:
      inputShape: [3, 32, 32]
    dataset:
      loader: mypackage.data:load_splits      # returns train / validation / test splits
    partition:                                # the Model resource's partition, by name
      blocks:
        - {name: stem, end: maxpool}          # a graph node or a module path
        - {name: l1, end: layer1}
        - {name: head}                        # the last block runs to the end
    paths: {exits: [stem, l1], skips: [[stem, l2]], sizes: [normal]}
    train: {epochs: 2}                        # 0: the model comes trained
    selectionSplit: validation

A ``host`` (a pretrained model of another task, frozen: only links are trained) adds cross
paths, ``paths.cross: [[lout, hin, hout, lin]]`` by block names (local, host, host, local)::

    host:
      name: effnet-lite0
      task: imagenet
      model: {function: braid.tooling.architectures:efficientnet_lite0_fmnist_host,
              inputShape: [1, 28, 28], leafModules: ["mb*"]}
      partition: {blocks: [{name: h0, end: mb2}, ..., {name: hhead}]}

A block may give ``firstLayer``/``lastLayer`` instead of ``end``: indices into the graph's
layers as ``braid models layers -f`` prints them (the form the Model resource stores).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from braid.api.common import DNS_LABEL, ApiModel


class BuildSpecError(ValueError):
    """The build spec is wrong; the message says which field and why."""


class ModelSource(ApiModel):
    """Exactly one of the three sources."""

    function: str | None = Field(
        default=None, description="module:function returning an nn.Module (importable)."
    )
    torchscript: Path | None = Field(default=None, description="A saved TorchScript file.")
    exported: Path | None = Field(default=None, description="A torch.export.save program.")
    input_shape: list[int] = Field(min_length=1, max_length=8, description="Without batch.")
    input_dtype: Literal["FP32", "INT64"] = "FP32"
    leaf_modules: list[str] = Field(
        default_factory=list, description="Glob patterns of submodules the tracer keeps whole."
    )

    @model_validator(mode="after")
    def _one_source(self) -> ModelSource:
        given = [k for k in ("function", "torchscript", "exported") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError(
                "model: give exactly one of function, torchscript, exported "
                f"(given: {', '.join(given) or 'none'})"
            )
        return self


class DatasetSource(ApiModel):
    loader: str = Field(
        description="module:function returning a mapping with train, validation and test "
        "splits, each (inputs, labels) tensors."
    )
    validation_samples: int | None = Field(
        default=None, ge=1, description="Use the first this many validation samples."
    )
    test_samples: int | None = Field(
        default=None, ge=1, description="Use the first this many test samples."
    )


class CutPoint(ApiModel):
    name: str = Field(min_length=1, max_length=40, pattern=DNS_LABEL)
    end: str | None = Field(default=None, description="Last graph node or module of the block.")
    first_layer: int | None = Field(default=None, ge=0)
    last_layer: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _one_form(self) -> CutPoint:
        if self.end is not None and (self.first_layer is not None or self.last_layer is not None):
            raise ValueError(f"block {self.name}: give end, or firstLayer/lastLayer, not both")
        if (self.first_layer is None) != (self.last_layer is None):
            raise ValueError(f"block {self.name}: firstLayer and lastLayer go together")
        return self


class PartitionByName(ApiModel):
    blocks: list[CutPoint] = Field(min_length=1, max_length=64)


LinkSize = Literal["normal", "reduced4"]


def _normal_only() -> list[LinkSize]:
    return ["normal"]


class PathGrid(ApiModel):
    """Which paths to build, by block name. Cross connections need a ``host``."""

    exits: list[str] = Field(default_factory=list, description="Blocks with an exit head.")
    skips: list[tuple[str, str]] = Field(
        default_factory=list, description="(lout, lin) block pairs a skip link joins."
    )
    cross: list[tuple[str, str, str, str]] = Field(
        default_factory=list,
        description="(lout, hin, hout, lin): local blocks to lout, a link into the host's "
        "block hin, the host's blocks to hout, a link back into local block lin.",
    )
    sizes: list[LinkSize] = Field(default_factory=_normal_only)


class TrainSpec(ApiModel):
    epochs: int = Field(default=0, ge=0, description="Train the whole model first; 0: as given.")
    samples: int | None = Field(default=None, ge=1)
    batch_size: int = Field(default=128, ge=1)
    lr: float = Field(default=3e-3, gt=0)
    augment: bool = Field(default=False, description="Image flips and shifts while training.")
    link_samples: int = Field(default=5000, ge=1)
    link_epochs: int = Field(default=2, ge=1)
    seed: int = 0


class HostSpec(ApiModel):
    """A pretrained model of another task whose blocks cross paths borrow; it stays frozen.

    It takes the local model's inputs (``model.inputShape`` the same), resizing them itself
    if it was trained on another size: the entry links learn to hand its block ``hin`` what
    its own first blocks compute on the same input.
    """

    name: str = Field(min_length=1, max_length=40, pattern=DNS_LABEL)
    task: str = Field(default="host task", description="What the host was trained for.")
    model: ModelSource
    partition: PartitionByName


class BuildSpec(ApiModel):
    name: str = Field(min_length=1, max_length=40, pattern=DNS_LABEL)
    task: str = Field(default="user task", description="What the model does, for the catalog.")
    model: ModelSource
    dataset: DatasetSource
    partition: PartitionByName
    host: HostSpec | None = None
    paths: PathGrid = Field(default_factory=PathGrid)
    train: TrainSpec = Field(default_factory=TrainSpec)
    selection_split: Literal["validation"] = Field(
        default="validation",
        description="Split that chooses exit thresholds; the test split only reports.",
    )
    max_accuracy_drop_pt: float = Field(default=2.0, ge=0)


def load_build_spec(path: Path) -> BuildSpec:
    """The spec in ``path``; relative file paths in it are taken from the spec's folder."""
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise BuildSpecError(f"{path}: {exc}") from None
    if not isinstance(raw, dict):
        raise BuildSpecError(f"{path}: expected a mapping at the top level")
    try:
        spec = BuildSpec.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise BuildSpecError(f"{path}: {where}: {first['msg']}") from None
    spec = spec.model_copy(update={"model": _from_folder(spec.model, path.parent)})
    if spec.host is not None:
        host = spec.host.model_copy(update={"model": _from_folder(spec.host.model, path.parent)})
        spec = spec.model_copy(update={"host": host})
    return spec


def _from_folder(model: ModelSource, folder: Path) -> ModelSource:
    """``model`` with its relative file paths taken from ``folder``."""
    updates = {
        key: folder / value
        for key, value in (("torchscript", model.torchscript), ("exported", model.exported))
        if value is not None and not value.is_absolute()
    }
    return model.model_copy(update=updates) if updates else model
