"""Shared building blocks of the ``braid.dev/v1alpha1`` API.

The pydantic models in ``braid.api`` are the single source of truth of the API: the CRDs in
``crds/`` are generated from them (``braid.render.crds``), and the operator parses custom
resources with them. Field names are camelCase on the wire (Kubernetes convention) and
snake_case in Python.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

GROUP = "braid.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
CATEGORY = "braid"

Tier = Literal["local", "edge", "cloud"]
"""Node pools, labelled ``braid.dev/tier`` on the nodes."""

TIER_LABEL = "braid.dev/tier"

DataType = Literal["FP32", "FP16", "INT64", "INT32", "INT8", "UINT8", "BOOL", "BYTES"]
"""Triton / KServe v2 tensor data types."""

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


def cel(rule: str, message: str, field_path: str | None = None) -> dict[str, Any]:
    """One ``x-kubernetes-validations`` rule; ``field_path`` makes the API server name the field."""
    out: dict[str, Any] = {"rule": rule, "message": message}
    if field_path is not None:
        out["fieldPath"] = field_path
    return out


class ApiModel(BaseModel):
    """Base of every spec: camelCase aliases, unknown fields refused, frozen values."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )


class TensorSpec(ApiModel):
    """A named tensor of a signature; ``-1`` in ``shape`` is a variable dimension."""

    name: str = Field(min_length=1, max_length=128, description="Tensor name as Triton sees it.")
    datatype: DataType = Field(description="KServe v2 data type of the tensor.")
    shape: list[int] = Field(
        min_length=1,
        max_length=8,
        description="Shape without the batch dimension; -1 marks a variable dimension.",
        json_schema_extra={"items": {"type": "integer", "minimum": -1}},
    )


class ArtifactRef(ApiModel):
    """Where an artifact lives. braid never copies weights across providers."""

    uri: str = Field(
        min_length=1,
        max_length=2048,
        pattern=r"^(file|pvc|s3|gs|https|configmap)://.+",
        description="Location of the artifact: file://, pvc://, s3://, gs://, https:// or configmap://.",
    )
    format: Literal["torchscript", "triton-repository"] = Field(
        default="torchscript", description="How the artifact is packaged."
    )


class ObjectRef(ApiModel):
    """A reference to another braid object; an empty namespace means the referrer's own."""

    name: str = Field(min_length=1, max_length=63, pattern=DNS_LABEL, description="Object name.")
    namespace: str | None = Field(
        default=None,
        max_length=63,
        pattern=DNS_LABEL,
        description="Namespace of the object; defaults to the referrer's namespace.",
    )


class Condition(ApiModel):
    """A status condition, as ``metav1.Condition``."""

    type: str = Field(description="Condition type, e.g. Ready, Degraded.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(default="", description="CamelCase reason for the last transition.")
    message: str = Field(default="", description="Human-readable details.")
    last_transition_time: str | None = Field(default=None, description="RFC 3339 time.")
    observed_generation: int | None = Field(default=None, description="Generation observed.")
