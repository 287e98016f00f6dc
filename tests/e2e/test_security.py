"""Security on the real control plane: providers stay isolated, RBAC cannot be escalated, and
nothing secret reaches the operator's log.

Provider isolation is the contract of cross-connections: a host provider serves the link
models another provider trained for it, and never receives the local model itself (its
artifact, its catalog, its blocks' model repository or Triton models). The samples set up
exactly that (provider-a's fmnist-cnn crosses into provider-b's mnist-cnn), so every object
in provider-b is read back and searched for anything of provider-a's model but the links.
"""

from __future__ import annotations

import json

from braid_dev.reliability.security import ESCALATION_CHECKS
from braid_dev.stack.processes import ManagedProcess
from tests.e2e.conftest import E2ECluster
from tests.e2e.helpers import wait_for

XIN = "mnist-cnn.xin.fmnist-cnn.0-1-3-5.normal"
XOUT = "mnist-cnn.xout.fmnist-cnn.0-1-3-5.normal"
NAMESPACED_KINDS = "deployments,replicasets,pods,services,configmaps,models,blocks,links"
SECRET_MARKER = "sEcReT-7f3a9c1e-do-not-log"


def _dump(cluster: E2ECluster, namespace: str) -> str:
    """Every object of the kinds braid writes or reads in ``namespace``, as one JSON text."""
    return json.dumps(cluster.kubectl_json("get", NAMESPACED_KINDS, "-n", namespace))


def _host_loads_both_links(cluster: E2ECluster) -> bool:
    out = cluster.kubectl(
        "get", "deployment", "triton-mnist-body", "-n", "provider-b", "-o", "json", check=False
    )
    if not out:
        return False
    args = json.loads(out)["spec"]["template"]["spec"]["containers"][0]["args"]
    models = {a.split("=", 1)[1] for a in args if a.startswith("--load-model=")}
    return {XIN, XOUT} <= models


def test_a_host_namespace_receives_the_link_models_and_nothing_of_the_local_model(
    cluster: E2ECluster, samples: None
) -> None:
    wait_for(lambda: _host_loads_both_links(cluster), "the host Deployment to load both links")
    host = _dump(cluster, "provider-b")
    assert XIN in host  # the links are there
    assert XOUT in host
    local_model = cluster.kubectl_json("get", "model", "fmnist-cnn", "-n", "provider-a")["spec"]
    local_blocks = cluster.kubectl_json("get", "blocks", "-n", "provider-a")["items"]
    forbidden = {
        local_model["artifact"]["uri"],  # the frozen local model
        local_model["catalog"]["uri"],
        *(b["spec"]["modelRepository"]["uri"] for b in local_blocks),
        *(f"fmnist-cnn.b{i}" for i in range(len(local_model["partition"]["blocks"]))),
        *(f"fmnist-cnn.exit.{i}" for i in range(len(local_model["partition"]["blocks"]))),
    }
    leaked = sorted(f for f in forbidden if f in host)
    assert leaked == []
    # Nor does the local provider receive the host's artifacts.
    local = _dump(cluster, "provider-a")
    host_model = cluster.kubectl_json("get", "model", "mnist-cnn", "-n", "provider-b")["spec"]
    host_block = cluster.kubectl_json("get", "block", "mnist-body", "-n", "provider-b")["spec"]
    assert host_model["artifact"]["uri"] not in local
    assert host_block["modelRepository"]["uri"] not in local


def test_no_secret_value_reaches_the_operators_log(
    cluster: E2ECluster, operator: ManagedProcess, namespace: str
) -> None:
    """A Secret next to braid's objects, a presigned artifact URL and a token in an
    annotation: the operator reconciles them and logs none of the secret parts."""
    cluster.kubectl(
        "create", "secret", "generic", "registry-token", "-n", namespace,
        f"--from-literal=token={SECRET_MARKER}",
    )  # fmt: skip
    block = {
        "apiVersion": "braid.dev/v1alpha1",
        "kind": "Block",
        "metadata": {
            "name": "leaky",
            "namespace": namespace,
            "annotations": {"example.com/bearer": f"Bearer {SECRET_MARKER}"},
        },
        "spec": {
            "modelRef": {"name": "absent"},  # the operator will complain: its errors too
            "partitions": {"first": 0, "last": 0},
            "tier": "local",
            "modelRepository": {
                "uri": f"https://models.example/repo?X-Amz-Signature={SECRET_MARKER}",
                "format": "triton-repository",
            },
        },
    }
    start = operator.log_path.stat().st_size
    cluster.kubectl("apply", "-f", "-", input=json.dumps(block))

    def reconciled() -> bool:
        log = operator.log_path.read_bytes()[start:].decode(errors="replace")
        return f"{namespace}/absent" in log  # the Block's error: its Model does not exist

    wait_for(reconciled, "the operator to handle the Block (and log its error)")
    log = operator.log_path.read_text(errors="replace")
    assert SECRET_MARKER not in log


OPERATOR_ACCOUNT = "system:serviceaccount:braid-system:braid-operator"
"""The account of operator/rbac.yaml, which the e2e operator runs as (the chart's accounts
are checked in test_chart.py, against the same escalation table)."""

ESCALATION = ESCALATION_CHECKS


def _can(cluster: E2ECluster, account: str, verb: str, resource: str, *where: str) -> bool:
    kind, _, subresource = resource.partition("/")
    extra = [f"--subresource={subresource}"] if subresource else []
    answer = cluster.kubectl(
        "auth", "can-i", verb, kind, *extra, *where, f"--as={account}", check=False
    ).strip()
    return answer == "yes"


def test_the_operator_account_does_its_job_and_cannot_escalate(
    cluster: E2ECluster, operator: ManagedProcess
) -> None:
    for where in (["-n", "provider-b"], ["--all-namespaces"]):
        assert _can(cluster, OPERATOR_ACCOUNT, "watch", "blocks.braid.dev", *where)
        assert _can(cluster, OPERATOR_ACCOUNT, "create", "deployments.apps", *where)
        assert _can(cluster, OPERATOR_ACCOUNT, "patch", "links.braid.dev/status", *where)
        for verb, resource in ESCALATION:
            assert not _can(cluster, OPERATOR_ACCOUNT, verb, resource, *where), (verb, resource)
    # It deletes Links (a deleted Model takes its cross links), nothing else of braid's.
    assert _can(cluster, OPERATOR_ACCOUNT, "delete", "links.braid.dev", "-n", "provider-b")
    for kind in ("models", "blocks", "offloadpolicies"):
        assert not _can(cluster, OPERATOR_ACCOUNT, "delete", f"{kind}.braid.dev", "-A")


def test_a_providers_default_account_can_do_nothing(cluster: E2ECluster, namespace: str) -> None:
    """Triton pods run as their namespace's default account: it must not reach braid's
    objects or another provider's."""
    account = f"system:serviceaccount:{namespace}:default"
    for verb, resource in [*ESCALATION, ("get", "models.braid.dev"), ("list", "configmaps")]:
        assert not _can(cluster, account, verb, resource, "-n", namespace), (verb, resource)
        assert not _can(cluster, account, verb, resource, "-n", "provider-b"), (verb, resource)
