"""``Block``: one deployable segment of a model, served by Triton on a tier's node pool."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from braid.api.common import (
    DNS_LABEL,
    IMAGE_REFERENCE,
    LABEL_VALUE,
    ApiModel,
    ArtifactRef,
    Condition,
    ObjectRef,
    Tier,
    cel,
)

DEFAULT_TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:24.10-py3"


class PartitionRange(ApiModel):
    """The contiguous run of the model's partition blocks this segment serves."""

    first: int = Field(ge=0, le=63, description="Index of the first partition block (inclusive).")
    last: int = Field(ge=0, le=63, description="Index of the last partition block (inclusive).")

    model_config = ApiModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel("self.last >= self.first", "last must be >= first", ".last")
            ]
        }
    }


class BlockResources(ApiModel):
    """Container resources; ``gpu`` becomes an ``nvidia.com/gpu`` request and limit."""

    cpu: str = Field(
        default="1",
        max_length=12,
        pattern=r"^([1-9][0-9]{0,6}m|[0-9]{1,4}(\.[0-9]{1,3})?)$",
        description="CPU request as a Kubernetes quantity in cores or millicores, e.g. 500m or 2.",
    )
    memory: str = Field(
        default="2Gi",
        max_length=12,
        pattern=r"^[1-9][0-9]{0,6}(Ki|Mi|Gi|Ti|k|M|G|T)$",
        description="Memory request and limit as a Kubernetes quantity with its unit, e.g. 2Gi "
        "(a bare number would be bytes).",
    )
    gpu: int = Field(default=0, ge=0, le=8, description="nvidia.com/gpu count.")


class DynamicBatching(ApiModel):
    max_queue_delay_microseconds: int = Field(
        default=100, ge=0, le=1_000_000, description="Longest a request waits to be batched."
    )
    preferred_batch_sizes: list[int] = Field(
        default_factory=list,
        max_length=8,
        description="Batch sizes Triton prefers to form.",
        json_schema_extra={
            "items": {"type": "integer", "minimum": 1, "maximum": 1024},
            "x-kubernetes-list-type": "set",
        },
    )


class TritonSettings(ApiModel):
    image: str = Field(
        default=DEFAULT_TRITON_IMAGE,
        min_length=1,
        max_length=255,
        pattern=IMAGE_REFERENCE,
        description="Triton server container image (registry/path:tag[@sha256:digest]); the "
        "operator admits only the prefixes its image allow-list names.",
    )
    max_batch_size: int = Field(default=32, ge=0, le=1024, description="0 disables batching.")
    instance_count: int = Field(default=1, ge=1, le=16, description="Model instances per pod.")
    dynamic_batching: DynamicBatching | None = Field(
        default=None, description="Dynamic batching; omit to disable."
    )
    shm_size: str = Field(
        default="256Mi",
        max_length=8,
        pattern=r"^[1-9][0-9]{0,5}(Ki|Mi|Gi)$",
        description="Size of the /dev/shm emptyDir the Python backend needs, a quantity with "
        "its unit (Ki, Mi or Gi).",
    )


class BlockSpec(ApiModel):
    """Desired state of one served segment."""

    model_ref: ObjectRef = Field(description="The Model this block belongs to.")
    partitions: PartitionRange = Field(description="Which partition blocks this segment runs.")
    tier: Tier = Field(description="Node pool tier: local, edge or cloud.")
    node_pool: str | None = Field(
        default=None,
        max_length=63,
        pattern=LABEL_VALUE,
        description="Extra nodeSelector value for braid.dev/pool (a label value).",
    )
    replicas: int = Field(default=1, ge=0, le=100, description="Triton pods.")
    resources: BlockResources = Field(
        default_factory=BlockResources, description="CPU, memory and GPU of each Triton pod."
    )
    triton: TritonSettings = Field(
        default_factory=TritonSettings, description="Triton image, batching and instances."
    )
    model_repository: ArtifactRef | None = Field(
        default=None, description="Triton model repository holding this block's models."
    )
    extra_models: list[str] = Field(
        default_factory=list,
        max_length=8,
        description="Other Triton models of the Model that these pods load beside the "
        "partition's (<model>.<name>), e.g. DIMEE's full model, the original path and the "
        "gateway's fallback, beside its mobile tier on the local pool.",
        json_schema_extra={
            "items": {"type": "string", "maxLength": 40, "pattern": DNS_LABEL},
            "x-kubernetes-list-type": "set",
        },
    )

    model_config = ApiModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel(
                    "self.tier != 'local' || !has(self.resources) || !has(self.resources.gpu) || self.resources.gpu == 0",
                    "the local tier has no GPUs: resources.gpu must be 0 on tier local",
                    ".resources.gpu",
                ),
                cel(
                    "!has(self.triton) || !has(self.triton.dynamicBatching) "
                    "|| !has(self.triton.dynamicBatching.preferredBatchSizes) "
                    "|| !has(self.triton.maxBatchSize) "
                    "|| self.triton.dynamicBatching.preferredBatchSizes.all(s, s <= self.triton.maxBatchSize)",
                    "triton.dynamicBatching.preferredBatchSizes must not exceed triton.maxBatchSize",
                    ".triton.dynamicBatching.preferredBatchSizes",
                ),
            ]
        }
    }


class Endpoint(ApiModel):
    http: str | None = None
    grpc: str | None = None
    metrics: str | None = None


class BlockStatus(ApiModel):
    observed_generation: int | None = None
    replicas: int | None = Field(default=None, description="Pods created.")
    ready_replicas: int | None = Field(default=None, description="Pods ready.")
    endpoint: Endpoint | None = Field(default=None, description="Where the block is served.")
    conditions: list[Condition] = Field(default_factory=list)


class Block(ApiModel):
    api_version: str = "braid.dev/v1alpha1"
    kind: Literal["Block"] = "Block"
    spec: BlockSpec
