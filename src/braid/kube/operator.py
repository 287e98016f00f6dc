"""kopf handlers of the braid operator. Each is thin: reconcile (render + apply), then status.

Importing this module registers the handlers; ``operator/main.py`` runs them.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import kopf

from braid.api.common import API_VERSION, GROUP
from braid.kube.client import default_kube
from braid.kube.errors import DependencyMissingError, SpecError
from braid.kube.reconcile import (
    block_status_from_deployment,
    failed_ready,
    links_referencing_model,
    model_status,
    now,
    reconcile_block,
    reconcile_policy,
    requeue_block,
    validate_link,
)
from braid.kube.webhook import admission_config
from braid.logs import log_event
from braid.render.admission import AdmissionConfig
from braid.render.block import GENERATION_ANNOTATION, MANAGED_BY
from braid.render.conditions import set_condition
from braid.render.naming import link_model_name
from braid.settings import OperatorSettings

logger = logging.getLogger(__name__)
RETRY_SECONDS = 10
BRAID_PODS = f"app.kubernetes.io/managed-by={MANAGED_BY}"


@lru_cache(maxsize=1)
def admission() -> AdmissionConfig:
    """What the operator admits (local paths, image prefixes), from its settings once."""
    return admission_config(OperatorSettings())


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    """braid-prefixed annotations and finalizer; kopf's own log lines post Events at WARNING.

    At INFO every "Handler ... succeeded" and "Creation is processed" line becomes an Event:
    two API writes per object that repeat what the handlers' own Events (``kopf.event``,
    which no level filters, and ``kopf.warn``) already say.
    """
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    # Handlers block on API calls, which a busy API server answers in tens to hundreds of
    # ms: 32 threads keep enough applies in flight (1,000 Blocks: 94 s with 32, 106 s with 8).
    settings.execution.max_workers = 32
    # kopf runs one worker per object with events and keeps it 5 s after its last event;
    # a burst of 1,000 new Blocks kept 1,000 workers (their bodies and handler contexts)
    # alive at once. Idle ones now go after 0.5 s. No worker_limit: a worker waits for the
    # whole operator to be indexed before its handlers run, so with more objects listed at
    # start than the limit, the waiting workers hold every slot and indexing never ends.
    settings.queueing.idle_timeout = 0.5
    # Only braid's Triton pods, filtered by the API server: a cluster's other pods (thousands,
    # on a shared cluster) never reach the operator.
    settings.watching.label_selectors["v1", "pods"] = BRAID_PODS


def _fail(kind: str, body: kopf.Body, exc: SpecError | DependencyMissingError) -> None:
    """Write Ready=False with the reason first, so the failure is visible before kopf retries."""
    meta = body["metadata"]
    # On the stored conditions, not the event's: another writer's (the path controller's
    # PathsChosen on a policy) must survive this write.
    default_kube().update_status(
        API_VERSION,
        kind,
        meta["name"],
        meta["namespace"],
        lambda stored: failed_ready(stored, exc, meta.get("generation")),
    )
    kopf.warn(body, reason=exc.reason, message=str(exc))
    if isinstance(exc, SpecError):
        raise kopf.PermanentError(str(exc)) from exc
    raise kopf.TemporaryError(str(exc), delay=RETRY_SECONDS) from exc


# -- Indices: what reconciles look up, kept in memory from the watch streams ----------------
#
# Indexers and the Deployment watcher are coroutines: kopf runs a sync handler on its thread
# pool, where these cheap calls would queue behind reconciles blocked on the API server.


@kopf.index(GROUP, "models")
async def models_index(body: kopf.Body, **_: Any) -> dict[Any, Any]:
    meta = body["metadata"]
    return {(meta["namespace"], meta["name"]): {"metadata": dict(meta), "spec": dict(body["spec"])}}


@kopf.index(GROUP, "links")
async def links_index(body: kopf.Body, **_: Any) -> Any:
    meta = body["metadata"]
    served = (body["spec"].get("servedBy") or {}).get("name")
    if not served or meta.get("deletionTimestamp"):
        return None
    return {
        (meta["namespace"], served): {
            "name": link_model_name(meta["name"]),
            "artifact": dict(body["spec"].get("artifact") or {}),
        }
    }


@kopf.index(GROUP, "blocks")
async def blocks_index(body: kopf.Body, **_: Any) -> dict[Any, Any]:
    """The part of each Block that status mirroring and the Models' ready counts need (saves a
    GET per Deployment event and a list of every Block per Model refresh)."""
    meta = body["metadata"]
    return {
        (meta["namespace"], meta["name"]): {
            "metadata": {"generation": body["metadata"].get("generation")},
            "spec": {
                "replicas": body["spec"].get("replicas", 1),
                "modelRef": dict(body["spec"].get("modelRef") or {}),
            },
            "status": dict(body.get("status") or {}),
        }
    }


def _block_of_deployment(body: kopf.Body) -> str | None:
    owners = [o for o in body["metadata"].get("ownerReferences") or [] if o.get("kind") == "Block"]
    return str(owners[0]["name"]) if owners else None


@kopf.index("apps", "v1", "deployments", labels={"app.kubernetes.io/managed-by": MANAGED_BY})
async def deployments_index(body: kopf.Body, **_: Any) -> Any:
    """What a Block's status takes from its Deployment: that it exists, and the generation
    it was rendered from."""
    block = _block_of_deployment(body)
    if block is None:
        return None
    rendered = (body["metadata"].get("annotations") or {}).get(GENERATION_ANNOTATION)
    annotations = {GENERATION_ANNOTATION: rendered} if rendered else {}
    return {(body["metadata"]["namespace"], block): {"metadata": {"annotations": annotations}}}


@kopf.index("v1", "pods", labels={"app.kubernetes.io/managed-by": MANAGED_BY})
async def pods_index(body: kopf.Body, **_: Any) -> Any:
    """Each Block's pods, with the status that says whether and why not they serve."""
    meta = body["metadata"]
    block = (meta.get("labels") or {}).get("braid.dev/block")
    if not block:
        return None
    return {
        (meta["namespace"], block): {
            "metadata": {"name": meta["name"], "deletionTimestamp": meta.get("deletionTimestamp")},
            "spec": {"nodeName": body["spec"].get("nodeName")},
            "status": dict(body.get("status") or {}),
        }
    }


