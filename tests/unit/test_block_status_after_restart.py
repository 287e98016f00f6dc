"""A Block's first status after an operator restart: the Deployment's live readiness.

An operator killed after applying a Block's Deployment but before writing the Block's status
leaves a Block without status next to an Available Deployment. The restarted operator must
report it Ready from what the apply returned; it used to assume a new, empty Deployment and
write "0/1 ready", which no later Deployment event corrected.
"""

from __future__ import annotations

from typing import Any

from braid.kube.reconcile import block_status_from_deployment, reconcile_block

MODEL = {
    "metadata": {"name": "m", "namespace": "ns", "uid": "model-uid"},
    "spec": {
        "artifact": {"uri": "s3://bucket/m.pt"},
        "input": {"name": "image", "datatype": "FP32", "shape": [1, 28, 28]},
        "output": {"name": "logits", "datatype": "FP32", "shape": [10]},
        "baselineAccuracy": 0.9,
        "partition": {"blocks": [{"name": "b0", "firstLayer": 0, "lastLayer": 4}]},
    },
}
BLOCK = {
    "apiVersion": "braid.dev/v1alpha1",
    "kind": "Block",
    "metadata": {"name": "b", "namespace": "ns", "uid": "block-uid"},
    "spec": {"modelRef": {"name": "m"}, "partitions": {"first": 0, "last": 0}, "tier": "local"},
}


class _Lookup:
    def model(self, namespace: str, name: str) -> dict[str, Any] | None:
        return MODEL

    def links_served_by(self, namespace: str, block: str) -> list[str]:
        return []


class _Kube:
    """The API server's answer to an apply: the object with its live status."""

    def __init__(self, deployment_status: dict[str, Any]) -> None:
        self.deployment_status = deployment_status

    def apply(self, obj: dict[str, Any], field_manager: str = "") -> dict[str, Any]:
        status = self.deployment_status if obj["kind"] == "Deployment" else {}
        return {**obj, "status": status}


def _ready(status: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == "Ready")


def test_an_available_deployment_makes_the_first_status_ready() -> None:
    live = {"replicas": 1, "readyReplicas": 1, "availableReplicas": 1}
    outcome = reconcile_block(_Kube(live), BLOCK, _Lookup(), own=False)  # type: ignore[arg-type]
    assert outcome.deployment_status == live
    status = block_status_from_deployment(BLOCK, {"status": outcome.deployment_status})
    assert _ready(status)["status"] == "True"
    assert status["readyReplicas"] == 1


def test_a_new_deployment_starts_progressing() -> None:
    outcome = reconcile_block(_Kube({}), BLOCK, _Lookup(), own=False)  # type: ignore[arg-type]
    status = block_status_from_deployment(BLOCK, {"status": outcome.deployment_status})
    assert _ready(status)["status"] == "False"
    assert _ready(status)["reason"] == "Progressing"
