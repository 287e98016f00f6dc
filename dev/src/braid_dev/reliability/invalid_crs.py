"""Invalid custom resources, and whether the API server refuses each naming the field.

The variants are data. Most are generated from the CRDs the cluster is given (``crds/``):
for every field a valid base sets, each bound, enum, pattern, length and item count is
broken, the field's type is changed, each required field is removed and an unknown field is
added. The CEL rules, which the schema walk cannot invert, have a hand-written table. Each
variant is sent as a server-side dry-run create (``dryRun=All``, strict field validation),
so nothing is stored and the variants do not depend on each other.

A refusal counts as naming the field when the API server's message contains the field's
path as Kubernetes writes it (``spec.partition.blocks[0].name``).
"""

from __future__ import annotations

import base64
import copy
import logging
import ssl
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from braid.api.common import API_VERSION
from braid.api.v1alpha1.registry import KINDS
from braid.logs import log_event
from braid.settings import Settings
from braid_dev.reliability.report import CrTally
from braid_dev.stack import cluster as devcluster
from braid_dev.stack.cluster import ClusterAccess
from braid_dev.stack.operator_process import REPO_ROOT, install_operator_prerequisites

logger = logging.getLogger(__name__)

DELETE = "<delete>"
"""As a variant's value: remove the field."""

MODEL: dict[str, Any] = {
    "artifact": {"uri": "s3://bucket/m.onnx", "format": "onnx"},
    "input": {"name": "image", "datatype": "FP32", "shape": [1, 28, 28]},
    "output": {"name": "logits", "datatype": "FP32", "shape": [10]},
    "baselineAccuracy": 0.9,
    "homeTier": "local",
    "catalog": {"uri": "configmap://catalog/catalog.json"},
    "publish": {
        "taskFamily": "image-classification",
        "architectureFamily": "cnn",
        "exposedBlocks": ["b1"],
    },
    "partition": {
        "blocks": [
            {"name": "b0", "firstLayer": 0, "lastLayer": 1, "exitHead": True},
            {"name": "b1", "firstLayer": 2, "lastLayer": 3},
        ]
    },
}
BLOCK: dict[str, Any] = {
    "modelRef": {"name": "m", "namespace": "provider-a"},
    "partitions": {"first": 0, "last": 1},
    "tier": "edge",
    "nodePool": "pool-a",
    "replicas": 2,
    "resources": {"cpu": "500m", "memory": "2Gi", "gpu": 1},
    "triton": {
        "image": "nvcr.io/nvidia/tritonserver:24.10-py3",
        "maxBatchSize": 8,
        "instanceCount": 1,
        "dynamicBatching": {"maxQueueDelayMicroseconds": 100, "preferredBatchSizes": [4, 8]},
        "shmSize": "256Mi",
    },
    "modelRepository": {"uri": "pvc://repo/m", "format": "triton-repository"},
}
LINK: dict[str, Any] = {
    "type": "skip",
    "from": {"model": {"name": "m", "namespace": "provider-a"}, "block": 0},
    "to": {"model": {"name": "m"}, "block": 2},
    "architecture": {"type": "conv", "reduction": 4},
    "artifact": {"uri": "s3://bucket/l.pt"},
    "input": {"name": "lout", "datatype": "FP32", "shape": [16, 8, 8]},
    "output": {"name": "lin", "datatype": "FP32", "shape": [32, 4, 4]},
    "servedBy": {"name": "b"},
}
POLICY: dict[str, Any] = {
    "modelRef": {"name": "m"},
    "latencyBoundMicroseconds": 20000,
    "allPaths": True,
    "cost": {"a": 40.0, "b": 1e-6, "cLocal": 1e-6, "cHost": 2e-5, "dLocal": 10.0, "dHost": 10.0},
    "allowedHosts": [{"namespace": "provider-b", "model": "big"}],
    "earlyExits": [{"block": 1, "confidence": 0.8}],
    "hysteresis": {"costMargin": 0.1, "minDwellSeconds": 10},
}
BASE: dict[str, dict[str, Any]] = {
    "Model": MODEL,
    "Block": BLOCK,
    "Link": LINK,
    "OffloadPolicy": POLICY,
}


@dataclass(frozen=True)
class InvalidVariant:
    """A valid base spec with one thing broken, and the field the refusal must name."""

    kind: str
    path: str
    """Dotted path into the spec; digits index lists (``partition.blocks.0.name``)."""
    value: Any
    field: str
    """What the API server's message must contain, e.g. ``spec.partition.blocks[0].name``."""
    rule: str
    """What is broken: ``maximum``, ``enum``, ``required``, ``type``, ``cel``, ..."""

    @property
    def id(self) -> str:
        return f"{self.kind}:{self.path}:{self.rule}"

    def spec(self) -> dict[str, Any]:
        return set_path(BASE[self.kind], self.path, self.value)


