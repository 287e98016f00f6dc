"""Shared building blocks of the ``braid.dev/v1alpha1`` API.

The pydantic models in ``braid.api`` are the single source of truth of the API: the CRDs in
``crds/`` are generated from them (``braid.render.crds``), and the operator parses custom
resources with them. Field names are camelCase on the wire (Kubernetes convention) and
snake_case in Python.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
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
"""RFC 1123 label: namespaces and references to objects."""

DNS_1035_LABEL = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
"""RFC 1035 label: names that become Deployment, Service or label values (Services need a
leading letter), so a name the custom resource accepts is one every derived object accepts."""

LABEL_VALUE = r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$"
"""A Kubernetes label value (at most 63 characters)."""

IMAGE_REFERENCE = (
    r"^[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]{1,5})?(/[a-z0-9]+([._-][a-z0-9]+)*)*"
    r"(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[a-f0-9]{64})?$"
)
"""A container image reference (registry[:port]/path[:tag][@digest]), as the distribution
spec's grammar writes it: no spaces, no shell, no scheme."""

URI_SCHEMES = ("file", "pvc", "s3", "gs", "https", "configmap")
LOCAL_URI_SCHEMES = ("file",)
"""Schemes that name a path on the node or in the operator's file system: refused in
cluster mode (``BRAID_OPERATOR_ALLOW_LOCAL_PATHS``), where a tenant who may create a Block
would otherwise mount any node path into a pod running any image it names."""


def cel(
    rule: str,
    message: str,
    field_path: str | None = None,
    message_expression: str | None = None,
    reason: str | None = None,
) -> dict[str, Any]:
    """One ``x-kubernetes-validations`` rule; ``field_path`` makes the API server name the field.

    ``message_expression`` (CEL returning a string) lets the message carry the offending value,
    which a plain ``message`` cannot; ``message`` stays as the fallback and the docs' text.
    """
    out: dict[str, Any] = {"rule": rule, "message": message}
    if message_expression is not None:
        out["messageExpression"] = message_expression
    if field_path is not None:
        out["fieldPath"] = field_path
    if reason is not None:
        out["reason"] = reason
    return out


def dotdot_free(field: str) -> str:
    """CEL: the string ``field`` has no ``..`` path segment (no climbing out of a mount)."""
    return f"!{field}.matches('(^|/|://)\\\\.\\\\.(/|$)')"


def has_parent_segment(uri: str) -> bool:
    """Whether ``uri``'s path has a ``..`` segment."""
    path = uri.partition("://")[2] if "://" in uri else uri
    return ".." in path.split("/")


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

    name: str = Field(
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z_][A-Za-z0-9_.:-]*$",
        description="Tensor name as Triton sees it.",
    )
    datatype: DataType = Field(description="KServe v2 data type of the tensor.")
    shape: list[int] = Field(
        min_length=1,
        max_length=8,
        description="Shape without the batch dimension; -1 marks a variable dimension.",
        json_schema_extra={"items": {"type": "integer", "minimum": -1, "maximum": 1_048_576}},
    )

    model_config = ApiModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel(
                    "self.shape.all(d, d == -1 || d >= 1)",
                    "every dimension of shape is -1 (variable) or at least 1",
                    ".shape",
                )
            ]
        }
    }


class ArtifactRef(ApiModel):
    """Where an artifact lives. braid never copies weights across providers."""

    uri: str = Field(
        min_length=1,
        max_length=2048,
        pattern=r"^(file|pvc|s3|gs|https|configmap)://[^\s\\]+$",
        description="Location of the artifact: pvc://, s3://, gs://, https:// or configmap:// "
        "(file:// only where the operator allows local paths: the local stack).",
    )
    format: Literal["onnx", "triton-repository", "torchscript"] = Field(
        default="onnx",
        description="How the artifact is packaged: one ONNX file (what braid's block runtime "
        "serves with onnxruntime), an archive of Triton model folders, or a TorchScript file "
        "(a Model's frozen weights only: the block runtime does not serve it, so a Link's "
        "artifact in that format is refused).",
    )
    sha256: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{64}$",
        description="Expected sha256 (hex) of the artifact; the init container that fetches "
        "s3://, gs:// and https:// artifacts refuses one that does not match.",
    )
    credentials_secret: str | None = Field(
        default=None,
        max_length=253,
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
        description="A Secret in this object's namespace whose keys become the fetcher's "
        "environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL, AWS_REGION, "
        "BRAID_HTTPS_TOKEN). braid references it by name and never reads it.",
    )

    model_config = ApiModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel(
                    dotdot_free("self.uri"),
                    "uri must not contain a '..' path segment",
                    ".uri",
                    "'uri ' + self.uri + ' has a \\'..\\' path segment'",
                ),
                cel(
                    "!self.uri.startsWith('pvc://') || self.uri.matches("
                    "'^pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?(/.*)?$')",
                    "a pvc:// uri names a PersistentVolumeClaim: pvc://<claim>[/<subPath>]",
                    ".uri",
                    "'uri ' + self.uri + ' does not start with a valid claim name (pvc://<claim>[/<subPath>])'",
                ),
                cel(
                    "!self.uri.startsWith('configmap://') || self.uri.matches("
                    "'^configmap://[a-z0-9]([-a-z0-9.]*[a-z0-9])?(/[-._a-zA-Z0-9]+)?$')",
                    "a configmap:// uri is configmap://<name>[/<key>]",
                    ".uri",
                    "'uri ' + self.uri + ' is not configmap://<name>[/<key>]'",
                ),
            ]
        }
    }

    @model_validator(mode="after")
    def _no_parent_segments(self) -> ArtifactRef:
        # The same rule as the CEL above, for objects stored before it existed.
        if has_parent_segment(self.uri):
            raise ValueError(f"uri {self.uri!r} has a '..' path segment")
        return self


class ObjectRef(ApiModel):
    """A reference to another braid object; an empty namespace means the referrer's own."""

    name: str = Field(
        min_length=1, max_length=63, pattern=DNS_1035_LABEL, description="Object name."
    )
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
