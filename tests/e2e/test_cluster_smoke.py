"""The local control plane behaves like a real cluster: pools, GPU placement by the real
scheduler, kwok pod lifecycles, RBAC and service-account tokens, an idempotent CLI."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
from collections import Counter
from typing import Any

import httpx

from tests.e2e.conftest import E2ECluster
from tests.e2e.helpers import wait_for

TIER = "braid.dev/tier"
GPU = "nvidia.com/gpu"
GPU_TOLERATION = {"key": GPU, "operator": "Exists", "effect": "NoSchedule"}


def _apply(cluster: E2ECluster, namespace: str, obj: dict[str, Any]) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(obj))


def _braid(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "braid.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_six_pool_nodes_are_ready_with_their_labels_and_gpus(cluster: E2ECluster) -> None:
    nodes = cluster.kubectl_json("get", "nodes", "-l", "type=kwok")["items"]
    assert len(nodes) == 6
    assert Counter(n["metadata"]["labels"][TIER] for n in nodes) == {
        "local": 2,
        "edge": 2,
        "cloud": 2,
    }
    for node in nodes:
        labels = node["metadata"]["labels"]
        tier = labels[TIER]
        ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
        assert ready["status"] == "True", node["metadata"]["name"]
        assert labels["node.kubernetes.io/instance-type"].startswith(f"braid.{tier}")
        gpus = int(node["status"]["allocatable"].get(GPU, "0"))
        assert gpus == {"local": 0, "edge": 1, "cloud": 4}[tier]
        gpu_taints = [t for t in node["spec"].get("taints", []) if t["key"] == GPU]
        assert bool(gpu_taints) == (gpus > 0)

    # What a person sees: `kubectl get nodes -L braid.dev/tier` lists every pool, with the
    # local pool's real nodes (kubelet + containerd) beside the kwok ones.
    table = cluster.kubectl("get", "nodes", "-L", TIER, "--no-headers")
    real = cluster.settings.cluster_real_nodes
    assert sum(" Ready " in line for line in table.splitlines()) == 6 + real


def test_gpu_deployment_lands_on_an_edge_node_and_runs(cluster: E2ECluster, namespace: str) -> None:
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "edge-block"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "edge-block"}},
            "template": {
                "metadata": {"labels": {"app": "edge-block"}},
                "spec": {
                    "nodeSelector": {TIER: "edge"},
                    "tolerations": [GPU_TOLERATION],
                    "containers": [
                        {
                            "name": "triton",
                            "image": "nvcr.io/nvidia/tritonserver:24.10-py3",
                            "resources": {"limits": {GPU: "1"}},
                        }
                    ],
                },
            },
        },
    }
    _apply(cluster, namespace, deployment)
    cluster.kubectl("rollout", "status", "deployment/edge-block", "-n", namespace, "--timeout=120s")
    pods = cluster.kubectl_json("get", "pods", "-n", namespace, "-l", "app=edge-block")["items"]
    assert len(pods) == 1
    pod = pods[0]
    assert pod["status"]["phase"] == "Running"
    node = cluster.kubectl_json("get", "node", pod["spec"]["nodeName"])
    assert node["metadata"]["labels"][TIER] == "edge"
    scheduled = next(c for c in pod["status"]["conditions"] if c["type"] == "PodScheduled")
    assert scheduled["status"] == "True"


def test_pod_asking_for_more_gpus_than_any_node_has_stays_pending(
    cluster: E2ECluster, namespace: str
) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "eight-gpus"},
        "spec": {
            "tolerations": [GPU_TOLERATION],
            "containers": [
                {"name": "big", "image": "example/big:1", "resources": {"limits": {GPU: "8"}}}
            ],
        },
    }
    _apply(cluster, namespace, pod)

    def unschedulable() -> dict[str, Any] | None:
        got = cluster.kubectl_json("get", "pod", "eight-gpus", "-n", namespace)
        for condition in got["status"].get("conditions", []):
            if condition["type"] == "PodScheduled" and condition["status"] == "False":
                return {"pod": got, "condition": condition}
        return None

    seen = wait_for(unschedulable, "the scheduler to mark the pod unschedulable")
    condition = seen["condition"]
    assert condition["reason"] == "Unschedulable"
    assert f"Insufficient {GPU}" in condition["message"]
    assert seen["pod"]["status"]["phase"] == "Pending"
    assert not seen["pod"]["spec"].get("nodeName")
    events = cluster.kubectl_json(
        "get",
        "events",
        "-n",
        namespace,
        "--field-selector",
        "involvedObject.name=eight-gpus,reason=FailedScheduling",
    )["items"]
    assert any(f"Insufficient {GPU}" in e["message"] for e in events)


def test_rbac_denies_a_service_account_without_a_role(cluster: E2ECluster, namespace: str) -> None:
    subject = f"system:serviceaccount:{namespace}:nobody"
    cluster.kubectl("create", "serviceaccount", "nobody", "-n", namespace)
    answer = cluster.kubectl(
        "auth", "can-i", "list", "pods", "-n", namespace, f"--as={subject}", check=False
    )
    assert answer.strip() == "no"

    # A real request with a token the apiserver signed: authenticated, then forbidden.
    token = cluster.kubectl("create", "token", "nobody", "-n", namespace).strip()
    with httpx.Client(
        base_url=cluster.access.server,
        verify=ssl.create_default_context(cafile=str(cluster.access.ca_cert)),
        headers={"Authorization": f"Bearer {token}"},
        timeout=10.0,
    ) as api:
        review = api.post(
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            json={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
        )
        assert review.status_code == 201, review.text
        assert review.json()["status"]["userInfo"]["username"] == subject

        denied = api.get(f"/api/v1/namespaces/{namespace}/pods")
        assert denied.status_code == 403
        assert denied.json()["reason"] == "Forbidden"
        assert subject in denied.json()["message"]

        # Granting a role is what changes the answer (RBAC, not a broken token).
        cluster.kubectl(
            "create", "role", "pod-reader", "--verb=list", "--resource=pods", "-n", namespace
        )
        cluster.kubectl(
            "create",
            "rolebinding",
            "nobody-reads-pods",
            "--role=pod-reader",
            f"--serviceaccount={namespace}:nobody",
            "-n",
            namespace,
        )
        wait_for(
            lambda: api.get(f"/api/v1/namespaces/{namespace}/pods").status_code == 200,
            "the new RoleBinding to take effect",
            timeout=30,
        )


def test_cluster_up_again_reports_the_running_cluster(cluster: E2ECluster) -> None:
    for _ in range(2):
        result = _braid("dev", "cluster", "up")
        assert result.returncode == 0, result.stdout + result.stderr
        assert "already running" in result.stdout
        assert str(cluster.access.kubeconfig) in result.stdout

    status = _braid("dev", "cluster", "status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert "nodes ready: 6" in status.stdout
    assert "RSS" in status.stdout
