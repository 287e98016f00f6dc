"""Admission on the real API server: every hand-written hostile case is refused, by the
schema (patterns, lengths, CEL) or by the operator's validating webhook, with a message that
names the field or the reason; the webhook fails closed and answers dry-runs. And the pods
braid renders pass the API server's Pod Security admission at "restricted".

The operator runs with its webhook on a loopback port, local paths refused and the image
allow-list of ``braid_dev.reliability.hostile_crs`` (cluster mode), in two namespaces of its
own that the session's operator ignores.
"""

from __future__ import annotations

import json
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from braid.api.v1alpha1.block import BlockSpec
from braid.render.block import BlockRender, ObjectMeta, render_block_deployment
from braid_dev.reliability.hostile_campaign import (
    create_world,
    dry_run,
    send_cases,
    wait_for_webhook,
)
from braid_dev.reliability.hostile_crs import CASES, IMAGE_PREFIXES, VALID, resolve
from braid_dev.reliability.invalid_crs import api_client
from braid_dev.stack.operator_process import (
    install_operator_prerequisites,
    install_webhook,
    start_operator,
    uninstall_webhook,
)
from braid_dev.stack.processes import ManagedProcess
from tests.e2e.conftest import ISOLATED, E2ECluster


@dataclass
class Admission:
    client: httpx.Client
    local: str
    host: str
    operator: ManagedProcess


@pytest.fixture(scope="module")
def admission(cluster: E2ECluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Admission]:
    suffix = uuid.uuid4().hex[:6]
    local, host = f"{ISOLATED}adm-local-{suffix}", f"{ISOLATED}adm-host-{suffix}"
    install_operator_prerequisites(cluster.access)
    create_world(cluster.access, local, host)
    workdir = tmp_path_factory.mktemp("webhook-operator")
    operator = start_operator(
        cluster.access,
        workdir,
        name="braid-operator-webhook",
        namespaces=[local, host],
        webhook=True,
        image_prefixes=IMAGE_PREFIXES,
        allow_local_paths=False,
    )
    try:
        install_webhook(cluster.access, workdir)
        with tempfile.TemporaryDirectory() as tmp, api_client(cluster.access, Path(tmp)) as client:
            wait_for_webhook(client, local, host)
            yield Admission(client, local, host, operator)
    finally:
        uninstall_webhook(cluster.access)
        operator.stop()
        for ns in (local, host):
            cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def test_every_hostile_case_is_refused_naming_its_field_or_reason(admission: Admission) -> None:
    outcomes = send_cases(admission.client, admission.local, admission.host)
    assert len(outcomes) >= 60
    admitted = [o.case.id for o in outcomes if o.admitted]
    unnamed = [
        f"{o.case.id}: wanted {o.case.expect!r} in {o.message[:300]!r}"
        for o in outcomes
        if not o.admitted and not o.names_reason
    ]
    assert admitted == []
    assert unnamed == []


def test_the_valid_world_is_admitted(admission: Admission) -> None:
    names = {"<local>": admission.local, "<host>": admission.host}
    for kind, ns, name, spec in VALID:
        resolved = resolve(spec, admission.local, admission.host)
        status, message = dry_run(admission.client, kind, names[ns], name, resolved)
        assert status < 300, message


def test_kubectl_dry_run_shows_the_webhooks_reason(
    cluster: E2ECluster, admission: Admission
) -> None:
    """What a person sees: kubectl apply --dry-run=server is answered by the webhook too."""
    case = next(c for c in CASES if c.id == "block-hostpath-etc")
    doc = {
        "apiVersion": "braid.dev/v1alpha1",
        "kind": "Block",
        "metadata": {"name": "hostpath", "namespace": admission.local},
        "spec": case.resolved(admission.local, admission.host),
    }
    result = cluster.access.kubectl(
        "apply", "--dry-run=server", "-f", "-", input=json.dumps(doc), check=False
    )
    assert result.returncode != 0
    assert "spec.modelRepository.uri" in result.stderr
    assert "refused in cluster mode" in result.stderr


def test_the_webhook_fails_closed_when_the_operator_is_down(
    cluster: E2ECluster, admission: Admission, tmp_path: Path
) -> None:
    """With the webhook registered and nobody answering, braid objects are refused."""
    admission.operator.stop()
    try:
        kind, _, name, spec = VALID[0]
        resolved = resolve(spec, admission.local, admission.host)
        status, message = dry_run(admission.client, kind, admission.local, name, resolved)
        assert status >= 400
        assert "failed calling webhook" in message
    finally:
        admission.operator = start_operator(
            cluster.access,
            tmp_path,
            name="braid-operator-webhook-2",
            namespaces=[admission.local, admission.host],
            webhook=True,
            image_prefixes=IMAGE_PREFIXES,
            allow_local_paths=False,
        )
        install_webhook(cluster.access, tmp_path)
        wait_for_webhook(admission.client, admission.local, admission.host)


@pytest.mark.parametrize("tier", ["local", "edge"])
def test_rendered_triton_pods_pass_pod_security_restricted(
    cluster: E2ECluster, namespace: str, tier: str
) -> None:
    """The API server's PodSecurity admission, enforcing "restricted" on the namespace as the
    samples and the chart label provider namespaces, admits the pod braid renders and refuses
    the same pod with its security context taken away."""
    cluster.kubectl(
        "label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted"
    )
    spec = {
        "modelRef": {"name": "m"},
        "partitions": {"first": 0, "last": 0},
        "tier": tier,
        "resources": {"gpu": 0 if tier == "local" else 1},
        "modelRepository": {"uri": "pvc://claim/repo"},
    }
    render = BlockRender(
        owner=ObjectMeta(name="psa", namespace=namespace, uid="u"),
        spec=BlockSpec.model_validate(spec),
        model_name="m",
        triton_models=["m.b0"],
    )
    template = render_block_deployment(render)["spec"]["template"]["spec"]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "psa", "namespace": namespace},
        "spec": template,
    }
    ok = cluster.access.kubectl(
        "create", "--dry-run=server", "-f", "-", input=json.dumps(pod), check=False
    )
    assert ok.returncode == 0, ok.stderr
    bare = json.loads(json.dumps(pod))
    del bare["spec"]["securityContext"]
    del bare["spec"]["containers"][0]["securityContext"]
    refused = cluster.access.kubectl(
        "create", "--dry-run=server", "-f", "-", input=json.dumps(bare), check=False
    )
    assert refused.returncode != 0
    assert 'violates PodSecurity "restricted' in refused.stderr
