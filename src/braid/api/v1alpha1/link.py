"""``Link``: a small learnable module that connects one block's output to another's input.

A skip link stays inside one model. A cross-connection is two links (entry: local ``lout`` →
host ``hin``; exit: host ``hout`` → local ``lin``), both living in the *host* provider's
namespace and served on its Triton pods, so only tensors ever cross providers.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from braid.api.common import ApiModel, ArtifactRef, Condition, ObjectRef, TensorSpec, cel


class BlockEndpointRef(ApiModel):
    """A model and the index of one block of its partition."""

    model: ObjectRef = Field(description="The Model the block belongs to.")
    block: int = Field(ge=0, le=63, description="Index of the block in the model's partition.")


class LinkArchitecture(ApiModel):
    """Shape of the link module (CoDE: 1-2 conv layers, a 1x1 bottleneck or a linear layer)."""

    type: Literal["conv", "bottleneck", "linear"] = Field(description="Layer family of the link.")
    reduction: int = Field(
        default=1,
        ge=1,
        le=64,
        description="reduced-k: the first layer shrinks channels k-fold, the second restores; 1 = normal.",
    )


class LinkSpec(ApiModel):
    """Desired state of one link."""

    type: Literal["skip", "cross-entry", "cross-exit"] = Field(
        description="skip: lout -> lin in one model; cross-entry: local lout -> host hin; "
        "cross-exit: host hout -> local lin."
    )
    from_: BlockEndpointRef = Field(alias="from", description="Block whose output feeds the link.")
    to: BlockEndpointRef = Field(description="Block whose input the link produces.")
    architecture: LinkArchitecture = Field(description="The link module's architecture.")
    artifact: ArtifactRef = Field(description="The trained link (its exported ONNX model).")
    input: TensorSpec | None = Field(default=None, description="Input tensor (from-block output).")
    output: TensorSpec | None = Field(default=None, description="Output tensor (to-block input).")
    served_by: ObjectRef | None = Field(
        default=None,
        description="Block (in this namespace) whose Triton pods serve the link; "
        "for cross links a block of the host's model.",
    )

    model_config = ApiModel.model_config | {
        "populate_by_name": True,
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel(
                    "self.type != 'skip' || self.to.block > self.from.block + 1",
                    "a skip link needs to.block > from.block + 1 (lin > lout + 1)",
                    ".to.block",
                ),
                cel(
                    "self.type != 'skip' || self.to.model.name == self.from.model.name",
                    "a skip link stays inside one model: from.model and to.model must match",
                    ".to.model.name",
                    "'a skip link stays inside one model: to.model.name ' + self.to.model.name "
                    "+ ' is not from.model.name ' + self.from.model.name",
                ),
                # Namespaces as well as names: an unset namespace is the Link's own, which
                # CEL cannot see, so two set namespaces must agree and the admission webhook
                # compares the resolved ones.
                cel(
                    "self.type != 'skip' || !has(self.to.model.__namespace__) "
                    "|| !has(self.from.model.__namespace__) "
                    "|| self.to.model.__namespace__ == self.from.model.__namespace__",
                    "a skip link stays inside one model: from.model.namespace and "
                    "to.model.namespace must match",
                    ".to.model.namespace",
                ),
                cel(
                    "self.type == 'skip' || self.to.model.name != self.from.model.name "
                    "|| (has(self.to.model.__namespace__) && has(self.from.model.__namespace__) "
                    "&& self.to.model.__namespace__ != self.from.model.__namespace__)",
                    "a cross link connects two different models",
                    ".to.model",
                ),
                cel(
                    "self.type == 'skip' || has(self.to.model.__namespace__) "
                    "!= has(self.from.model.__namespace__)",
                    "a cross link lives in the host's namespace: exactly one end (the local "
                    "model's) names another namespace",
                    ".to.model.namespace",
                ),
                cel(
                    "self.type != 'cross-entry' || !has(self.to.model.__namespace__)",
                    "a cross-entry link enters the host's model: to.model is in the Link's own "
                    "namespace, so to.model.namespace stays unset",
                    ".to.model.namespace",
                ),
                cel(
                    "self.type != 'cross-exit' || !has(self.from.model.__namespace__)",
                    "a cross-exit link leaves the host's model: from.model is in the Link's own "
                    "namespace, so from.model.namespace stays unset",
                    ".from.model.namespace",
                ),
                cel(
                    "!has(self.input) || size(self.input.shape) == 0 || self.input.shape[0] == -1 "
                    "|| (self.architecture.type == 'linear' ? "
                    "self.architecture.reduction <= self.input.shape[size(self.input.shape) - 1] : "
                    "self.architecture.reduction <= self.input.shape[0])",
                    "architecture.reduction must not exceed the input's channel count",
                    ".architecture.reduction",
                ),
                cel(
                    "!has(self.servedBy) || !has(self.servedBy.__namespace__)",
                    "servedBy is a Block of the Link's own namespace: leave servedBy.namespace unset",
                    ".servedBy.namespace",
                ),
            ]
        },
    }


class LinkStatus(ApiModel):
    observed_generation: int | None = None
    served_by: str | None = Field(default=None, description="Deployment serving the link.")
    conditions: list[Condition] = Field(default_factory=list)


class Link(ApiModel):
    api_version: str = "braid.dev/v1alpha1"
    kind: Literal["Link"] = "Link"
    spec: LinkSpec
