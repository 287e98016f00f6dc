"""Run the braid operator against the local cluster as a real process, as its ServiceAccount.

The operator runs with a token of the ``braid-operator`` ServiceAccount bound to the
least-privilege ClusterRole in ``operator/rbac.yaml``, not with the admin kubeconfig, so the
e2e tests and the demo prove the RBAC manifest is enough.
"""

from __future__ import annotations

import base64
import json
import sys
import time
from pathlib import Path

import httpx
import yaml

from braid.api.common import GROUP
from braid.api.v1alpha1 import KINDS
from braid.kube.webhook import self_signed_certificate
from braid.render.webhook_config import WEBHOOK_CONFIGURATION, render_validating_webhook
from braid_dev.stack.cluster import ClusterAccess
from braid_dev.stack.ports import free_port
from braid_dev.stack.processes import ManagedProcess, start_process, wait_until

REPO_ROOT = Path(__file__).resolve().parents[4]
OPERATOR_NAMESPACE = "braid-system"
OPERATOR_ACCOUNT = "braid-operator"


def service_account_kubeconfig(
    access: ClusterAccess,
    path: Path,
    namespace: str = OPERATOR_NAMESPACE,
    account: str = OPERATOR_ACCOUNT,
    duration: str = "24h",
) -> Path:
    """A kubeconfig that authenticates as ``namespace/account`` with a bound token."""
    token = access.kubectl(
        "create", "token", account, "-n", namespace, f"--duration={duration}"
    ).stdout.strip()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "braid",
                "cluster": {"server": access.server, "certificate-authority": str(access.ca_cert)},
            }
        ],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [{"name": account, "context": {"cluster": "braid", "user": account}}],
        "current-context": account,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def install_crds(access: ClusterAccess) -> None:
    """braid's CRDs, applied server-side and Established (idempotent): what a platform team
    applies before a release that leaves CRDs out (``crds.enabled=false``)."""
    access.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO_ROOT / "crds"))
    crds = [f"crd/{info.plural}.{GROUP}" for info in KINDS]
    # A CRD created a moment ago may have no status.conditions yet, which kubectl wait
    # reports as an error ("<nil> is of the type <nil>") instead of waiting: retry briefly.
    for attempt in range(10):
        result = access.kubectl(
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            *crds,
            check=attempt == 9,
            timeout=90.0,
        )
        if result.returncode == 0:
            break
        time.sleep(0.5)


def install_operator_prerequisites(access: ClusterAccess) -> None:
    """CRDs and the process-run operator's RBAC, applied server-side (idempotent)."""
    install_crds(access)
    access.kubectl("apply", "--server-side", "-f", str(REPO_ROOT / "operator" / "rbac.yaml"))


def start_operator(
    access: ClusterAccess,
    workdir: Path,
    name: str = "braid-operator",
    namespaces: list[str] | None = None,
    account: tuple[str, str] = (OPERATOR_NAMESPACE, OPERATOR_ACCOUNT),
    webhook: bool = False,
    image_prefixes: tuple[str, ...] = (),
    allow_local_paths: bool = True,
) -> ManagedProcess:
    """Start ``operator/main.py`` as the operator's ServiceAccount; wait for its liveness.

    ``namespaces`` takes kopf's patterns (``"*"``, ``"!excluded-*"``); None watches the
    whole cluster. ``account`` is the (namespace, name) of the ServiceAccount to run as:
    ``operator/rbac.yaml``'s by default, or a Helm release's.

    The local stack allows file:// URIs (``BRAID_OPERATOR_ALLOW_LOCAL_PATHS``): the demo's
    catalogs and artifacts are files on this machine. With ``webhook`` the operator serves
    its admission webhook on a loopback port, with a certificate made here, and the
    ValidatingWebhookConfiguration is applied as the admin (``install_webhook``).
    """
    kubeconfig = service_account_kubeconfig(
        access, workdir / "operator.kubeconfig", namespace=account[0], account=account[1]
    )
    port = free_port()
    extra: dict[str, str] = {}
    webhook_port = 0
    if webhook:
        webhook_port = free_port()
        cert_dir = workdir / "webhook"
        self_signed_certificate(["127.0.0.1"], cert_dir)
        (cert_dir / "port").write_text(str(webhook_port))
        extra = {
            "BRAID_OPERATOR_WEBHOOK_PORT": str(webhook_port),
            "BRAID_OPERATOR_WEBHOOK_ADDR": "127.0.0.1",
            "BRAID_OPERATOR_WEBHOOK_HOST": "127.0.0.1",
            "BRAID_OPERATOR_WEBHOOK_CERT_DIR": str(cert_dir),
        }
    process = start_process(
        name,
        [sys.executable, str(REPO_ROOT / "operator" / "main.py")],
        log_path=workdir / f"{name}.log",
        env={
            "KUBECONFIG": str(kubeconfig),
            "BRAID_OPERATOR_LIVENESS_ENDPOINT": f"http://127.0.0.1:{port}/healthz",
            "PYTHONUNBUFFERED": "1",
            # glibc gives each handler thread its own malloc arena; two keep RSS flat.
            "MALLOC_ARENA_MAX": "2",
            "BRAID_OPERATOR_NAMESPACES": json.dumps(namespaces or []),
            "BRAID_OPERATOR_ALLOW_LOCAL_PATHS": "true" if allow_local_paths else "false",
            "BRAID_OPERATOR_IMAGE_PREFIXES": json.dumps(list(image_prefixes)),
            **extra,
        },
        pid_path=workdir / f"{name}.pid",
    )
    wait_until(
        lambda: httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1.0).status_code == 200,
        "the operator's liveness endpoint",
        timeout=90,
        process=process,
    )
    return process


def install_webhook(access: ClusterAccess, workdir: Path) -> None:
    """Register the webhook of the operator ``start_operator(workdir, webhook=True)`` started
    (its loopback port and certificate are in ``workdir/webhook``) as the cluster admin."""
    ca = (workdir / "webhook" / "tls.crt").read_bytes()
    port = int((workdir / "webhook" / "port").read_text())
    config = render_validating_webhook(
        {"url": f"https://127.0.0.1:{port}", "caBundle": base64.b64encode(ca).decode()}
    )
    access.kubectl(
        "apply", "--server-side", "--force-conflicts", "-f", "-", input=json.dumps(config)
    )


def uninstall_webhook(access: ClusterAccess) -> None:
    """Remove the registration: with the operator gone, failurePolicy Fail would refuse
    every braid object of the cluster."""
    access.kubectl(
        "delete", "validatingwebhookconfiguration", WEBHOOK_CONFIGURATION, "--ignore-not-found"
    )
