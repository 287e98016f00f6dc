"""Isolation without a cluster: what a rendered Triton pod may do, which URIs it may mount,
what the operator reads and echoes, and when a Block counts as serving."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, cast

import pytest

from braid.api.v1alpha1.block import BlockSpec
from braid.kube.catalogs import CATALOG_MAX_BYTES, load_catalog
from braid.kube.client import Kube, refusal
from braid.kube.errors import SpecError
from braid.kube.reconcile import block_ready, block_status_from_deployment
from braid.render.admission import AdmissionConfig
from braid.render.block import BlockRender, ObjectMeta, render_block_deployment

NO_KUBE = cast(Kube, None)  # file:// catalogs never reach the API server
LOCAL = AdmissionConfig(allow_local_paths=True)


def _render(repository: str | None = None, allow_local_paths: bool = False) -> BlockRender:
    spec: dict[str, Any] = {"modelRef": {"name": "m"}, "partitions": {"first": 0, "last": 0}}
    spec["tier"] = "local"
    if repository is not None:
        spec["modelRepository"] = {"uri": repository, "format": "triton-repository"}
    return BlockRender(
        owner=ObjectMeta(name="b", namespace="provider-a", uid="u"),
        spec=BlockSpec.model_validate(spec),
        model_name="m",
        triton_models=["m.b0"],
        allow_local_paths=allow_local_paths,
    )


def test_triton_pods_pass_pod_security_restricted() -> None:
    pod = render_block_deployment(_render())["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["privileged"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    # The read-only root leaves Triton /tmp and /dev/shm to write to.
    assert {m["mountPath"] for m in container["volumeMounts"]} >= {"/tmp", "/dev/shm"}
    assert not any("hostPath" in v for v in pod["volumes"])


def test_file_repositories_become_hostpath_only_on_the_local_stack() -> None:
    with pytest.raises(ValueError, match=r"spec\.modelRepository\.uri.*cluster mode"):
        render_block_deployment(_render("file:///etc"))
    pod = render_block_deployment(_render("file:///srv/repo", allow_local_paths=True))
    volumes = pod["spec"]["template"]["spec"]["volumes"]
    assert {"path": "/srv/repo", "type": "Directory"} in [v.get("hostPath") for v in volumes]


def test_a_pvc_subpath_cannot_climb_out_of_its_claim() -> None:
    with pytest.raises(ValueError, match=r"\.\."):
        BlockSpec.model_validate(
            {
                "modelRef": {"name": "m"},
                "partitions": {"first": 0, "last": 0},
                "tier": "local",
                "modelRepository": {"uri": "pvc://claim/../../etc"},
            }
        )


def test_file_catalogs_are_refused_in_cluster_mode(tmp_path: Path) -> None:
    path = tmp_path / "catalog.json"
    path.write_text("{}")
    with pytest.raises(SpecError) as caught:
        load_catalog(NO_KUBE, f"file://{path}", "ns")
    assert caught.value.reason == "LocalPathRefused"


def test_a_catalog_read_is_bounded_and_quotes_nothing_it_read(tmp_path: Path) -> None:
    secret = tmp_path / "private"
    secret.write_text('{"root": "hunter2-password", "models": ["sEcReT-line"]}')
    with pytest.raises(SpecError) as caught:
        load_catalog(NO_KUBE, f"file://{secret}", "ns", LOCAL)
    assert caught.value.reason == "CatalogInvalid"
    assert "hunter2" not in str(caught.value)
    assert "sEcReT" not in str(caught.value)
    big = tmp_path / "big.json"
    with big.open("wb") as out:
        out.truncate(CATALOG_MAX_BYTES + 1)
    with pytest.raises(SpecError) as caught:
        load_catalog(NO_KUBE, f"file://{big}", "ns", LOCAL)
    assert caught.value.reason == "CatalogTooLarge"


def test_a_fifo_or_device_is_not_read(tmp_path: Path) -> None:
    """A read of a FIFO (or /dev/zero) would block or never end: only regular files are read."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for uri in (f"file://{fifo}", "file:///dev/zero"):
        with pytest.raises(SpecError) as caught:
            load_catalog(NO_KUBE, uri, "ns", LOCAL)
        assert caught.value.reason == "CatalogUnsupported"


def _block(replicas: int) -> dict[str, Any]:
    return {
        "metadata": {"name": "b", "namespace": "ns", "generation": 1},
        "spec": {"replicas": replicas},
        "status": {},
    }


def _deployment() -> dict[str, Any]:
    return {"metadata": {}, "status": {}}


def _pods(ready: int) -> list[dict[str, Any]]:
    return [
        {
            "metadata": {"name": f"p{i}"},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
        }
        for i in range(ready)
    ]


def test_a_block_with_no_ready_pod_is_not_ready_even_when_none_was_asked_for() -> None:
    zero = block_status_from_deployment(_block(0), _deployment(), _pods(0))
    (ready,) = zero["conditions"]
    assert (ready["status"], ready["reason"]) == ("False", "ScaledToZero")
    assert not block_ready({"status": zero})
    serving = block_status_from_deployment(_block(1), _deployment(), _pods(1))
    assert block_ready({"status": serving})
    assert serving["readyReplicas"] == 1
    waiting = block_status_from_deployment(_block(2), _deployment(), _pods(1))
    assert not block_ready({"status": waiting})
    gone = block_status_from_deployment(_block(1), None, _pods(1))
    assert not block_ready({"status": gone})


def test_a_422_is_a_refusal_with_the_api_servers_message() -> None:
    from kubernetes.client.exceptions import ApiException

    exc = ApiException(status=422, reason="Unprocessable Entity")
    exc.body = '{"message": "Deployment.apps \\"x\\" is invalid: spec.template: bad"}'
    assert refusal(exc) == 'Deployment.apps "x" is invalid: spec.template: bad'
    assert refusal(ApiException(status=503, reason="Unavailable")) is None
    assert refusal(ValueError("x")) is None


def test_a_stored_spec_the_rules_now_refuse_is_reported_not_retried() -> None:
    """A Model stored before a rule existed gets Ready=False naming the field, no exception
    for kopf to retry forever."""
    from braid.kube.reconcile import model_status

    body = {
        "metadata": {"name": "m", "namespace": "ns", "generation": 3},
        "spec": {"artifact": {"uri": "pvc://claim/../../etc"}},
    }
    status = model_status(body, NO_KUBE, blocks=[])
    (ready,) = status["conditions"]
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert "spec.artifact" in ready["message"]
    assert "'..' path segment" in ready["message"]
