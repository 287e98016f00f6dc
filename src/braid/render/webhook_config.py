"""The ValidatingWebhookConfiguration of braid's admission webhook. Pure.

The operator serves the webhook but does not register it: registering one needs a
cluster-wide write on ``validatingwebhookconfigurations``, with which a stolen operator token
could intercept any kind of object. The chart (or the local stack's rig, as an admin)
applies this object once; the operator's account keeps least privilege.
"""

from __future__ import annotations

from typing import Any

from braid.api.common import GROUP, VERSION
from braid.api.v1alpha1.registry import KINDS

WEBHOOK_CONFIGURATION = f"validate.{GROUP}"
WEBHOOK_TIMEOUT_SECONDS = 10


def handler_id(plural: str) -> str:
    """The kopf handler id of a kind's validator; kopf serves it at ``/<id>``."""
    return f"braid-{plural}"


def _with_path(client_config: dict[str, Any], path: str) -> dict[str, Any]:
    out = dict(client_config)
    if "url" in out:
        out["url"] = out["url"].rstrip("/") + path
    else:
        out["service"] = {**out["service"], "path": path}
    return out


def render_validating_webhook(client_config: dict[str, Any]) -> dict[str, Any]:
    """One webhook per braid kind: create and update, fail closed, called on dry-runs too.

    ``client_config`` is ``{"url": ...}`` (the local stack) or ``{"service": {"namespace",
    "name", "port"}}`` (a cluster), with its ``caBundle``.
    """
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {
            "name": WEBHOOK_CONFIGURATION,
            "labels": {"app.kubernetes.io/part-of": "braid"},
        },
        "webhooks": [
            {
                "name": f"{info.plural}.{WEBHOOK_CONFIGURATION}",
                "clientConfig": _with_path(client_config, f"/{handler_id(info.plural)}"),
                "rules": [
                    {
                        "apiGroups": [GROUP],
                        "apiVersions": [VERSION],
                        "operations": ["CREATE", "UPDATE"],
                        "resources": [info.plural],
                        "scope": "Namespaced",
                    }
                ],
                # Fail closed: with the operator down, braid objects are refused, not admitted
                # unchecked. sideEffects None: the API server calls it for dry-runs as well.
                "failurePolicy": "Fail",
                "sideEffects": "None",
                "matchPolicy": "Equivalent",
                "admissionReviewVersions": ["v1"],
                "timeoutSeconds": WEBHOOK_TIMEOUT_SECONDS,
            }
            for info in KINDS
        ],
    }
