"""A Block whose pod cannot serve is Ready=False with the reason its pod gives, on the real
control plane with the operator running as its least-privileged account.

Each case is a ``PodFault``: what the Block asks for, and optionally what the kubelet would
write into the pod's status. On kwok nodes no kubelet runs, so ``inject`` writes that status
(``kubectl patch --subresource=status``, the way a kubelet reports it) once kwok has played
the pod's start; kwok's default pod-ready stage fires only while a pod has no IP, so it
leaves the patched status alone. The scheduler's verdict needs no stand-in: a Block on a
pool no node has is truly unschedulable.

A case with ``inject=None`` and a Block that truly fails on a real node (an image that node
does not have, say) runs the same assertions against the real kubelet: add it to ``FAULTS``
with ``real_node=True`` (skipped where the cluster has no real node) and a ``block_spec``
that places the pod there.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from braid_dev.stack.node_render import REAL_NODE_LABEL
from braid_dev.stack.processes import ManagedProcess
from tests.e2e.conftest import E2ECluster
from tests.e2e.helpers import wait_for

pytestmark = pytest.mark.e2e

IMAGE = "registry.example/braid/triton:never-pushed"
FETCH_URI = "s3://provider-models/fmnist/repository.tar.gz"
FETCH_MESSAGE = f"ArtifactNotFound: {FETCH_URI}: the object store answered 404 (NoSuchKey)"

Inject = Callable[[E2ECluster, str, dict[str, Any]], None]


@dataclass(frozen=True)
class PodFault:
    """One way a Block's pod fails, and what its Block must then say."""

    id: str
    block_spec: dict[str, Any]
    """Merged into the Block's spec (the image, the pool, the repository)."""
    reason: str
    message_has: Callable[[dict[str, Any]], tuple[str, ...]]
    """What the condition's message must contain, given the failing pod."""
    inject: Inject | None = None
    """Writes the kubelet's report into the pod's status; None where a real part reports."""
    real_node: bool = False


def _patch_status(cluster: E2ECluster, namespace: str, pod: str, status: dict[str, Any]) -> None:
    cluster.kubectl(
        "patch",
        "pod",
        pod,
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
    )


def _not_ready(**why: str) -> list[dict[str, Any]]:
    now = "2026-01-01T00:00:00Z"
    return [
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
        {"type": "Ready", "status": "False", "lastTransitionTime": now, **why},
        {"type": "ContainersReady", "status": "False", "lastTransitionTime": now, **why},
    ]


def _triton_status(pod: dict[str, Any], state: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {
        "name": "triton",
        "image": pod["spec"]["containers"][0]["image"],
        "imageID": "",
        "ready": False,
        "started": False,
        "restartCount": more.pop("restartCount", 0),
        "state": state,
        "lastState": more.pop("lastState", {}),
    }


def inject_image_pull(cluster: E2ECluster, namespace: str, pod: dict[str, Any]) -> None:
    image = pod["spec"]["containers"][0]["image"]
    waiting = {
        "reason": "ErrImagePull",
        "message": f'failed to pull and unpack image "{image}": not found',
    }
    _patch_status(
        cluster,
        namespace,
        pod["metadata"]["name"],
        {
            "phase": "Pending",
            "conditions": _not_ready(reason="ContainersNotReady"),
            "containerStatuses": [_triton_status(pod, {"waiting": waiting})],
        },
    )


def inject_fetch_failure(cluster: E2ECluster, namespace: str, pod: dict[str, Any]) -> None:
    terminated = {"exitCode": 1, "reason": "Error", "message": FETCH_MESSAGE}
    fetcher = pod["spec"]["initContainers"][0]
    _patch_status(
        cluster,
        namespace,
        pod["metadata"]["name"],
        {
            "phase": "Pending",
            "conditions": _not_ready(reason="ContainersNotReady"),
            "initContainerStatuses": [
                {
                    "name": fetcher["name"],
                    "image": fetcher["image"],
                    "imageID": "",
                    "ready": False,
                    "restartCount": 2,
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                    "lastState": {"terminated": terminated},
                }
            ],
            "containerStatuses": [_triton_status(pod, {"waiting": {"reason": "PodInitializing"}})],
        },
    )


def inject_crash_loop(cluster: E2ECluster, namespace: str, pod: dict[str, Any]) -> None:
    last = {
        "terminated": {
            "exitCode": 1,
            "reason": "Error",
            "message": "error: creating server: Internal - failed to load all models",
        }
    }
    _patch_status(
        cluster,
        namespace,
        pod["metadata"]["name"],
        {
            "phase": "Running",
            "conditions": _not_ready(reason="ContainersNotReady"),
            "containerStatuses": [
                _triton_status(
                    pod, {"waiting": {"reason": "CrashLoopBackOff"}}, restartCount=4, lastState=last
                )
            ],
        },
    )


FAULTS = [
    PodFault(
        id="unschedulable",
        block_spec={"nodePool": "no-such-pool"},
        reason="Unschedulable",
        message_has=lambda pod: ("didn't match Pod's node affinity/selector",),
    ),
    PodFault(
        id="image-pull",
        block_spec={},
        reason="ErrImagePull",
        message_has=lambda pod: (IMAGE, pod["spec"]["nodeName"]),
        inject=inject_image_pull,
    ),
    PodFault(
        id="artifact-fetch",
        block_spec={"modelRepository": {"uri": FETCH_URI, "format": "triton-repository"}},
        reason="ArtifactFetchFailed",
        message_has=lambda pod: (FETCH_MESSAGE,),
        inject=inject_fetch_failure,
    ),
    PodFault(
        id="crash-loop",
        block_spec={},
        reason="CrashLoopBackOff",
        message_has=lambda pod: ("container triton", "exit code 1", "failed to load all models"),
        inject=inject_crash_loop,
    ),
]


MODEL = {
    "apiVersion": "braid.dev/v1alpha1",
    "kind": "Model",
    "metadata": {"name": "cnn"},
    "spec": {
        "artifact": {"uri": "s3://provider-models/cnn.pt"},
        "input": {"name": "image", "datatype": "FP32", "shape": [1, 28, 28]},
        "output": {"name": "logits", "datatype": "FP32", "shape": [10]},
        "baselineAccuracy": 0.9,
        "homeTier": "local",
        "partition": {"blocks": [{"name": "b0", "firstLayer": 0, "lastLayer": 1}]},
    },
}


def _block(fault: PodFault) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "modelRef": {"name": "cnn"},
        "partitions": {"first": 0, "last": 0},
        "tier": "local",
        "replicas": 1,
        "resources": {"cpu": "100m", "memory": "256Mi"},
        "triton": {"image": IMAGE},
    }
    for key, value in fault.block_spec.items():
        spec[key] = {**spec[key], **value} if isinstance(spec.get(key), dict) else value
    return {
        "apiVersion": "braid.dev/v1alpha1",
        "kind": "Block",
        "metadata": {"name": f"b-{fault.id}"},
        "spec": spec,
    }


