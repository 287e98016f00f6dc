"""``Model``: a provider's frozen DNN, its signature, its block partition, what it publishes."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from braid.api.common import (
    DNS_1035_LABEL,
    DNS_LABEL,
    ApiModel,
    ArtifactRef,
    Condition,
    TensorSpec,
    Tier,
    cel,
)


class PartitionBlock(ApiModel):
    """One block of the partition: a contiguous range of the model's top-level layers."""

    name: str = Field(
        min_length=1,
        max_length=40,
        pattern=DNS_LABEL,
        description="Block name (the Triton model <model>.<name>).",
    )
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
        # A map keyed by name: the API server refuses two blocks of one name ("Duplicate
        # value") and server-side apply merges blocks by name; the order is kept.
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
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
                    "self.blocks.all(b, b.firstLayer == 0 "
                    "|| self.blocks.exists_one(c, c.lastLayer + 1 == b.firstLayer))",
                    "layer ranges must be contiguous: each block starts one layer after another ends",
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
        min_length=1,
        max_length=63,
        pattern=DNS_1035_LABEL,
        description="Architecture family, e.g. cnn, transformer.",
    )
    exposed_blocks: list[str] = Field(
        default_factory=list,
        max_length=64,
        description="Names of the partition blocks other providers may route tensors through "
        "(cross-connections); a cross Link into any other block is refused.",
        json_schema_extra={
            "items": {"type": "string", "maxLength": 40, "pattern": DNS_LABEL},
            "x-kubernetes-list-type": "set",
        },
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

    model_config = ApiModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel(
                    "!has(self.publish) || !has(self.publish.exposedBlocks) "
                    "|| self.publish.exposedBlocks.all(n, self.partition.blocks.exists(b, b.name == n))",
                    "publish.exposedBlocks must name blocks of spec.partition.blocks",
                    ".publish.exposedBlocks",
                ),
                cel(
                    "!has(self.catalog) || self.catalog.uri.startsWith('configmap://') "
                    "|| self.catalog.uri.startsWith('file://')",
                    "catalog.uri must be configmap://<name>[/<key>] (file:// on the local stack only)",
                    ".catalog.uri",
                    "'catalog.uri ' + self.catalog.uri + ' is not a configmap:// (or, on the local stack, file://) uri'",
                ),
            ]
        }
    }


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
