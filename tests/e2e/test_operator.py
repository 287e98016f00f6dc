"""The operator on the real control plane: samples in, Triton workloads out, on the right pools.

The operator runs as its own process with the ServiceAccount token of operator/rbac.yaml, so
these tests also prove that least-privilege role is enough.
"""

from __future__ import annotations

import json
from typing import Any

from tests.e2e.conftest import E2ECluster
from tests.e2e.helpers import wait_for

SKIP = "fmnist-cnn.skip.1-4.reduced4"
XIN = "mnist-cnn.xin.fmnist-cnn.0-1-3-5.normal"
XOUT = "mnist-cnn.xout.fmnist-cnn.0-1-3-5.normal"


def _get(cluster: E2ECluster, kind: str, name: str, ns: str) -> dict[str, Any] | None:
    out = cluster.kubectl("get", kind, name, "-n", ns, "-o", "json", check=False)
    return json.loads(out) if out else None


def _ready(obj: dict[str, Any] | None) -> bool:
    conditions = ((obj or {}).get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def test_samples_become_deployments_and_services(cluster: E2ECluster, samples: None) -> None:
    for ns, block in (
        ("provider-a", "fmnist-head"),
        ("provider-a", "fmnist-tail"),
        ("provider-b", "mnist-body"),
    ):
        dep = wait_for(
            lambda ns=ns, block=block: _get(cluster, "deployment", f"triton-{block}", ns),
            f"Deployment triton-{block}",
        )
        assert dep["metadata"]["ownerReferences"][0]["kind"] == "Block"
        svc = wait_for(
            lambda ns=ns, block=block: _get(cluster, "service", f"triton-{block}", ns),
            f"Service triton-{block}",
        )
        assert {p["name"] for p in svc["spec"]["ports"]} == {"http", "grpc", "metrics"}


def test_pods_are_scheduled_onto_their_pool_with_gpus(cluster: E2ECluster, samples: None) -> None:
    expected = {
        ("provider-a", "fmnist-head"): ("local", 0),
        ("provider-a", "fmnist-tail"): ("edge", 1),
        ("provider-b", "mnist-body"): ("cloud", 1),
    }
    for (ns, block), (tier, gpus) in expected.items():

        def bound(ns: str = ns, block: str = block) -> dict[str, Any] | None:
            pods = cluster.kubectl_json("get", "pods", "-n", ns, "-l", f"braid.dev/block={block}")[
                "items"
            ]
            running = [
                p
                for p in pods
                if p["status"].get("phase") == "Running" and p["spec"].get("nodeName")
            ]
            return running[0] if running else None

        pod = wait_for(bound, f"a Running pod of {block}")
        node = cluster.kubectl_json("get", "node", pod["spec"]["nodeName"])
        assert node["metadata"]["labels"]["braid.dev/tier"] == tier
        requests = pod["spec"]["containers"][0]["resources"]["requests"]
        assert int(requests.get("nvidia.com/gpu", "0")) == gpus
        if gpus:
            assert int(node["status"]["allocatable"]["nvidia.com/gpu"]) >= gpus


def test_status_turns_ready_with_conditions(cluster: E2ECluster, samples: None) -> None:
    for ns, block in (
        ("provider-a", "fmnist-head"),
        ("provider-a", "fmnist-tail"),
        ("provider-b", "mnist-body"),
    ):
        obj = wait_for(
            lambda ns=ns, block=block: (o := _get(cluster, "block", block, ns)) and _ready(o) and o,
            f"Block {block} Ready",
        )
        assert obj["status"]["readyReplicas"] == 1
        ready = next(c for c in obj["status"]["conditions"] if c["type"] == "Ready")
        assert ready["reason"] == "Available"
    model = wait_for(
        lambda: (o := _get(cluster, "model", "fmnist-cnn", "provider-a")) and _ready(o) and o,
        "Model Ready",
    )
    assert model["status"]["blocks"] == 7
    for link in (XIN, XOUT):
        wait_for(
            lambda link=link: _ready(_get(cluster, "link", link, "provider-b")),
            f"Link {link} Ready",
        )


def test_links_are_loaded_by_the_host_pods(cluster: E2ECluster, samples: None) -> None:
    def loads() -> list[str] | None:
        dep = _get(cluster, "deployment", "triton-mnist-body", "provider-b")
        if dep is None:
            return None
        args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
        models = [a.split("=", 1)[1] for a in args if a.startswith("--load-model=")]
        return models if XIN in models and XOUT in models else None

    models = wait_for(loads, "the host Deployment to load both cross links")
    # The host's own block models stay as they were; the links are extra models.
    assert models[:5] == [f"mnist-cnn.b{i}" for i in range(5)]


def test_link_artifacts_are_fetched_by_the_host_pods_only(
    cluster: E2ECluster, samples: None
) -> None:
    """The host's plan ConfigMap (what its pods' init container fetches) holds each Link's
    own artifact; a Block of the same namespace that serves no Link fetches none."""

    def plan(ns: str, block: str) -> list[dict[str, Any]] | None:
        cm = _get(cluster, "configmap", f"triton-{block}-plan", ns)
        return json.loads(cm["data"]["plan.json"])["artifacts"] if cm else None

    def host_plan() -> list[dict[str, Any]] | None:
        found = plan("provider-b", "mnist-body")
        return found if found and len(found) == 3 else None

    artifacts = wait_for(host_plan, "the host's plan to fetch both cross links")
    dests = {a["dest"]: a["uri"] for a in artifacts}
    for link in (XIN, XOUT):
        assert dests[f"repository/{link}/1/model.onnx"] == (
            f"s3://provider-b-models/{link}/1/model.onnx"
        )
    head = wait_for(lambda: plan("provider-a", "fmnist-head"), "fmnist-head's plan")
    assert [a["dest"] for a in head] == ["repository"]
    tail = wait_for(
        lambda: (p := plan("provider-a", "fmnist-tail")) and len(p) == 2 and p,
        "fmnist-tail's plan to fetch its skip link",
    )
    assert tail[1]["dest"] == f"repository/{SKIP}/1/model.onnx"


def test_kubectl_get_braid_shows_useful_columns(cluster: E2ECluster, samples: None) -> None:
    wait_for(lambda: _ready(_get(cluster, "block", "fmnist-tail", "provider-a")), "Block Ready")
    out = cluster.kubectl("get", "braid", "-n", "provider-a")
    for header in ("READY", "TIER", "REPLICAS", "AVAILABLE", "GPU", "BLOCKS", "ACCURACY"):
        assert header in out
    assert "fmnist-tail" in out
    assert "edge" in out


def test_spec_change_rolls_the_deployment(cluster: E2ECluster, samples: None) -> None:
    wait_for(lambda: _get(cluster, "deployment", "triton-fmnist-head", "provider-a"), "Deployment")
    before = _get(cluster, "deployment", "triton-fmnist-head", "provider-a")
    assert before is not None
    cluster.kubectl(
        "patch",
        "block",
        "fmnist-head",
        "-n",
        "provider-a",
        "--type=merge",
        "-p",
        json.dumps({"spec": {"resources": {"cpu": "1500m"}}}),
    )

    def rolled() -> dict[str, Any] | None:
        dep = _get(cluster, "deployment", "triton-fmnist-head", "provider-a")
        cpu = (
            dep["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"]
            if dep
            else None
        )
        return dep if cpu == "1500m" else None

    after = wait_for(rolled, "the Deployment to take the new spec")
    assert after["metadata"]["generation"] > before["metadata"]["generation"]
    assert after["metadata"]["uid"] == before["metadata"]["uid"], "rolled in place, not recreated"


def test_deleting_a_model_removes_what_it_owns_across_namespaces(
    cluster: E2ECluster, samples: None
) -> None:
    """Runs last in this module: it tears the samples down."""
    wait_for(
        lambda: _ready(_get(cluster, "link", XIN, "provider-b")),
        "cross link Ready",
    )
    wait_for(lambda: _ready(_get(cluster, "block", "fmnist-tail", "provider-a")), "Block Ready")
    cluster.kubectl(
        "delete", "model", "fmnist-cnn", "-n", "provider-a", "--wait=true", "--timeout=60s"
    )

    def gone(kind: str, name: str, ns: str) -> bool:
        return _get(cluster, kind, name, ns) is None

    # Cross-namespace: the host's links for this model go (finalizer, not owner references).
    wait_for(lambda: gone("link", XIN, "provider-b"), "cross-entry link deleted")
    wait_for(lambda: gone("link", XOUT, "provider-b"), "cross-exit link deleted")
    wait_for(lambda: gone("link", SKIP, "provider-a"), "skip link deleted")
    # Same namespace: Blocks are owned by the Model, Deployments by the Blocks (GC).
    for block in ("fmnist-head", "fmnist-tail"):
        wait_for(lambda block=block: gone("block", block, "provider-a"), f"Block {block} deleted")
        wait_for(
            lambda block=block: gone("deployment", f"triton-{block}", "provider-a"),
            f"Deployment of {block} deleted",
        )

    # The host's own block keeps running, with the links unloaded from its Triton.
    def unloaded() -> bool:
        dep = _get(cluster, "deployment", "triton-mnist-body", "provider-b")
        args = dep["spec"]["template"]["spec"]["containers"][0]["args"] if dep else []
        return bool(dep) and not any(XIN in a or XOUT in a for a in args)

    wait_for(unloaded, "host Deployment without the link models")


def test_blocks_tell_their_story_in_events(cluster: E2ECluster, samples: None) -> None:
    """`kubectl describe block` shows the operator's Applied Event, and only its own Events:
    kopf's per-handler success lines are not posted (they doubled the writes per Block)."""

    def events() -> list[dict[str, object]]:
        items: list[dict[str, object]] = cluster.kubectl_json(
            "get",
            "events",
            "-n",
            "provider-a",
            "--field-selector",
            "involvedObject.kind=Block,involvedObject.name=fmnist-head",
        )["items"]
        return items

    found = wait_for(
        lambda: [e for e in events() if e.get("reason") == "Applied"] or None,
        "an Applied Event on Block fmnist-head",
    )
    assert "triton-fmnist-head" in str(found[0]["message"])
    assert not [e for e in events() if "succeeded" in str(e.get("message"))]