def _ready_condition(cluster: E2ECluster, namespace: str, name: str) -> dict[str, Any]:
    out = cluster.kubectl("get", "block", name, "-n", namespace, "-o", "json", check=False)
    conditions = (json.loads(out).get("status") or {}).get("conditions") or [] if out else []
    return next((c for c in conditions if c["type"] == "Ready"), {})


def _pod(
    cluster: E2ECluster, namespace: str, block: str, *, started: bool
) -> dict[str, Any] | None:
    pods = cluster.kubectl_json("get", "pods", "-n", namespace, "-l", f"braid.dev/block={block}")
    for pod in pods["items"]:
        if not started or pod["status"].get("podIP"):
            return dict(pod)
    return None


@pytest.fixture
def model(cluster: E2ECluster, operator: ManagedProcess, namespace: str) -> str:
    """The Model every case's Block serves a block of, in the test's own namespace."""
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(MODEL))
    return namespace


@pytest.mark.parametrize("fault", FAULTS, ids=lambda f: f.id)
def test_a_block_whose_pod_cannot_serve_says_why(
    cluster: E2ECluster, model: str, fault: PodFault
) -> None:
    namespace = model
    if fault.real_node and not cluster.kubectl(
        "get", "nodes", "-l", f"{REAL_NODE_LABEL[0]}={REAL_NODE_LABEL[1]}", "-o", "name"
    ):
        pytest.skip("the cluster has no real node (BRAID_CLUSTER_REAL_NODES=0)")
    block = _block(fault)
    name = block["metadata"]["name"]
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(block))
    if fault.inject is not None:
        # Once kwok has started the pod (it has an IP), report what a kubelet would.
        started = wait_for(
            lambda: _pod(cluster, namespace, name, started=True), f"kwok to start {name}'s pod"
        )
        fault.inject(cluster, namespace, started)
    condition = wait_for(
        lambda: (
            (c := _ready_condition(cluster, namespace, name)).get("reason") == fault.reason and c
        ),
        f"Block {name} Ready=False with reason {fault.reason}",
    )
    assert condition["status"] == "False"
    pod = _pod(cluster, namespace, name, started=False)
    assert pod is not None
    for expected in fault.message_has(pod):
        assert expected in condition["message"]
    # What a person sees first: the reason in `kubectl get block`, the message with -o wide.
    table = cluster.kubectl("get", "block", name, "-n", namespace, "-o", "wide")
    header, row = table.splitlines()[:2]
    reason_at = header.index("REASON")
    assert row[reason_at:].split()[0] == fault.reason
    assert "MESSAGE" in header
