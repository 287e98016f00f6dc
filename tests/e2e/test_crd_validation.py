"""Invalid custom resources are refused by the API server, with a message naming the field.

Schema types, enums, ranges and CEL rules do the refusing, so `kubectl apply` fails at once
instead of the operator discovering the problem later.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from braid.devstack.operator_process import install_operator_prerequisites
from tests.e2e.conftest import E2ECluster

MODEL: dict[str, Any] = {
    "artifact": {"uri": "s3://bucket/m.pt"},
    "input": {"name": "image", "datatype": "FP32", "shape": [1, 28, 28]},
    "output": {"name": "logits", "datatype": "FP32", "shape": [10]},
    "baselineAccuracy": 0.9,
    "partition": {
        "blocks": [
            {"name": "b0", "firstLayer": 0, "lastLayer": 1},
            {"name": "b1", "firstLayer": 2, "lastLayer": 3},
        ]
    },
}
BLOCK: dict[str, Any] = {
    "modelRef": {"name": "m"},
    "partitions": {"first": 0, "last": 1},
    "tier": "edge",
    "resources": {"gpu": 1},
}
LINK: dict[str, Any] = {
    "type": "skip",
    "from": {"model": {"name": "m"}, "block": 0},
    "to": {"model": {"name": "m"}, "block": 2},
    "architecture": {"type": "conv", "reduction": 4},
    "artifact": {"uri": "s3://bucket/l.pt"},
    "servedBy": {"name": "b"},
}
POLICY: dict[str, Any] = {
    "modelRef": {"name": "m"},
    "latencyBoundMicroseconds": 20000,
    "allPaths": True,
}
BASE = {"Model": MODEL, "Block": BLOCK, "Link": LINK, "OffloadPolicy": POLICY}


def _set(spec: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(spec)
    node = out
    keys = path.split(".")
    for key in keys[:-1]:
        node = node[int(key)] if key.isdigit() else node[key]
    last = keys[-1]
    if value is _DELETE:
        del node[last]
    elif last.isdigit():
        node[int(last)] = value
    else:
        node[last] = value
    return out


_DELETE = object()

# (kind, field path, bad value, text the API server's message must contain)
INVALID: list[tuple[str, str, Any, str]] = [
    ("Model", "artifact.uri", "ftp://x", "spec.artifact.uri"),
    ("Model", "artifact", _DELETE, "spec.artifact"),
    ("Model", "baselineAccuracy", 1.5, "spec.baselineAccuracy"),
    ("Model", "baselineAccuracy", -0.1, "spec.baselineAccuracy"),
    ("Model", "input.datatype", "FLOAT", "spec.input.datatype"),
    ("Model", "input.shape", [], "spec.input.shape"),
    ("Model", "input.shape", [1, -2], "spec.input.shape"),
    ("Model", "homeTier", "moon", "spec.homeTier"),
    ("Model", "partition.blocks", [], "spec.partition.blocks"),
    ("Model", "partition.blocks.0.firstLayer", 1, "spec.partition.blocks"),
    ("Model", "partition.blocks.1.lastLayer", 1, "spec.partition.blocks[1].lastLayer"),
    ("Model", "partition.blocks.1.name", "b0", "spec.partition.blocks"),
    ("Model", "partition.blocks.0.name", "Bad_Name", "spec.partition.blocks[0].name"),
    ("Block", "tier", "mars", "spec.tier"),
    ("Block", "replicas", -1, "spec.replicas"),
    ("Block", "replicas", 101, "spec.replicas"),
    ("Block", "partitions.last", -1, "spec.partitions.last"),
    ("Block", "partitions", {"first": 3, "last": 1}, "spec.partitions.last"),
    ("Block", "resources", {"gpu": 9}, "spec.resources.gpu"),
    ("Block", "resources", {"memory": "lots"}, "spec.resources.memory"),
    ("Block", "modelRef", _DELETE, "spec.modelRef"),
    ("Block", "tier", "local", "spec.resources.gpu"),
    ("Block", "triton", {"maxBatchSize": 5000}, "spec.triton.maxBatchSize"),
    ("Block", "triton", {"instanceCount": 0}, "spec.triton.instanceCount"),
    ("Link", "to.block", 1, "spec.to.block"),
    ("Link", "type", "wormhole", "spec.type"),
    ("Link", "architecture.reduction", 0, "spec.architecture.reduction"),
    ("Link", "architecture.type", "transformer", "spec.architecture.type"),
    ("Link", "to.model.name", "other", "spec.to.model.name"),
    ("OffloadPolicy", "latencyBoundMicroseconds", 0, "spec.latencyBoundMicroseconds"),
    ("OffloadPolicy", "cost", {"a": -1}, "spec.cost.a"),
    ("OffloadPolicy", "cost", {"cLocal": -0.5}, "spec.cost.cLocal"),
    (
        "OffloadPolicy",
        "earlyExits",
        [{"block": 1, "confidence": 0}],
        "spec.earlyExits[0].confidence",
    ),
    (
        "OffloadPolicy",
        "earlyExits",
        [{"block": 1, "confidence": 1.2}],
        "spec.earlyExits[0].confidence",
    ),
    ("OffloadPolicy", "allPaths", False, "spec.candidatePaths"),
    ("OffloadPolicy", "candidatePaths", ["a/b"], "spec.candidatePaths"),
    ("OffloadPolicy", "hysteresis", {"costMargin": 2}, "spec.hysteresis.costMargin"),
    ("OffloadPolicy", "unknownField", 1, "unknownField"),
]


@pytest.fixture(scope="module")
def crds(cluster: E2ECluster) -> E2ECluster:
    install_operator_prerequisites(cluster.access)
    return cluster


def _doc(kind: str, spec: dict[str, Any], namespace: str) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "braid.dev/v1alpha1",
            "kind": kind,
            "metadata": {"name": "x", "namespace": namespace},
            "spec": spec,
        }
    )


@pytest.mark.parametrize("kind", sorted(BASE))
def test_the_valid_base_is_accepted(crds: E2ECluster, namespace: str, kind: str) -> None:
    result = crds.access.kubectl(
        "create",
        "--dry-run=server",
        "-f",
        "-",
        input=_doc(kind, BASE[kind], namespace),
        check=False,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("kind", "path", "value", "field"), INVALID, ids=[f"{k}:{p}" for k, p, _, _ in INVALID]
)
def test_invalid_resource_is_refused_naming_the_field(
    crds: E2ECluster, namespace: str, kind: str, path: str, value: Any, field: str
) -> None:
    spec = _set(BASE[kind], path, value)
    result = crds.access.kubectl(
        "create",
        "--dry-run=server",
        "--validate=strict",
        "-f",
        "-",
        input=_doc(kind, spec, namespace),
        check=False,
    )
    assert result.returncode != 0, f"{kind} with {path}={value!r} was admitted"
    assert field in result.stderr, result.stderr
