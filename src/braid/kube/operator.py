"""kopf handlers of the braid operator. Each is thin: reconcile (render + apply), then status.

Importing this module registers the handlers; ``operator/main.py`` runs them.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from braid.api.common import API_VERSION, GROUP
from braid.kube.client import default_kube
from braid.kube.reconcile import (
    DependencyMissingError,
    SpecError,
    block_status_from_deployment,
    links_referencing_model,
    model_status,
    now,
    reconcile_block,
    requeue_block,
    validate_link,
)
from braid.logs import log_event
from braid.render.block import MANAGED_BY, service_endpoint
from braid.render.conditions import set_condition

logger = logging.getLogger(__name__)
RETRY_SECONDS = 10


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    """braid-prefixed annotations and finalizer; events at INFO so `describe` tells the story."""
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 300
    settings.execution.max_workers = 16


def _fail(kind: str, body: kopf.Body, exc: SpecError | DependencyMissingError) -> None:
    """Write Ready=False with the reason first, so the failure is visible before kopf retries."""
    meta = body["metadata"]
    conditions = set_condition(
        (body.get("status") or {}).get("conditions") or [],
        "Ready",
        False,
        exc.reason,
        str(exc),
        now(),
        meta.get("generation"),
    )
    default_kube().patch_status(
        API_VERSION, kind, meta["name"], meta["namespace"], {"conditions": conditions}
    )
    kopf.warn(body, reason=exc.reason, message=str(exc))
    if isinstance(exc, SpecError):
        raise kopf.PermanentError(str(exc)) from exc
    raise kopf.TemporaryError(str(exc), delay=RETRY_SECONDS) from exc


# -- Block --------------------------------------------------------------------------------


@kopf.on.resume(GROUP, "blocks")
@kopf.on.create(GROUP, "blocks")
@kopf.on.update(GROUP, "blocks", field="spec")
def block_changed(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    try:
        outcome = reconcile_block(default_kube(), dict(body))
    except (SpecError, DependencyMissingError) as exc:
        _fail("Block", body, exc)
        return
    meta = body["metadata"]
    patch.status["observedGeneration"] = meta.get("generation")
    patch.status["endpoint"] = {"grpc": service_endpoint(meta["name"], meta["namespace"])}
    kopf.info(body, reason="Applied", message=f"Deployment {outcome.deployment} applied")


@kopf.on.event("apps", "v1", "deployments", labels={"app.kubernetes.io/managed-by": MANAGED_BY})
def deployment_event(body: kopf.Body, type: str | None, **_: Any) -> None:
    """Mirror a Triton Deployment's readiness into its Block's status.

    The Model's ready-block count is refreshed by its own timer instead: recounting a
    Model's Blocks on every Deployment event would cost O(blocks²) API reads at scale.
    """
    owners = [o for o in body["metadata"].get("ownerReferences") or [] if o.get("kind") == "Block"]
    if not owners:
        return
    kube = default_kube()
    namespace = body["metadata"]["namespace"]
    block = kube.get(API_VERSION, "Block", owners[0]["name"], namespace)
    if block is None:
        return
    deployment = None if type == "DELETED" else dict(body)
    kube.patch_status(
        API_VERSION,
        "Block",
        owners[0]["name"],
        namespace,
        block_status_from_deployment(block, deployment),
    )


# -- Link ---------------------------------------------------------------------------------


@kopf.on.resume(GROUP, "links")
@kopf.on.create(GROUP, "links")
@kopf.on.update(GROUP, "links", field="spec")
def link_changed(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    kube = default_kube()
    try:
        deployment = validate_link(kube, dict(body))
    except (SpecError, DependencyMissingError) as exc:
        _fail("Link", body, exc)
        return
    meta = body["metadata"]
    requeue_block(kube, meta["namespace"], body["spec"]["servedBy"]["name"])
    patch.status["observedGeneration"] = meta.get("generation")
    patch.status["servedBy"] = deployment
    patch.status["conditions"] = set_condition(
        (body.get("status") or {}).get("conditions") or [],
        "Ready",
        True,
        "Served",
        f"loaded as a model of Deployment {deployment}",
        now(),
        meta.get("generation"),
    )


@kopf.on.delete(GROUP, "links")
def link_deleted(body: kopf.Body, **_: Any) -> None:
    """Unload the link from the host's pods: its served-by Block is re-rendered without it."""
    served = (body.get("spec") or {}).get("servedBy") or {}
    if served.get("name"):
        requeue_block(default_kube(), body["metadata"]["namespace"], served["name"])


# -- Model --------------------------------------------------------------------------------


@kopf.on.resume(GROUP, "models")
@kopf.on.create(GROUP, "models")
@kopf.on.update(GROUP, "models", field="spec")
def model_changed(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    status = model_status(dict(body), default_kube())
    patch.status.update(status)
    patch.status["observedGeneration"] = body["metadata"].get("generation")
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    if ready["status"] != "True":
        kopf.warn(body, reason=ready["reason"], message=ready["message"])


@kopf.timer(GROUP, "models", interval=10, initial_delay=5)
def model_refresh(body: kopf.Body, **_: Any) -> None:
    """Keep the Model's ready-block count and Ready condition current."""
    meta = body["metadata"]
    default_kube().patch_status(
        API_VERSION,
        "Model",
        meta["name"],
        meta["namespace"],
        model_status(dict(body), default_kube()),
    )


@kopf.on.delete(GROUP, "models")
def model_deleted(body: kopf.Body, **_: Any) -> None:
    """Delete the Links that reference this Model, including those in host namespaces.

    Owner references cannot cross namespaces, which is why this needs a finalizer; Blocks in
    the Model's own namespace go with their owner reference.
    """
    kube = default_kube()
    meta = body["metadata"]
    for link_ns, link_name in links_referencing_model(kube, meta["namespace"], meta["name"]):
        kube.delete(API_VERSION, "Link", link_name, link_ns)
        log_event(logger, "model.link_deleted", link=f"{link_ns}/{link_name}", model=meta["name"])
