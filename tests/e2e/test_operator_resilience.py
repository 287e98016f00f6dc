"""The operator under trouble: specs the API server cannot judge, and a crash mid-reconcile."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from braid_dev.stack.operator_process import install_operator_prerequisites, start_operator
from braid_dev.stack.processes import ManagedProcess
from tests.e2e.conftest import E2ECluster
from tests.e2e.helpers import wait_for

BLOCKS = 8


def _model(namespace: str, contiguous: bool = True) -> dict[str, Any]:
    second = 1 if contiguous else 3  # a gap: layers 1-2 belong to no block
    return {
        "apiVersion": "braid.dev/v1alpha1",
        "kind": "Model",
        "metadata": {"name": "m", "namespace": namespace},
        "spec": {
            "artifact": {"uri": "s3://bucket/m.pt"},
            "input": {"name": "image", "datatype": "FP32", "shape": [1, 28, 28]},
            "output": {"name": "logits", "datatype": "FP32", "shape": [10]},
            "baselineAccuracy": 0.9,
            "partition": {
                "blocks": [
                    {"name": "b0", "firstLayer": 0, "lastLayer": 0},
                    {"name": "b1", "firstLayer": second, "lastLayer": 4},
                ]
            },
        },
    }


def _block(namespace: str, name: str, last: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": "braid.dev/v1alpha1",
        "kind": "Block",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "modelRef": {"name": "m"},
            "partitions": {"first": 0, "last": last},
            "tier": "local",
            "replicas": 1,
        },
    }


def _apply(cluster: E2ECluster, *objs: dict[str, Any]) -> None:
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objs))


def _condition(cluster: E2ECluster, kind: str, name: str, ns: str) -> dict[str, Any] | None:
    out = cluster.kubectl("get", kind, name, "-n", ns, "-o", "json", check=False)
    conditions = (json.loads(out).get("status") or {}).get("conditions") or [] if out else []
    return next((c for c in conditions if c["type"] == "Ready"), None)


def test_partition_gap_is_refused_at_admission(
    cluster: E2ECluster, operator: ManagedProcess, namespace: str
) -> None:
    """The schema's CEL rule refuses the gap before the operator ever sees it."""
    result = cluster.access.kubectl(
        "apply", "-f", "-", input=yaml.safe_dump(_model(namespace, contiguous=False)), check=False
    )
    assert result.returncode != 0
    assert "spec.partition.blocks" in result.stderr
    assert "contiguous" in result.stderr
    assert operator.alive()


def test_block_beyond_the_partition_is_reported(
    cluster: E2ECluster, operator: ManagedProcess, namespace: str
) -> None:
    _apply(cluster, _model(namespace), _block(namespace, "too-far", last=5))
    ready = wait_for(
        lambda: (
            (c := _condition(cluster, "block", "too-far", namespace))
            and c["reason"] == "PartitionOutOfRange"
            and c
        ),
        "Block Ready=False PartitionOutOfRange",
    )
    assert ready["status"] == "False"
    assert "spec.partitions.last" in ready["message"]
    assert operator.alive()


def test_a_block_of_another_namespaces_model_is_reported_with_an_event(
    cluster: E2ECluster, operator: ManagedProcess, namespace: str
) -> None:
    """Without the webhook (the session's operator serves none), the reconcile refuses it:
    Ready=False with the reason and a Warning Event, and no Deployment."""
    block = _block(namespace, "elsewhere")
    block["spec"]["modelRef"] = {"name": "m", "namespace": "kube-system"}
    _apply(cluster, _model(namespace), block)
    ready = wait_for(
        lambda: (
            (c := _condition(cluster, "block", "elsewhere", namespace))
            and c["reason"] == "OtherNamespace"
            and c
        ),
        "Block Ready=False OtherNamespace",
    )
    assert ready["status"] == "False"
    assert "spec.modelRef.namespace" in ready["message"]

    def warned() -> bool:
        events = cluster.kubectl_json(
            "get", "events", "-n", namespace, "--field-selector", "involvedObject.name=elsewhere"
        )["items"]
        return any(e["reason"] == "OtherNamespace" and e["type"] == "Warning" for e in events)

    # kopf posts Events from a queue of its own, so the Event may land after the status.
    wait_for(warned, "a Warning Event OtherNamespace on the Block", timeout=30)
    deployments = cluster.kubectl_json("get", "deployments", "-n", namespace)["items"]
    assert "triton-elsewhere" not in [d["metadata"]["name"] for d in deployments]


def test_a_block_scaled_to_zero_is_not_ready(
    cluster: E2ECluster, operator: ManagedProcess, namespace: str
) -> None:
    block = _block(namespace, "zero")
    block["spec"]["replicas"] = 0
    _apply(cluster, _model(namespace), block)
    ready = wait_for(
        lambda: (
            (c := _condition(cluster, "block", "zero", namespace))
            and c["reason"] == "ScaledToZero"
            and c
        ),
        "Block Ready=False ScaledToZero",
    )
    assert ready["status"] == "False"


def test_operator_killed_mid_reconcile_converges_without_duplicates(
    cluster: E2ECluster, isolated_namespace: str, tmp_path: Path
) -> None:
    namespace = isolated_namespace
    install_operator_prerequisites(cluster.access)
    first = start_operator(cluster.access, tmp_path / "first", namespaces=[namespace])
    try:
        _apply(cluster, _model(namespace), *[_block(namespace, f"b{i}") for i in range(BLOCKS)])

        def some_applied() -> bool:
            items = cluster.kubectl_json("get", "deployments", "-n", namespace)["items"]
            return len(items) >= 1

        wait_for(some_applied, "the first Deployments")
    finally:
        first.popen.kill()  # SIGKILL: no graceful shutdown, handlers cut mid-way
        first.stop()
    second = start_operator(cluster.access, tmp_path / "second", namespaces=[namespace])
    try:

        def all_ready() -> bool:
            return all(
                (c := _condition(cluster, "block", f"b{i}", namespace)) is not None
                and c["status"] == "True"
                for i in range(BLOCKS)
            )

        wait_for(all_ready, f"all {BLOCKS} Blocks Ready after the restart", timeout=120)
        deployments = cluster.kubectl_json("get", "deployments", "-n", namespace)["items"]
        services = cluster.kubectl_json("get", "services", "-n", namespace)["items"]
        names = sorted(d["metadata"]["name"] for d in deployments)
        assert names == sorted(f"triton-b{i}" for i in range(BLOCKS))
        assert len(services) == BLOCKS
        replicasets = cluster.kubectl_json("get", "replicasets", "-n", namespace)["items"]
        assert len(replicasets) == BLOCKS, "a re-apply with the same spec must not roll the pods"
    finally:
        # The Model carries the operator's finalizer: delete it while an operator still runs.
        cluster.kubectl("delete", "model", "m", "-n", namespace, "--timeout=60s", check=False)
        second.stop()
