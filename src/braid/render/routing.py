"""Render an OffloadPolicy into the gateway's routing ConfigMap. Pure.

The ConfigMap holds two documents the gateway reads: ``routing.json`` (active paths and
weights, exit thresholds, L_T, fallback) and ``endpoints.json`` (the gRPC address of every
Triton model the candidate paths use). The operator owns the ConfigMap; the path controller
changes weights through ``OffloadPolicy.status``, which the operator re-renders from.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from braid.api.artifact_uri import FETCHED_SCHEMES
from braid.api.catalog import PathCatalog, PathEntry
from braid.api.repository_plan import PlannedArtifact, RepositoryPlan
from braid.api.routing import (
    DIMEE_ARTIFACT_DIR,
    ROUTING_FILE,
    Endpoints,
    routing_table_from_policy,
)
from braid.api.v1alpha1.offloadpolicy import OffloadPolicySpec, OffloadPolicyStatus
from braid.render.block import ObjectMeta, owner_reference
from braid.render.model_repository import plan_configmap_data
from braid.render.pod_readiness import PodProblem

ENDPOINTS_FILE = "endpoints.json"
GATEWAY_POLICY_LABEL = "braid.dev/policy"
"""On the gateway's pods (the chart sets it): which policy's artifacts they fetch, so the
operator can tell the policy why a fetch failed."""


def routing_configmap_name(policy: str) -> str:
    return f"braid-routing-{policy}"[:253]


@dataclass(frozen=True)
class PolicyRouting:
    """What the routing ConfigMap will say, and what could not be resolved."""

    candidates: list[str]
    problems: list[str]
    configmap: dict[str, Any] | None


def candidate_paths(
    spec: OffloadPolicySpec, catalog: PathCatalog, allowed_host_models: Sequence[str]
) -> tuple[list[PathEntry], list[str]]:
    """The catalog paths the policy allows, and problems naming unknown ids."""
    known = {p.id: p for p in catalog.paths}
    if spec.all_paths:
        chosen = list(catalog.paths)
        problems: list[str] = []
    else:
        unknown = [i for i in spec.candidate_paths if i not in known]
        problems = [f"spec.candidatePaths: unknown path ids {unknown}"] if unknown else []
        chosen = [known[i] for i in spec.candidate_paths if i in known]
    if catalog.original_path not in {p.id for p in chosen}:
        # The original path is always a candidate: it is the fallback of every other path.
        chosen.insert(0, known[catalog.original_path])
    allowed = [
        p for p in chosen if p.host_model is None or p.host_model in set(allowed_host_models)
    ]
    return allowed, problems


def render_policy_routing(
    owner: ObjectMeta,
    spec: OffloadPolicySpec,
    status: OffloadPolicyStatus | None,
    catalog: PathCatalog,
    allowed_host_models: Sequence[str],
    model_addresses: Mapping[str, str],
    generation: int,
) -> PolicyRouting:
    """The ConfigMap for one policy; ``model_addresses`` maps Triton model -> gRPC address."""
    paths, problems = candidate_paths(spec, catalog, allowed_host_models)
    needed = sorted({h.triton_model for p in paths for h in p.hops})
    missing = [m for m in needed if m not in model_addresses]
    servable = [p for p in paths if all(h.triton_model in model_addresses for h in p.hops)]
    if catalog.original_path not in {p.id for p in servable}:
        problems.append(
            f"the original path {catalog.original_path} has no serving Block for "
            f"{[m for m in missing if any(h.triton_model == m for h in catalog.path(catalog.original_path).hops)]}"
        )
        return PolicyRouting([p.id for p in paths], problems, None)
    servable_ids = {p.id for p in servable}
    if status is not None:
        # Keep only controller weights for paths that can be served now.
        status = status.model_copy(
            update={"active_paths": [a for a in status.active_paths if a.id in servable_ids]}
        )
    table = routing_table_from_policy(
        spec,
        status,
        model=catalog.local_model,
        original_path=catalog.original_path,
        generation=generation,
    )
    endpoints = Endpoints(models={m: model_addresses[m] for m in needed if m in model_addresses})
    configmap = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": routing_configmap_name(owner.name),
            "namespace": owner.namespace,
            "labels": {
                "app.kubernetes.io/part-of": "braid",
                "app.kubernetes.io/component": "routing",
                "braid.dev/policy": owner.name,
            },
            "ownerReferences": [owner_reference(owner)],
        },
        "data": {
            ROUTING_FILE: table.model_dump_json(indent=2),
            ENDPOINTS_FILE: endpoints.model_dump_json(indent=2),
        },
    }
    return PolicyRouting(sorted(servable_ids), problems, configmap)


def gateway_plan_configmap_name(policy: str) -> str:
    return f"braid-gateway-plan-{policy}"[:253]


def render_gateway_plan(spec: OffloadPolicySpec) -> RepositoryPlan | None:
    """What the gateway's init container fetches for this policy: the DIMEE pools archive,
    unpacked where the routing table's ``dimee.pools`` points, its sha256 checked. None when
    the policy has nothing to fetch."""
    dimee = spec.dimee
    if dimee is None or not dimee.enabled or dimee.pools_artifact is None:
        return None
    ref = dimee.pools_artifact
    scheme = ref.uri.partition("://")[0]
    if scheme not in FETCHED_SCHEMES:
        raise ValueError(
            f"spec.dimee.poolsArtifact.uri: {ref.uri!r}: the gateway fetches its artifacts, "
            f"so only {', '.join(s + '://' for s in FETCHED_SCHEMES)} are served"
        )
    return RepositoryPlan(
        artifacts=[
            PlannedArtifact(uri=ref.uri, sha256=ref.sha256, dest=DIMEE_ARTIFACT_DIR, unpack=True)
        ],
        repository=DIMEE_ARTIFACT_DIR,
    )


def render_gateway_plan_configmap(
    owner: ObjectMeta, spec: OffloadPolicySpec
) -> dict[str, Any] | None:
    """The gateway's fetch plan as a ConfigMap (the chart mounts it into the gateway's init
    container, ``braid artifacts assemble``), owned by the policy."""
    plan = render_gateway_plan(spec)
    if plan is None:
        return None
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": gateway_plan_configmap_name(owner.name),
            "namespace": owner.namespace,
            "labels": {
                "app.kubernetes.io/part-of": "braid",
                "app.kubernetes.io/component": "gateway-plan",
                GATEWAY_POLICY_LABEL: owner.name,
            },
            "ownerReferences": [owner_reference(owner)],
        },
        "data": plan_configmap_data(plan),
    }


def gateway_pods_selector(owner: ObjectMeta) -> str:
    """The label selector of the gateway pods that fetch this policy's artifacts."""
    return f"{GATEWAY_POLICY_LABEL}={owner.name}"


def policy_readiness(routing: PolicyRouting, fetch: PodProblem | None) -> tuple[bool, str, str]:
    """The policy's Ready (status, reason, message): routed, paths it names that the catalog
    lacks, or, first, a gateway pod that could not fetch the policy's pools archive (the
    gateway does not start without them: no silent fallback to routing without DIMEE)."""
    if fetch is not None:
        return False, fetch.reason, f"gateway pools artifact: {fetch.message}"
    if routing.problems:
        return False, "UnknownPaths", "; ".join(routing.problems)
    name = routing.configmap["metadata"]["name"] if routing.configmap else "?"
    return True, "Routed", f"{len(routing.candidates)} servable paths in ConfigMap {name}"