# The CEL rules (and cross-field constraints) the schema walk cannot break by itself.
CEL_VARIANTS: list[InvalidVariant] = [
    InvalidVariant("Model", "partition.blocks.0.firstLayer", 1, "spec.partition.blocks", "cel"),
    InvalidVariant(
        "Model", "partition.blocks.1.lastLayer", 1, "spec.partition.blocks[1].lastLayer", "cel"
    ),
    InvalidVariant("Model", "partition.blocks.1.name", "b0", "spec.partition.blocks", "cel"),
    InvalidVariant("Block", "partitions", {"first": 3, "last": 1}, "spec.partitions.last", "cel"),
    InvalidVariant("Block", "tier", "local", "spec.resources.gpu", "cel"),
    InvalidVariant("Link", "to.block", 1, "spec.to.block", "cel"),
    InvalidVariant("Link", "to.model.name", "other", "spec.to.model.name", "cel"),
    InvalidVariant("OffloadPolicy", "allPaths", False, "spec.candidatePaths", "cel"),
    InvalidVariant("OffloadPolicy", "candidatePaths", ["a/b"], "spec.candidatePaths", "cel"),
]


def set_path(spec: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of ``spec`` with ``path`` set to ``value`` (or removed, for ``DELETE``)."""
    out = copy.deepcopy(spec)
    node: Any = out
    keys = path.split(".")
    for key in keys[:-1]:
        node = node[int(key)] if key.isdigit() else node[key]
    last = keys[-1]
    if value == DELETE:
        del node[last]
    elif last.isdigit():
        node[int(last)] = value
    else:
        node[last] = value
    return out


def _field(path: str) -> str:
    """``partition.blocks.0.name`` as the API server writes it: ``spec.partition.blocks[0].name``."""
    out = "spec"
    for key in path.split("."):
        out += f"[{key}]" if key.isdigit() else f".{key}"
    return out


def _wrong_type(schema: dict[str, Any]) -> Any:
    kind = schema.get("type")
    if kind in ("integer", "number"):
        return "not-a-number"
    if kind == "boolean":
        return "yes"
    if kind == "array":
        return "not-a-list"
    if kind == "object":
        return ["not", "an", "object"]
    return 12345  # a string field given a number


def _schema_variants(
    kind: str, schema: dict[str, Any], value: Any, path: str
) -> Iterator[InvalidVariant]:
    """Every single-field break of ``value`` (valid for ``schema``) at ``path``."""
    field = _field(path)

    def variant(bad: Any, rule: str) -> InvalidVariant:
        return InvalidVariant(kind, path, bad, field, rule)

    yield variant(_wrong_type(schema), "type")
    if "enum" in schema:
        yield variant("not-one-of-the-enum", "enum")
    if "minimum" in schema:
        step = 1 if schema.get("type") == "integer" else 0.5
        low = schema["minimum"] if schema.get("exclusiveMinimum") else schema["minimum"] - step
        yield variant(low, "minimum")
    if "maximum" in schema:
        step = 1 if schema.get("type") == "integer" else 0.5
        yield variant(schema["maximum"] + step, "maximum")
    if schema.get("minLength", 0) >= 1:
        yield variant("", "minLength")
    if "maxLength" in schema:
        yield variant("a" * (schema["maxLength"] + 1), "maxLength")
    if "pattern" in schema:
        yield variant("Not Valid!", "pattern")
    if schema.get("type") == "array" and isinstance(value, list):
        if schema.get("minItems", 0) >= 1:
            yield variant([], "minItems")
        if "maxItems" in schema and value:
            yield variant([value[0]] * (schema["maxItems"] + 1), "maxItems")
        if value and "items" in schema:
            yield from _schema_variants(kind, schema["items"], value[0], f"{path}.0")
    if schema.get("type") == "object" and isinstance(value, dict):
        yield from _object_variants(kind, schema, value, path)


def _object_variants(
    kind: str, schema: dict[str, Any], value: dict[str, Any], path: str
) -> Iterator[InvalidVariant]:
    prefix = f"{path}." if path else ""
    for name in schema.get("required", []):
        if name in value:
            yield InvalidVariant(
                kind, f"{prefix}{name}", DELETE, _field(f"{prefix}{name}"), "required"
            )
    yield InvalidVariant(
        kind, f"{prefix}unknownField", 1, _field(f"{prefix}unknownField"), "unknown-field"
    )
    for name, sub in schema.get("properties", {}).items():
        if name in value:
            yield from _schema_variants(kind, sub, value[name], f"{prefix}{name}")


def load_spec_schemas(crd_dir: Path | None = None) -> dict[str, dict[str, Any]]:
    """The ``spec`` schema of each kind, from the CRD files the cluster is given."""
    crd_dir = crd_dir if crd_dir is not None else REPO_ROOT / "crds"
    out = {}
    for info in KINDS:
        crd = yaml.safe_load((crd_dir / f"braid.dev_{info.plural}.yaml").read_text())
        if crd is None:
            continue
        version = crd["spec"]["versions"][0]
        out[info.kind] = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    return out


def invalid_variants(crd_dir: Path | None = None) -> list[InvalidVariant]:
    """The generated variants of every kind, then the CEL table; ids are unique."""
    variants: dict[str, InvalidVariant] = {}
    for kind, schema in load_spec_schemas(crd_dir).items():
        for variant in _object_variants(kind, schema, BASE[kind], ""):
            variants.setdefault(variant.id, variant)
    for variant in CEL_VARIANTS:
        variants.setdefault(variant.id, variant)
    return list(variants.values())


# -- sending them ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CrOutcome:
    variant: InvalidVariant
    status: int
    message: str

    @property
    def admitted(self) -> bool:
        return self.status < 300

    @property
    def names_field(self) -> bool:
        return self.variant.field in self.message


def api_client(access: ClusterAccess, workdir: Path) -> httpx.Client:
    """An HTTP client with the kubeconfig's client certificate (dry-runs need no kubectl)."""
    config = yaml.safe_load(access.kubeconfig.read_text())
    user = config["users"][0]["user"]
    cert, key = workdir / "client.crt", workdir / "client.key"
    cert.write_bytes(base64.b64decode(user["client-certificate-data"]))
    key.write_bytes(base64.b64decode(user["client-key-data"]))
    key.chmod(0o600)
    context = ssl.create_default_context(cafile=str(access.ca_cert))
    context.load_cert_chain(str(cert), str(key))
    return httpx.Client(base_url=access.server, verify=context, timeout=30)


def _document(kind: str, spec: dict[str, Any], namespace: str, name: str) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def dry_run_create(
    client: httpx.Client, kind: str, spec: dict[str, Any], namespace: str
) -> tuple[int, str]:
    """Status and message of a server-side dry-run create with strict field validation."""
    plural = next(info.plural for info in KINDS if info.kind == kind)
    response = client.post(
        f"/apis/{API_VERSION}/namespaces/{namespace}/{plural}",
        params={"dryRun": "All", "fieldValidation": "Strict"},
        json=_document(kind, spec, namespace, "invalid-variant"),
    )
    try:
        message = str(response.json().get("message", response.text))
    except ValueError:
        message = response.text
    return response.status_code, message


def check_invalid_crs(
    access: ClusterAccess, namespace: str, variants: list[InvalidVariant] | None = None
) -> list[CrOutcome]:
    """Send every variant; raises if a valid base is refused (the table would prove nothing)."""
    variants = variants if variants is not None else invalid_variants()
    with tempfile.TemporaryDirectory() as tmp, api_client(access, Path(tmp)) as client:
        for kind, spec in BASE.items():
            status, message = dry_run_create(client, kind, spec, namespace)
            if status >= 300:
                raise ValueError(f"the valid {kind} base is refused ({status}): {message}")
        outcomes = []
        for variant in variants:
            status, message = dry_run_create(client, variant.kind, variant.spec(), namespace)
            outcomes.append(CrOutcome(variant, status, message))
    return outcomes


def tally_outcomes(outcomes: list[CrOutcome]) -> CrTally:
    return CrTally(
        tried=len(outcomes),
        admitted=sum(o.admitted for o in outcomes),
        without_field_in_message=sum(not o.admitted and not o.names_field for o in outcomes),
    )


def run_invalid_crs(access: ClusterAccess, namespace: str) -> CrTally:
    """Every invalid variant against the cluster's API server, tallied."""
    tally = tally_outcomes(check_invalid_crs(access, namespace))
    log_event(
        logger,
        "invalid_crs.done",
        tried=tally.tried,
        admitted=tally.admitted,
        unnamed=tally.without_field_in_message,
    )
    return tally


CAMPAIGN_NAMESPACE = "braid-invalid-crs"


def run_invalid_cr_campaign(settings: Settings) -> CrTally:
    """The campaign on the running cluster of ``settings``: CRDs installed, a namespace made;
    the generated variants, then the hand-written hostile cases with the operator's webhook."""
    from braid_dev.reliability.hostile_campaign import run_hostile_campaign

    access = devcluster.access(settings)
    install_operator_prerequisites(access)
    if access.kubectl("get", "namespace", CAMPAIGN_NAMESPACE, check=False).returncode != 0:
        access.kubectl("create", "namespace", CAMPAIGN_NAMESPACE)
    tally = run_invalid_crs(access, CAMPAIGN_NAMESPACE)
    with tempfile.TemporaryDirectory(dir=settings.state) as tmp:
        hostile = run_hostile_campaign(access, Path(tmp))
    return tally.model_copy(
        update={
            "hostile_tried": len(hostile),
            "hostile_admitted": sum(o.admitted for o in hostile),
            "hostile_without_reason": sum(not o.admitted and not o.names_reason for o in hostile),
        }
    )
