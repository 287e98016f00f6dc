"""Write the path controller's decision into an ``OffloadPolicy``'s status.

The operator owns other status fields (``routingConfigMap``, its own conditions) and renders
the routing ConfigMap from ``activePaths``; a merge patch would replace the whole conditions
list, so the controller's conditions are merged into the current ones by type first.
"""

from __future__ import annotations

from typing import Any

from braid.api.common import API_VERSION
from braid.api.v1alpha1.offloadpolicy import OffloadPolicyStatus
from braid.kube.client import Kube, default_kube

CONTROLLER_FIELDS = ("activePath", "activePaths", "cost", "costs", "lastDecisionTime")


def status_patch(status: OffloadPolicyStatus, current: dict[str, Any] | None) -> dict[str, Any]:
    """The merge patch for ``status`` over the object's ``current`` status (pure)."""
    ours = status.model_dump(by_alias=True, exclude_none=True, mode="json")
    patch = {k: ours[k] for k in CONTROLLER_FIELDS if k in ours}
    mine = {c["type"]: c for c in ours.get("conditions", [])}
    kept = [c for c in (current or {}).get("conditions") or [] if c.get("type") not in mine]
    patch["conditions"] = kept + list(mine.values())
    return patch


def write_policy_status(
    name: str, namespace: str, status: OffloadPolicyStatus, kube: Kube | None = None
) -> dict[str, Any]:
    """Patch the controller's fields of the OffloadPolicy ``namespace/name``.

    Returns the spec it read on the way (the GET is needed for the conditions merge anyway),
    so the controller follows spec edits without a watch of its own.
    """
    kube = kube or default_kube()
    obj = kube.get(API_VERSION, "OffloadPolicy", name, namespace) or {}
    kube.patch_status(
        API_VERSION, "OffloadPolicy", name, namespace, status_patch(status, obj.get("status"))
    )
    spec: dict[str, Any] = obj.get("spec") or {}
    return spec


def read_policy_spec(name: str, namespace: str, kube: Kube | None = None) -> dict[str, Any]:
    """The OffloadPolicy's spec as stored (camelCase), for the controller to validate."""
    kube = kube or default_kube()
    obj = kube.get(API_VERSION, "OffloadPolicy", name, namespace)
    if obj is None:
        raise LookupError(f"no OffloadPolicy {namespace}/{name}")
    spec: dict[str, Any] = obj.get("spec") or {}
    return spec