@dataclass(frozen=True)
class IndexLookup:
    models: kopf.Index[Any, Any]
    links: kopf.Index[Any, Any]

    def model(self, namespace: str, name: str) -> dict[str, Any] | None:
        found = list(self.models.get((namespace, name), []))
        return found[0] if found else None

    def links_served_by(self, namespace: str, block: str) -> dict[str, dict[str, Any]]:
        return {link["name"]: link["artifact"] for link in self.links.get((namespace, block), [])}


# -- Block --------------------------------------------------------------------------------


@kopf.on.resume(GROUP, "blocks")
@kopf.on.create(GROUP, "blocks")
@kopf.on.update(GROUP, "blocks", field="spec")
def block_changed(body: kopf.Body, patch: kopf.Patch, **kwargs: Any) -> None:
    lookup = IndexLookup(kwargs["models_index"], kwargs["links_index"])
    try:
        outcome = reconcile_block(default_kube(), dict(body), lookup, own=False, config=admission())
    except (SpecError, DependencyMissingError) as exc:
        _fail("Block", body, exc)
        return
    if outcome.owner_references is not None:
        patch.metadata["ownerReferences"] = outcome.owner_references
    # The status (observedGeneration, endpoint, readiness) is deployment_event's alone to
    # write, from the Deployment this rendered: a status written here lands with kopf's patch
    # after the handler returns, and could overwrite a Ready=True that the Deployment's own
    # (quicker) event wrote meanwhile. It also saves a status write per Block, the dearest
    # kind of write for the API server (a custom resource's managed fields).
    kopf.event(
        body, type="Normal", reason="Applied", message=f"Deployment {outcome.deployment} applied"
    )


