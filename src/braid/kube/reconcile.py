"""Reconcilers: read what a resource depends on, render (pure), apply, return its status.

kopf handlers stay thin by calling these; each is idempotent, so a restarted operator (or two
events racing) converges to the same objects with no duplicates.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from pydantic import ValidationError

from braid.api.catalog import PathCatalog
from braid.api.common import API_VERSION
from braid.api.v1alpha1.block import BlockSpec
from braid.api.v1alpha1.link import LinkSpec
from braid.api.v1alpha1.model import ModelSpec
from braid.api.v1alpha1.offloadpolicy import OffloadPolicySpec, OffloadPolicyStatus
from braid.kube.catalogs import load_catalog
from braid.kube.client import Kube, refusal
from braid.kube.errors import DependencyMissingError, SpecError
from braid.logs import log_event
from braid.render.admission import (
    AdmissionConfig,
    block_problems,
    link_problems,
    policy_problems,
    refusal_reason,
)
from braid.render.block import (
    GENERATION_ANNOTATION,
    BlockRender,
    ObjectMeta,
    render_block_deployment,
    render_block_plan_configmap,
    render_block_service,
    service_endpoint,
    workload_name,
)
from braid.render.conditions import set_condition
from braid.render.model_repository import link_artifact_problem, servable_links
from braid.render.naming import block_model_name, exit_head_model_name, link_model_name
from braid.render.pod_readiness import block_readiness, fetch_problem
from braid.render.routing import (
    gateway_pods_selector,
    policy_readiness,
    render_gateway_plan_configmap,
    render_policy_routing,
)

logger = logging.getLogger(__name__)
OWNERSHIP_FIELD_MANAGER = "braid-operator-ownership"


SpecT = TypeVar("SpecT", ModelSpec, BlockSpec, LinkSpec, OffloadPolicySpec)


def parse_spec(model: type[SpecT], body: dict[str, Any], what: str = "") -> SpecT:
    """The spec as pydantic reads it; one it cannot read is a SpecError naming the fields."""
    try:
        return model.model_validate(body.get("spec") or {})
    except ValidationError as exc:
        where = "; ".join(
            "spec." + ".".join(str(p) for p in err["loc"]) + f": {err['msg']}"
            for err in exc.errors(include_url=False)[:5]
        )
        raise SpecError("InvalidSpec", f"{what}: {where}" if what else where) from exc


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def failed_ready(
    status: Mapping[str, Any], exc: SpecError | DependencyMissingError, generation: int | None
) -> dict[str, Any]:
    """The status patch that turns ``status``'s Ready condition False with ``exc``'s reason
    (the other conditions in the list kept as they are)."""
    conditions = status.get("conditions") or []
    return {
        "conditions": set_condition(
            conditions, "Ready", False, exc.reason, str(exc), now(), generation
        )
    }


def apply_or_refuse(kube: Kube, obj: dict[str, Any]) -> None:
    """Apply ``obj``; an API server that refuses it (a 422 from a schema or a webhook, a 400,
    a 403) makes a SpecError, reported as a condition instead of retried forever."""
    try:
        kube.apply(obj)
    except Exception as exc:
        message = refusal(exc)
        if message is None:
            raise
        raise SpecError(
            "Rejected", f"the API server refused {obj['kind']} {obj['metadata']['name']}: {message}"
        ) from exc


@dataclass(frozen=True)
class BlockOutcome:
    deployment: str
    replicas: int
    owner_references: list[dict[str, Any]] | None = None
    """The Block's ownerReferences with its Model added, when the caller is to write them
    (``reconcile_block(..., own=False)``); None when nothing needs writing."""


class Lookup(Protocol):
    """Where a reconcile finds the objects a Block depends on.

    The operator answers from kopf's in-memory indices (no API reads per Block, which is what
    keeps a 1,000-Block rollout cheap); requeues and tests answer from the API server.
    """

    def model(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    def links_served_by(self, namespace: str, block: str) -> dict[str, dict[str, Any]]:
        """Triton model name to ``spec.artifact`` of each Link the Block serves."""
        ...


@dataclass(frozen=True)
class ApiLookup:
    kube: Kube

    def model(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.kube.get(API_VERSION, "Model", name, namespace)

    def links_served_by(self, namespace: str, block: str) -> dict[str, dict[str, Any]]:
        found = {}
        for link in self.kube.list(API_VERSION, "Link", namespace=namespace):
            spec = link.get("spec") or {}
            served = spec.get("servedBy") or {}
            if served.get("name") == block and link["metadata"].get("deletionTimestamp") is None:
                found[link_model_name(link["metadata"]["name"])] = dict(spec.get("artifact") or {})
        return found


def _owned_by(meta: dict[str, Any], uid: str) -> bool:
    return any(o.get("uid") == uid for o in meta.get("ownerReferences") or [])


def reconcile_block(
    kube: Kube,
    body: dict[str, Any],
    lookup: Lookup | None = None,
    *,
    own: bool = True,
    config: AdmissionConfig | None = None,
) -> BlockOutcome:
    """Render and apply a Block's Deployment and Service.

    The Model owns its Blocks. With ``own`` the owner reference is applied here; without,
    it is returned for the caller to write with its own patch (the kopf handler folds it
    into the status patch kopf makes anyway: one write and one watch event less per Block).
    """
    lookup = lookup or ApiLookup(kube)
    config = config or AdmissionConfig()
    meta = body["metadata"]
    spec = parse_spec(BlockSpec, body)
    namespace = meta["namespace"]
    model_ns = spec.model_ref.namespace or namespace
    if model_ns != namespace:
        problems = block_problems(namespace, spec, None, config)
        raise SpecError(refusal_reason(problems), "; ".join(problems))
    model = lookup.model(model_ns, spec.model_ref.name)
    if model is None:
        raise DependencyMissingError(
            "ModelNotFound", f"spec.modelRef: Model {model_ns}/{spec.model_ref.name} not found"
        )
    model_spec = parse_spec(ModelSpec, model, f"Model {spec.model_ref.name}")
    problems = block_problems(namespace, spec, model_spec, config)
    if problems:
        raise SpecError(refusal_reason(problems), "; ".join(problems))
    model_uid = model["metadata"]["uid"]
    owner_references = None
    if model_ns == namespace and not _owned_by(meta, model_uid):
        # The Model owns its Blocks, so deleting it takes its Deployments with it (GC).
        owner = {
            "apiVersion": API_VERSION,
            "kind": "Model",
            "name": model["metadata"]["name"],
            "uid": model_uid,
        }
        if own:
            # A field manager of its own: under the main one, this metadata-only apply would
            # drop every field that manager applied before (the whole spec, if it made it).
            kube.apply(
                field_manager=OWNERSHIP_FIELD_MANAGER,
                obj={
                    "apiVersion": API_VERSION,
                    "kind": "Block",
                    "metadata": {
                        "name": meta["name"],
                        "namespace": namespace,
                        "ownerReferences": [owner],
                    },
                },
            )
        else:
            owner_references = [*(meta.get("ownerReferences") or []), owner]
    links = servable_links(lookup.links_served_by(namespace, meta["name"]), spec)
    r = BlockRender(
        owner=ObjectMeta(
            name=meta["name"],
            namespace=namespace,
            uid=meta["uid"],
            generation=meta.get("generation"),
        ),
        spec=spec,
        model_name=spec.model_ref.name,
        triton_models=[
            name
            for i in range(spec.partitions.first, spec.partitions.last + 1)
            for name in (
                [block_model_name(spec.model_ref.name, model_spec.partition.blocks[i].name)]
                + (
                    [exit_head_model_name(spec.model_ref.name, i)]
                    if model_spec.partition.blocks[i].exit_head
                    else []
                )
            )
        ]
        + [block_model_name(spec.model_ref.name, extra) for extra in spec.extra_models],
        link_models=sorted(links),
        link_artifacts={name: ref for name, ref in links.items() if ref is not None},
        allow_local_paths=config.allow_local_paths,
        fetcher_image=config.fetcher_image,
        node_selector=config.triton_node_selector,
        tolerations=config.triton_tolerations,
    )
    try:
        deployment, service = render_block_deployment(r), render_block_service(r)
        plan = render_block_plan_configmap(r)
    except ValueError as exc:
        raise SpecError("RenderFailed", str(exc)) from exc
    if plan is not None:
        # Before the Deployment: its pods' init container mounts the plan.
        apply_or_refuse(kube, plan)
    apply_or_refuse(kube, deployment)
    apply_or_refuse(kube, service)
    log_event(logger, "block.reconciled", block=meta["name"], namespace=namespace)
    return BlockOutcome(
        deployment=workload_name(meta["name"]),
        replicas=spec.replicas,
        owner_references=owner_references,
    )


def block_status_from_deployment(
    block_body: dict[str, Any],
    deployment: dict[str, Any] | None,
    pods: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """Block status (pods, readiness, Ready condition, observedGeneration, endpoint) from its
    Deployment and its pods.

    The Deployment's annotation says which Block generation it was rendered from (so one
    write says both "applied" and "ready"); the pods say whether the Block serves and, when it
    does not, why (``braid.render.pod_readiness``)."""
    status = block_body.get("status") or {}
    meta = block_body["metadata"]
    spec = block_body.get("spec") or {}
    readiness = block_readiness(pods, int(spec.get("replicas", 1)))
    if deployment is None:
        # Pods of a deleted Deployment may linger; without it nothing keeps them serving.
        is_ready = False
        reason, message = "DeploymentMissing", "the Triton Deployment does not exist yet"
    else:
        is_ready, reason, message = readiness.ready, readiness.reason, readiness.message
    rendered = ((deployment or {}).get("metadata", {}).get("annotations") or {}).get(
        GENERATION_ANNOTATION
    )
    observed = int(rendered) if rendered else status.get("observedGeneration")
    out: dict[str, Any] = {
        "endpoint": {"grpc": service_endpoint(meta["name"], meta["namespace"])},
        "replicas": readiness.pods,
        "readyReplicas": readiness.ready_pods,
        "conditions": set_condition(
            status.get("conditions") or [],
            "Ready",
            is_ready,
            reason,
            message,
            now(),
            observed,
        ),
    }
    if observed is not None:
        out["observedGeneration"] = observed
    return out


def requeue_block(
    kube: Kube, namespace: str, name: str, config: AdmissionConfig | None = None
) -> None:
    """Re-reconcile a Block after something it serves (a Link) changed.

    A Block that cannot be reconciled now (its Model is going away with it) has nothing to
    re-render; that must not hold up the Link's deletion, so the error is logged, not raised.
    """
    body = kube.get(API_VERSION, "Block", name, namespace)
    if body is None or body["metadata"].get("deletionTimestamp"):
        return
    try:
        reconcile_block(kube, body, config=config)
    except (SpecError, DependencyMissingError) as exc:
        log_event(
            logger, "block.requeue_skipped", block=name, namespace=namespace, reason=exc.reason
        )


def model_spec(kube: Kube, namespace: str, name: str) -> ModelSpec | None:
    """A Model's spec; None when there is none, or one the Model's own conditions report."""
    found = kube.get(API_VERSION, "Model", name, namespace)
    if found is None:
        return None
    try:
        return ModelSpec.model_validate(found.get("spec") or {})
    except ValidationError:
        return None


def link_refusals(
    kube: Kube, name: str, namespace: str, spec: LinkSpec, config: AdmissionConfig
) -> list[str]:
    """``link_problems`` with what it needs read from the API server (the admission webhook
    and the Link's reconcile ask the same)."""
    own_models = []
    for found in kube.list(API_VERSION, "Model", namespace=namespace):
        try:
            own_models.append((found["metadata"]["name"], ModelSpec.model_validate(found["spec"])))
        except (ValidationError, KeyError):
            continue
    served = (
        kube.get(API_VERSION, "Block", spec.served_by.name, namespace) if spec.served_by else None
    )
    return link_problems(
        name,
        namespace,
        spec,
        lambda ns, model: model_spec(kube, ns, model),
        own_models,
        ((served or {}).get("spec") or {}).get("modelRef", {}).get("name"),
        config,
    )


def validate_link(kube: Kube, body: dict[str, Any], config: AdmissionConfig | None = None) -> str:
    """Check a Link's references and the host's consent; returns the Deployment serving it."""
    spec = parse_spec(LinkSpec, body)
    namespace = body["metadata"]["namespace"]
    problems = link_refusals(
        kube, body["metadata"]["name"], namespace, spec, config or AdmissionConfig()
    )
    if problems:
        raise SpecError(refusal_reason(problems), "; ".join(problems))
    if spec.served_by is None:
        raise SpecError("ServedByMissing", "spec.servedBy: a Link needs the Block that serves it")
    served_ns = spec.served_by.namespace or namespace
    if served_ns != namespace:
        raise SpecError(
            "ServedByOtherNamespace",
            "spec.servedBy.namespace: a Link is served by a Block in its own namespace",
        )
    host = kube.get(API_VERSION, "Block", spec.served_by.name, namespace)
    if host is None:
        raise DependencyMissingError(
            "BlockNotFound", f"spec.servedBy: Block {namespace}/{spec.served_by.name} not found"
        )
    problem = link_artifact_problem(body["metadata"]["name"], spec.artifact, host)
    if problem is not None:
        raise SpecError("ArtifactNotFetchable", problem)
    return workload_name(spec.served_by.name)


def links_referencing_model(kube: Kube, namespace: str, name: str) -> list[tuple[str, str]]:
    """(namespace, name) of every Link, in any namespace, whose ends include this Model."""
    found = []
    for link in kube.list(API_VERSION, "Link"):
        link_ns = link["metadata"]["namespace"]
        spec = link.get("spec") or {}
        for end in ("from", "to"):
            ref = (spec.get(end) or {}).get("model") or {}
            if ref.get("name") == name and (ref.get("namespace") or link_ns) == namespace:
                found.append((link_ns, link["metadata"]["name"]))
                break
    return found


def catalog_problems(name: str, spec: ModelSpec, catalog: PathCatalog) -> list[str]:
    """Where the Model's partition disagrees with the catalog's (the blocks that were built)."""
    provider = next((m for m in catalog.models if m.name == name), None)
    if provider is None:
        return [f"spec.catalog: the catalog has no model {name!r}"]
    built = provider.partition.blocks
    if len(built) != len(spec.partition.blocks):
        return [
            f"spec.partition.blocks: {len(spec.partition.blocks)} blocks, but the catalog's "
            f"{name} was built with {len(built)}"
        ]
    out = []
    # Only the spec's own values go into the message: nothing read from the catalog file is
    # echoed into status or Events.
    for i, (mine, theirs) in enumerate(zip(spec.partition.blocks, built, strict=True)):
        if (mine.name, mine.first_layer, mine.last_layer) != (
            theirs.name,
            theirs.first_layer,
            theirs.last_layer,
        ):
            out.append(
                f"spec.partition.blocks[{i}]: {mine.name} layers {mine.first_layer}-{mine.last_layer} "
                "differs from the block the catalog was built with"
            )
    return out


def model_status(
    body: dict[str, Any],
    kube: Kube,
    blocks: list[dict[str, Any]] | None = None,
    config: AdmissionConfig | None = None,
) -> dict[str, Any]:
    """Model status: partition checks the API server cannot do, blocks, paths, ready blocks.

    ``blocks`` are the namespace's Blocks when the caller has them in memory (the operator's
    index); else they are listed, which at 1,000 Blocks is a megabyte per call."""
    meta = body["metadata"]
    try:
        spec = parse_spec(ModelSpec, body)
    except SpecError as exc:
        # A spec stored before a rule existed: reported, not retried.
        return failed_ready(body.get("status") or {}, exc, meta.get("generation"))
    problems = spec.partition.problems()
    paths: int | None = None
    catalog_note = ""
    if spec.catalog is not None:
        try:
            catalog = load_catalog(kube, spec.catalog.uri, meta["namespace"], config)
        except (DependencyMissingError, SpecError, ValueError) as exc:
            catalog_note = f"; catalog not read: {exc}"
        else:
            problems += catalog_problems(meta["name"], spec, catalog)
            if catalog.local_model == meta["name"]:
                paths = len(catalog.paths)
    if blocks is None:
        blocks = kube.list(API_VERSION, "Block", namespace=meta["namespace"])
    mine = [
        b for b in blocks if (b.get("spec") or {}).get("modelRef", {}).get("name") == meta["name"]
    ]
    ready = sum(
        1
        for b in mine
        for c in (b.get("status") or {}).get("conditions") or []
        if c.get("type") == "Ready" and c.get("status") == "True"
    )
    conditions = (body.get("status") or {}).get("conditions") or []
    if problems:
        conditions = set_condition(
            conditions,
            "Ready",
            False,
            "InvalidPartition",
            "; ".join(problems),
            now(),
            meta.get("generation"),
        )
    else:
        conditions = set_condition(
            conditions,
            "Ready",
            True,
            "PartitionValid",
            f"{len(spec.partition.blocks)} blocks; {ready}/{len(mine)} Block segments ready"
            + catalog_note,
            now(),
            meta.get("generation"),
        )
    status: dict[str, Any] = {
        "blocks": len(spec.partition.blocks),
        "readyBlocks": ready,
        "conditions": conditions,
    }
    if paths is not None:
        status["paths"] = paths
    return status


# -- OffloadPolicy ----------------------------------------------------------------------------

ENDPOINT_ANNOTATION = "braid.dev/endpoint"
"""Set on a Block by a runtime that serves it somewhere else than its Service (the local
runtime of the demo and e2e tests, where kwok pods run no containers)."""


def block_address(block: dict[str, Any]) -> str:
    meta = block["metadata"]
    override = (meta.get("annotations") or {}).get(ENDPOINT_ANNOTATION)
    return override or service_endpoint(meta["name"], meta["namespace"])


def block_ready(block: dict[str, Any]) -> bool:
    """Whether a Block's pods serve: its Ready condition (False with 0 ready pods)."""
    conditions = (block.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _model_addresses(
    kube: Kube, catalog: PathCatalog, namespace_of: dict[str, str]
) -> dict[str, str]:
    """Triton model -> gRPC address, from the Blocks and Links that serve the catalog's models."""
    out: dict[str, str] = {}
    blocks_by_ns: dict[str, list[dict[str, Any]]] = {}
    for ns in set(namespace_of.values()):
        blocks_by_ns[ns] = kube.list(API_VERSION, "Block", namespace=ns)
    for provider in catalog.models:
        if provider.name not in namespace_of:
            continue
        ns = namespace_of[provider.name]
        for block in blocks_by_ns[ns]:
            bspec = block.get("spec") or {}
            if (bspec.get("modelRef") or {}).get("name") != provider.name:
                continue
            if not block_ready(block):
                continue  # no ready pod: no path routes through it
            first, last = bspec["partitions"]["first"], bspec["partitions"]["last"]
            for info in provider.blocks:
                if first <= info.index <= last:
                    out[info.triton_model] = block_address(block)
                    out.setdefault(
                        exit_head_model_name(provider.name, info.index), block_address(block)
                    )
            for extra in bspec.get("extraModels") or []:
                out[block_model_name(provider.name, extra)] = block_address(block)
        for link in kube.list(API_VERSION, "Link", namespace=ns):
            served = ((link.get("spec") or {}).get("servedBy") or {}).get("name")
            server = next((b for b in blocks_by_ns[ns] if b["metadata"]["name"] == served), None)
            if server is not None and block_ready(server):
                out[link_model_name(link["metadata"]["name"])] = block_address(server)
    return out


@dataclass(frozen=True)
class PolicyReconciled:
    """What a policy's reconcile found: the operator's status fields and its Ready."""

    fields: dict[str, Any]
    """``candidatePaths`` and ``routingConfigMap``."""
    ready: bool
    reason: str
    message: str

    def status_patch(self, stored: Mapping[str, Any], generation: int | None) -> dict[str, Any]:
        """The operator's status patch over ``stored`` (the status as the API server has it:
        the controller's conditions in the same list are kept)."""
        return {
            **self.fields,
            "observedGeneration": generation,
            "conditions": set_condition(
                stored.get("conditions") or [],
                "Ready",
                self.ready,
                self.reason,
                self.message,
                now(),
                generation,
            ),
        }


def reconcile_policy(
    kube: Kube, body: dict[str, Any], config: AdmissionConfig | None = None
) -> PolicyReconciled:
    """Write the policy's routing ConfigMap; returns the status it calls for."""
    meta = body["metadata"]
    namespace = meta["namespace"]
    spec = parse_spec(OffloadPolicySpec, body)
    # Only the controller's split matters here; the rest of the status (costs written by an
    # older controller, say) must not stop the routing from being rendered.
    status = OffloadPolicyStatus.model_validate(
        {"activePaths": (body.get("status") or {}).get("activePaths") or []}
    )
    if spec.model_ref.namespace not in (None, namespace):
        problems = policy_problems(namespace, spec, None)
        raise SpecError(refusal_reason(problems), "; ".join(problems))
    model = kube.get(API_VERSION, "Model", spec.model_ref.name, namespace)
    if model is None:
        raise DependencyMissingError(
            "ModelNotFound", f"spec.modelRef: Model {spec.model_ref.name} not found"
        )
    problems = policy_problems(namespace, spec, parse_spec(ModelSpec, model, "Model"))
    if problems:
        raise SpecError(refusal_reason(problems), "; ".join(problems))
    catalog_ref = (model.get("spec") or {}).get("catalog")
    if not catalog_ref:
        raise SpecError("NoCatalog", f"Model {spec.model_ref.name} has no spec.catalog to route by")
    catalog = load_catalog(kube, catalog_ref["uri"], namespace, config)
    namespace_of = {catalog.local_model: namespace}
    allowed_models: list[str] = []
    for host in spec.allowed_hosts:
        names = (
            [host.model]
            if host.model
            else [
                m["metadata"]["name"]
                for m in kube.list(API_VERSION, "Model", namespace=host.namespace)
            ]
        )
        for name in names:
            namespace_of.setdefault(name, host.namespace)
            allowed_models.append(name)
    owner = ObjectMeta(
        name=meta["name"], namespace=namespace, uid=meta["uid"], kind="OffloadPolicy"
    )
    try:
        plan = render_gateway_plan_configmap(owner, spec)
    except ValueError as exc:
        raise SpecError("UnsupportedScheme", str(exc)) from exc
    if plan is not None:
        # Before the routing that points at what it fetches.
        apply_or_refuse(kube, plan)
    routing = render_policy_routing(
        owner,
        spec,
        status,
        catalog,
        allowed_models,
        _model_addresses(kube, catalog, namespace_of),
        generation=int(meta.get("generation") or 0),
    )
    if routing.configmap is None:
        raise DependencyMissingError("OriginalPathUnserved", "; ".join(routing.problems))
    apply_or_refuse(kube, routing.configmap)
    # The gateway's init container fetches a DIMEE policy's pools archive; its pods say
    # whether that failed (an unreachable store, a digest mismatch).
    pods = (
        kube.list("v1", "Pod", namespace=namespace, label_selector=gateway_pods_selector(owner))
        if plan is not None
        else []
    )
    ok, reason, message = policy_readiness(routing, fetch_problem(pods))
    fields = {
        "candidatePaths": len(routing.candidates),
        "routingConfigMap": routing.configmap["metadata"]["name"],
    }
    return PolicyReconciled(fields, ok, reason, message)
