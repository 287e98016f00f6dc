"""The hostile cases (``hostile_crs``) against a real API server with the operator's
admission webhook registered: each sent as a server-side dry-run create, so nothing is
stored and the cases do not depend on each other.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from braid.api.common import API_VERSION
from braid.api.v1alpha1.registry import KINDS
from braid.logs import log_event
from braid_dev.reliability.hostile_crs import (
    CASES,
    HOST,
    IMAGE_PREFIXES,
    LOCAL,
    VALID,
    WORLD,
    HostileCase,
    resolve,
)
from braid_dev.reliability.invalid_crs import api_client
from braid_dev.stack.cluster import ClusterAccess
from braid_dev.stack.operator_process import (
    install_operator_prerequisites,
    install_webhook,
    start_operator,
    uninstall_webhook,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class HostileOutcome:
    case: HostileCase
    status: int
    message: str

    @property
    def admitted(self) -> bool:
        return self.status < 300

    @property
    def names_reason(self) -> bool:
        return self.case.expect in self.message


def dry_run(
    client: httpx.Client, kind: str, namespace: str, name: str, spec: dict[str, Any]
) -> tuple[int, str]:
    """Status and message of a server-side dry-run create (strict field validation)."""
    plural = next(info.plural for info in KINDS if info.kind == kind)
    response = client.post(
        f"/apis/{API_VERSION}/namespaces/{namespace}/{plural}",
        params={"dryRun": "All", "fieldValidation": "Strict"},
        json={
            "apiVersion": API_VERSION,
            "kind": kind,
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec,
        },
    )
    try:
        message = str(response.json().get("message", response.text))
    except ValueError:
        message = response.text
    return response.status_code, message


def _names(local: str, host: str) -> dict[str, str]:
    return {LOCAL: local, HOST: host}


def create_world(access: ClusterAccess, local: str, host: str) -> None:
    """The two providers' namespaces, Models and Blocks the cases refer to."""
    names = _names(local, host)
    for ns in (local, host):
        if access.kubectl("get", "namespace", ns, check=False).returncode != 0:
            access.kubectl("create", "namespace", ns)
    docs = [
        {
            "apiVersion": API_VERSION,
            "kind": kind,
            "metadata": {"name": name, "namespace": names[ns]},
            "spec": resolve(spec, local, host),
        }
        for kind, ns, name, spec in WORLD
    ]
    access.kubectl(
        "apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": docs})
    )


def send_cases(
    client: httpx.Client, local: str, host: str, cases: list[HostileCase] | None = None
) -> list[HostileOutcome]:
    """Every case as a dry-run; raises if a valid object of the world is refused."""
    names = _names(local, host)
    for kind, ns, name, spec in VALID:
        status, message = dry_run(client, kind, names[ns], name, resolve(spec, local, host))
        if status >= 300:
            raise ValueError(f"the valid {kind} {name} is refused ({status}): {message}")
    return [
        HostileOutcome(
            c, *dry_run(client, c.kind, names[c.namespace], c.name, c.resolved(local, host))
        )
        for c in (cases if cases is not None else CASES)
    ]


def run_hostile_campaign(
    access: ClusterAccess, workdir: Path, prefix: str = "hostile-"
) -> list[HostileOutcome]:
    """The operator with its webhook (local paths refused, the image allow-list set), the
    world, every case; the webhook's registration is removed again before returning.
    ``prefix`` names the two namespaces (one no other operator watches)."""
    suffix = uuid.uuid4().hex[:6]
    local, host = f"{prefix}local-{suffix}", f"{prefix}host-{suffix}"
    install_operator_prerequisites(access)
    create_world(access, local, host)
    operator = start_operator(
        access,
        workdir,
        name="braid-operator-webhook",
        namespaces=[local, host],
        webhook=True,
        image_prefixes=IMAGE_PREFIXES,
        allow_local_paths=False,
    )
    try:
        install_webhook(access, workdir)
        with tempfile.TemporaryDirectory() as tmp, api_client(access, Path(tmp)) as client:
            wait_for_webhook(client, local, host)
            outcomes = send_cases(client, local, host)
    finally:
        uninstall_webhook(access)
        operator.stop()
        for ns in (local, host):
            access.kubectl("delete", "namespace", ns, "--wait=false", check=False)
    log_event(
        logger,
        "hostile_crs.done",
        tried=len(outcomes),
        admitted=sum(o.admitted for o in outcomes),
        unnamed=sum(not o.admitted and not o.names_reason for o in outcomes),
    )
    return outcomes


def wait_for_webhook(client: httpx.Client, local: str, host: str, timeout: float = 60.0) -> None:
    """Until the API server calls the webhook: a case only it refuses is refused."""
    probe = next(c for c in CASES if c.id == "block-other-namespace-model")
    deadline = time.monotonic() + timeout
    while True:
        status, message = dry_run(
            client, probe.kind, local, probe.name, probe.resolved(local, host)
        )
        if status >= 300 and probe.expect in message:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"the webhook does not answer: {status} {message[:300]}")
        time.sleep(0.5)