def _summary(status: dict[str, Any]) -> tuple[Any, ...]:
    """What a Block's status must show. ``replicas`` (pods that exist) is left out: it moves
    on the way to readiness and is written with the next change of what is here."""
    ready: dict[str, Any] = next(
        (c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {}
    )
    return (
        status.get("observedGeneration"),
        status.get("readyReplicas") or 0,
        ready.get("status"),
        ready.get("reason"),
        ready.get("message"),
    )


# What the operator last wrote per Block. The blocks index lags the writes (it follows the
# Blocks' watch), so comparing with it alone re-wrote the same status for each Deployment
# event that came before the index caught up: 4.4 status writes per Block at 1,000 Blocks.
_written: dict[tuple[str, str], tuple[Any, ...]] = {}

# One writer per Block at a time. kopf handles a pod's and a Deployment's events concurrently;
# each reads the indices, then waits on its write in a thread, so without this a status read
# earlier (Progressing) could land after one read later (Unschedulable) and stand until the
# next event or resync. Inside the lock the indices are read as they are when the write goes.
_writing: dict[tuple[str, str], asyncio.Lock] = {}


async def mirror_block_status(namespace: str, block_name: str, indices: dict[str, Any]) -> None:
    """Write a Block's status from its Deployment and pods as the indices hold them, when it
    says something new (a rollout sends several events per pod and per Deployment, and at
    1,000 Blocks the unchanged ones would be most of the operator's API traffic)."""
    key = (namespace, block_name)
    async with _writing.setdefault(key, asyncio.Lock()):
        await _mirror_block_status(key, indices)


async def _mirror_block_status(key: tuple[str, str], indices: dict[str, Any]) -> None:
    namespace, block_name = key
    known = list(indices["blocks_index"].get(key, []))
    if not known:
        _written.pop(key, None)
        _writing.pop(key, None)  # the Block is gone; a later one of that name gets a new lock
        return
    block = {
        **known[0],
        "metadata": {**known[0]["metadata"], "name": block_name, "namespace": namespace},
    }
    deployments = list(indices["deployments_index"].get(key, []))
    pods = list(indices["pods_index"].get(key, []))
    status = block_status_from_deployment(block, deployments[0] if deployments else None, pods)
    summary = _summary(status)
    if summary in (_summary(block["status"]), _written.get(key)):
        return
    _written[key] = summary
    try:
        await asyncio.to_thread(
            default_kube().patch_status, API_VERSION, "Block", block_name, namespace, status
        )
    except Exception:
        _written.pop(key, None)
        raise


@kopf.on.event("apps", "v1", "deployments", labels={"app.kubernetes.io/managed-by": MANAGED_BY})
async def deployment_event(body: kopf.Body, **kwargs: Any) -> None:
    """A Block's Deployment was applied, rolled or deleted: its status follows. The Model's
    ready-block count is refreshed by its own timer."""
    block = _block_of_deployment(body)
    if block is not None:
        await mirror_block_status(body["metadata"]["namespace"], block, kwargs)


@kopf.timer(GROUP, "blocks", interval=10, initial_delay=10, idle=10)
async def block_status_resync(body: kopf.Body, **kwargs: Any) -> None:
    """Level-triggered safety net: re-mirror a Block that has been quiet for a while from the
    indices, forgetting what this process last wrote. Events can interleave with another
    writer of the status (a failed spec's condition, a restarted operator's), and a status
    that missed its event would otherwise stay stale until the next pod change. It writes
    only when the stored status differs from what the pods say."""
    meta = body["metadata"]
    key = (meta["namespace"], meta["name"])
    deployments = list(kwargs["deployments_index"].get(key, []))
    rendered = (deployments[0]["metadata"]["annotations"] if deployments else {}).get(
        GENERATION_ANNOTATION
    )
    if rendered != str(meta.get("generation")):
        return  # the current spec is not rendered (yet, or it failed): its condition stands
    _written.pop(key, None)
    await mirror_block_status(meta["namespace"], meta["name"], kwargs)


@kopf.on.event("v1", "pods", labels={"app.kubernetes.io/managed-by": MANAGED_BY})
async def pod_event(body: kopf.Body, **kwargs: Any) -> None:
    """A Block's pod changed (scheduled, pulled, fetched, crashed, ready): the Block's Ready
    condition says so, with the reason its pods give (``braid.render.pod_readiness``)."""
    block = (body["metadata"].get("labels") or {}).get("braid.dev/block")
    if block:
        await mirror_block_status(body["metadata"]["namespace"], block, kwargs)


# -- Link ---------------------------------------------------------------------------------


@kopf.on.resume(GROUP, "links")
@kopf.on.create(GROUP, "links")
@kopf.on.update(GROUP, "links", field="spec")
def link_changed(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    kube = default_kube()
    try:
        deployment = validate_link(kube, dict(body), admission())
    except (SpecError, DependencyMissingError) as exc:
        _fail("Link", body, exc)
        return
    meta = body["metadata"]
    requeue_block(kube, meta["namespace"], body["spec"]["servedBy"]["name"], admission())
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
        requeue_block(default_kube(), body["metadata"]["namespace"], served["name"], admission())


# -- Model --------------------------------------------------------------------------------


@kopf.on.resume(GROUP, "models")
@kopf.on.create(GROUP, "models")
@kopf.on.update(GROUP, "models", field="spec")
def model_changed(body: kopf.Body, patch: kopf.Patch, **kwargs: Any) -> None:
    status = model_status(
        dict(body), default_kube(), _blocks_in(kwargs["blocks_index"], body), admission()
    )
    patch.status.update(status)
    patch.status["observedGeneration"] = body["metadata"].get("generation")
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    if ready["status"] != "True":
        kopf.warn(body, reason=ready["reason"], message=ready["message"])


@kopf.timer(GROUP, "models", interval=10, initial_delay=5)
def model_refresh(body: kopf.Body, **kwargs: Any) -> None:
    """Keep the Model's ready-block count and Ready condition current."""
    meta = body["metadata"]
    default_kube().patch_status(
        API_VERSION,
        "Model",
        meta["name"],
        meta["namespace"],
        model_status(
            dict(body), default_kube(), _blocks_in(kwargs["blocks_index"], body), admission()
        ),
    )


def _blocks_in(index: kopf.Index[Any, Any], body: kopf.Body) -> list[dict[str, Any]]:
    """The indexed Blocks of the Model's namespace."""
    namespace = body["metadata"]["namespace"]
    return [block for (ns, _), found in index.items() if ns == namespace for block in found]


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


# -- OffloadPolicy --------------------------------------------------------------------------


@kopf.on.resume(GROUP, "offloadpolicies")
@kopf.on.create(GROUP, "offloadpolicies")
@kopf.on.update(GROUP, "offloadpolicies", field="spec")
@kopf.timer(GROUP, "offloadpolicies", interval=5, initial_delay=2)
def policy_changed(body: kopf.Body, **_: Any) -> None:
    """Render the gateway's routing ConfigMap from the spec and the controller's weights.

    A timer as well as the spec handlers: the controller writes ``status.activePaths`` and
    Blocks change their endpoints, neither of which is a spec change of the policy.
    """
    kube = default_kube()
    meta = body["metadata"]
    # The routing follows the controller's split as stored now, not as the watch (or the
    # timer's cached body) last saw it.
    stored = kube.get(API_VERSION, "OffloadPolicy", meta["name"], meta["namespace"])
    current = dict(body) if stored is None else {**dict(body), "status": stored.get("status") or {}}
    try:
        outcome = reconcile_policy(kube, current, admission())
    except (SpecError, DependencyMissingError) as exc:
        _fail("OffloadPolicy", body, exc)
        return
    # The controller writes its own conditions (PathsChosen, Degraded) into the same list,
    # and a merge patch replaces the whole list: Ready is set on the list as stored, and the
    # write is made on that version (a controller write in between: read again).
    generation = meta.get("generation")
    kube.update_status(
        API_VERSION,
        "OffloadPolicy",
        meta["name"],
        meta["namespace"],
        lambda stored_status: outcome.status_patch(stored_status, generation),
    )


@kopf.on.event(GROUP, "offloadpolicies")
def policy_decided(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Re-render the routing ConfigMap as soon as the controller's split changes.

    The controller writes ``status.activePaths``, which is not a spec change; waiting for
    ``policy_changed``'s timer added up to its interval to every switch the gateway sees.
    Conditions and the rest of the status are still written by the timer.
    """
    active = (body.get("status") or {}).get("activePaths")
    key = f"active:{body['metadata']['uid']}"
    if not active or memo.get(key) == active:
        return
    try:
        reconcile_policy(default_kube(), dict(body), admission())
    except (SpecError, DependencyMissingError):
        return  # the timer's round reports it as a condition
    memo[key] = active
    log_event(logger, "policy.routing_rendered", policy=body["metadata"]["name"])
