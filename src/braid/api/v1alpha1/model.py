"""``Model``: a provider's frozen DNN, its signature, its block partition, what it publishes."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from braid.api.common import DNS_LABEL, ApiModel, ArtifactRef, Condition, TensorSpec, Tier, cel


class PartitionBlock(ApiModel):
    """One block of the partition: a contiguous range of the model's top-level layers."""

    name: str = Field(min_length=1, max_length=40, pattern=DNS_LABEL, description="Block name.")
    first_layer: int = Field(ge=0, le=1023, description="Index of the first layer (inclusive).")
    last_layer: int = Field(ge=0, le=1023, description="Index of the last layer (inclusive).")
    exit_head: bool = Field(
        default=False,
        description="An early-exit head after this block is served with it (Triton model <model>.exit.<index>).",
    )

    model_config = ApiModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel(
                    "self.lastLayer >= self.firstLayer",
                    "lastLayer must be >= firstLayer",
                    ".lastLayer",
                )
            ]
        }
    }


class Partition(ApiModel):
    """The ordered blocks B0..Bn the model is cut into. Block parameters stay frozen."""

    blocks: list[PartitionBlock] = Field(
        min_length=1,
        max_length=64,
        description="Blocks in execution order; layer ranges must be contiguous and cover the model.",
    )

    model_config = ApiModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel(
                    "self.blocks[0].firstLayer == 0",
                    "the first block must start at layer 0",
                    ".blocks",
                ),
                cel(
                    "self.blocks.all(b, self.blocks.exists_one(c, c.name == b.name))",
                    "block names must be unique",
                    ".blocks",
                ),
            ]
        }
    }

    def problems(self) -> list[str]:
        """What the schema cannot say: ranges must be contiguous, one block after the other."""
        out = []
        for prev, cur in zip(self.blocks, self.blocks[1:], strict=False):
            if cur.first_layer != prev.last_layer + 1:
                out.append(
                    f"spec.partition.blocks: block {cur.name!r} starts at layer {cur.first_layer} "
                    f"but {prev.name!r} ends at layer {prev.last_layer}; ranges must be contiguous"
                )
        return out


class Publication(ApiModel):
    """What the provider tells other providers about this model: never its weights."""

    task_family: Literal[
        "image-classification", "text-classification", "object-detection", "other"
    ] = Field(description="Task family other providers can connect to.")
    architecture_family: str = Field(
        min_length=1, max_length=63, description="Architecture family, e.g. cnn, transformer."
    )
    exposed_blocks: list[str] = Field(
        default_factory=list,
        max_length=64,
        description="Blocks other providers may route tensors through (cross-connections).",
    )


class ModelSpec(ApiModel):
    """Desired state of a provider's model."""

    artifact: ArtifactRef = Field(description="The frozen model (owner's namespace only).")
    input: TensorSpec = Field(description="Input signature of the whole model.")
    output: TensorSpec = Field(description="Output signature of the whole model.")
    partition: Partition = Field(description="How the model is cut into blocks.")
    baseline_accuracy: float = Field(
        ge=0.0, le=1.0, description="Test accuracy of the original model, L_A in CoDE (0..1)."
    )
    home_tier: Tier = Field(default="local", description="Tier the provider serves from.")
    catalog: ArtifactRef | None = Field(
        default=None, description="Path catalog produced by `braid models build`."
    )
    publish: Publication | None = Field(
        default=None, description="What other providers may see and use."
    )


class ModelStatus(ApiModel):
    observed_generation: int | None = Field(default=None, description="Last generation handled.")
    blocks: int | None = Field(default=None, description="Number of blocks in the partition.")
    paths: int | None = Field(default=None, description="Paths the catalog offers.")
    ready_blocks: int | None = Field(
        default=None, description="Blocks whose Triton pods are ready."
    )
    conditions: list[Condition] = Field(default_factory=list, description="Ready, Degraded.")


class Model(ApiModel):
    api_version: str = "braid.dev/v1alpha1"
    kind: Literal["Model"] = "Model"
    spec: ModelSpec
