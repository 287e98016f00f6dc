"""Write the path controller's decision into an ``OffloadPolicy``: its status and its Events.

The operator owns other status fields (``routingConfigMap``, ``candidatePaths``, its own
``Ready`` condition) and renders the routing ConfigMap from ``activePaths``; a merge patch
would replace the whole conditions list, so the controller's conditions are merged into the
current ones by type first, and the write is made on the version that was read
(``Kube.update_status``): the operator's own write in between makes it read and merge again.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from braid.api.common import API_VERSION
from braid.api.v1alpha1.offloadpolicy import OffloadPolicyStatus
from braid.kube.client import Kube, default_kube

CONTROLLER_FIELDS = (
    "activePath",
    "activePaths",
    "cost",
    "runnerUp",
    "margin",
    "load",
    "costs",
    "lastDecisionTime",
)
COMPONENT = "braid-controller"


def status_patch(status: OffloadPolicyStatus, current: dict[str, Any] | None) -> dict[str, Any]:
    """The merge patch for ``status`` over the object's ``current`` status (pure).

    A field the controller no longer reports (no runner-up any more) is sent as null, which
    is how a merge patch removes it; otherwise the stale value would stay on show.
    """
    ours = status.model_dump(by_alias=True, exclude_none=True, mode="json")
    patch: dict[str, Any] = {k: ours.get(k) for k in CONTROLLER_FIELDS}
    mine = {c["type"]: c for c in ours.get("conditions", [])}
    kept = [c for c in (current or {}).get("conditions") or [] if c.get("type") not in mine]
    patch["conditions"] = kept + list(mine.values())
    return patch


def read_policy(name: str, namespace: str, kube: Kube | None = None) -> dict[str, Any]:
    """The OffloadPolicy as stored (camelCase): spec, status, metadata.generation and uid."""
    kube = kube or default_kube()
    obj = kube.get(API_VERSION, "OffloadPolicy", name, namespace)
    if obj is None:
        raise LookupError(f"no OffloadPolicy {namespace}/{name}")
    return obj


def wait_for_policy(
    name: str,
    namespace: str,
    kube: Kube | None = None,
    interval_s: float = 5.0,
    on_wait: Callable[[], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """The OffloadPolicy once it exists. ``helm install`` starts the controller before
    anyone can create the policy (its CRD comes with the chart), so a missing policy is a
    wait, not a crash loop."""
    kube = kube or default_kube()
    while True:
        try:
            return read_policy(name, namespace, kube)
        except LookupError:
            if on_wait is not None:
                on_wait()
            sleep(interval_s)


def read_policy_spec(name: str, namespace: str, kube: Kube | None = None) -> dict[str, Any]:
    """The OffloadPolicy's spec as stored (camelCase), for the controller to validate."""
    spec: dict[str, Any] = read_policy(name, namespace, kube).get("spec") or {}
    return spec


def write_policy_status(
    name: str, namespace: str, status: OffloadPolicyStatus, kube: Kube | None = None
) -> dict[str, Any]:
    """Patch the controller's fields of the OffloadPolicy ``namespace/name``.

    Returns the object it read on the way (the GET is needed for the conditions merge
    anyway), so the controller follows spec edits without a watch of its own.
    """
    kube = kube or default_kube()
    obj = kube.update_status(
        API_VERSION, "OffloadPolicy", name, namespace, lambda stored: status_patch(status, stored)
    )
    return obj or {}


def policy_event(
    policy: dict[str, Any], reason: str, message: str, now: datetime | None = None
) -> dict[str, Any]:
    """A ``v1`` Event about ``policy`` (pure): what ``kubectl describe`` lists under Events."""
    meta = policy["metadata"]
    stamp = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {
            k: v
            for k, v in {
                "apiVersion": API_VERSION,
                "kind": "OffloadPolicy",
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid"),
            }.items()
            if v is not None
        },
        "reason": reason,
        "message": message[:1024],
        "type": "Normal",
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": socket.gethostname()[:128],
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


def record_policy_event(
    policy: dict[str, Any], reason: str, message: str, kube: Kube | None = None
) -> None:
    (kube or default_kube()).create(policy_event(policy, reason, message))
