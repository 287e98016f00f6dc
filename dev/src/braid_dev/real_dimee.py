"""DIMEE through braid's chart onto the real node: every part runs in a container.

What ``braid_dev.dimee_deploy`` does on kwok, done as a cluster does it:

- the quick profile's cached export (``dimee_deploy.cached_export``; no fine-tune here) is
  put in the S3 store: one repository archive per tier Block (mobile with the full model,
  the original path; edge; cloud) and the pools archive;
- the tier Blocks run braid's Triton runtime image on the real node's pool (the edge and
  cloud pools have no real node on this machine, so their Blocks move onto it); each pod's
  init container fetches its archive from the store with the store's credentials Secret;
- the OffloadPolicy names the pools archive as ``dimee.poolsArtifact`` in the same store;
- ``helm install`` with ``gateway.dimee.enabled``: the chart's gateway pod runs its
  ``fetch-models`` init container on the operator's plan, then ``braid gateway`` with
  ``--artifacts-dir``.

SST-2 sentences then go to the gateway pod's address (``dimee_deploy.send_sentences``) and
are compared with the offline evaluation (``dimee_deploy.offline_decisions``).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from braid.api.catalog import PathCatalog
from braid.api.routing import ROUTING_FILE
from braid.dimee.export import CATALOG_FILE, INPUT, MODEL, POOLS_ARCHIVE
from braid.policy.dimee import RouterMode
from braid.render.model_repository import PLAN_FILE
from braid.render.routing import gateway_plan_configmap_name, routing_configmap_name
from braid.settings import Settings
from braid_dev import real_deploy as rd
from braid_dev.dimee_deploy import (
    API,
    BLOCKS,
    CATALOG_CONFIGMAP,
    POLICY,
    DimeeExport,
    dimee_objects,
    sha256_of,
)
from braid_dev.stack import cluster, nodes
from braid_dev.stack.artifact_servers import S3Store
from braid_dev.stack.processes import wait_until

TIER_MODELS = {
    f"dimee-{tier}": (f"{MODEL}.{tier}", f"{MODEL}.full")
    if tier == "mobile"
    else (f"{MODEL}.{tier}",)
    for tier in BLOCKS
}
"""Each tier Block's archive: the models its Triton pod loads."""
BLOCK_RESOURCES: Mapping[str, Any] = {"cpu": "250m", "memory": "2Gi", "gpu": 0}
"""A tier's pod: a tritonserver with one Python-backend stub per MiniLM model (the mobile
one has two); a quarter core each, so the three fit a 2-core node beside the chart's pods."""
GATEWAY_GRPC_PORT = 8001


def store_dimee(
    export: DimeeExport, root: Path
) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
    """The tier archives and the pools archive in the store (bucket ``models`` under
    ``root``); returns each tier Block's ``ArtifactRef`` and the pools'."""
    bucket = root / rd.REPOSITORY_BUCKET
    refs: dict[str, dict[str, str]] = {}
    for block, models in TIER_MODELS.items():
        archive = f"{block}.tar"
        sha = rd.write_repository_archive(
            export.repository, models, bucket / archive, compress=False
        )
        refs[block] = {
            "uri": f"s3://{rd.REPOSITORY_BUCKET}/{archive}",
            "sha256": sha,
            "credentialsSecret": rd.CREDENTIALS_SECRET,
        }
    shutil.copyfile(export.archive, bucket / POOLS_ARCHIVE)
    pools = {
        "uri": f"s3://{rd.REPOSITORY_BUCKET}/{POOLS_ARCHIVE}",
        "sha256": sha256_of(export.archive),
        "credentialsSecret": rd.CREDENTIALS_SECRET,
    }
    return refs, pools


def real_dimee_objects(
    export: DimeeExport,
    namespaces: tuple[str, str],
    runtime_image: str,
    refs: Mapping[str, Mapping[str, str]],
    pools: Mapping[str, str],
    mode: RouterMode,
) -> list[dict[str, Any]]:
    """The namespaces, the Model, the tier Blocks on the real pool, each fetching its own
    archive, and the OffloadPolicy whose pools archive is fetched with the store's
    credentials (pure but for reading the export's catalog). The catalog ConfigMap is the
    release's to make."""
    local_ns, _ = namespaces
    objs = dimee_objects(export, local_ns, pools["uri"], pools["sha256"], mode)
    objs = [o for o in objs if o["kind"] != "ConfigMap"]
    for obj in objs:
        if obj["kind"] == "OffloadPolicy":
            obj["spec"]["dimee"]["poolsArtifact"]["credentialsSecret"] = pools["credentialsSecret"]
    first_ref = next(iter(refs.values()))
    placed = rd.place_on_real_pool(
        objs,
        {nodes.REAL_TIER},
        runtime_image,
        first_ref,
        # The edge and cloud pools have no real node here: their Blocks run on the local one.
        moved={block: nodes.REAL_TIER for block in TIER_MODELS},
        repositories=refs,
        resources=BLOCK_RESOURCES,
    )
    namespace_objs = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}} for ns in namespaces
    ]
    return [*namespace_objs, *placed]


def dimee_chart_values() -> list[str]:
    """The chart values of the DIMEE release (pure): the policy and catalog it serves, the
    gateway's fetch-models init container with the store's credentials; no path controller
    (DIMEE routes per sample from the pools, not from metrics)."""
    return [
        f"policy.name={POLICY}",
        "controller.enabled=false",
        "gateway.dimee.enabled=true",
        f"gateway.dimee.credentialsSecret={rd.CREDENTIALS_SECRET}",
        # One request at a time, in order, as the offline evaluation sees them.
        "gateway.maxInFlightPerHop=1",
        f"test.model={MODEL}",
        f"test.input.name={INPUT.name}",
        f"test.input.datatype={INPUT.datatype}",
        f"test.input.shape={{1,{','.join(str(d) for d in INPUT.shape)}}}",
    ]


@contextmanager
def deployed_dimee(
    access: cluster.ClusterAccess,
    settings: Settings,
    repo: Path,
    workdir: Path,
    store: S3Store,
    export: DimeeExport,
    namespaces: tuple[str, str],
    mode: RouterMode = "adaptive",
) -> Iterator[rd.RealRelease]:
    """braid's chart and DIMEE's tiers on the real node, removed again on the way out."""
    node_images = rd.import_node_images(
        settings.cache, settings.bin_dir, cluster.layout_for(settings).root, repo
    )
    refs, pools = store_dimee(export, store.root)
    objs = real_dimee_objects(
        export, namespaces, node_images.reference("triton-runtime"), refs, pools, mode
    )
    workload = rd.Workload(
        objects=objs,
        catalog=PathCatalog.model_validate_json((export.repository / CATALOG_FILE).read_text()),
        catalog_file=export.repository / CATALOG_FILE,
        catalog_configmap=CATALOG_CONFIGMAP,
        values=dimee_chart_values(),
        kwok_repository=export.repository,
        components=("operator", "gateway"),
    )
    with rd.released(access, settings, workdir, store, node_images, workload, namespaces) as r:
        yield r


def policy_ready(release: rd.RealRelease) -> dict[str, Any] | None:
    policy = release.access.kubectl_json(
        "get", f"offloadpolicies.{API.split('/')[0]}", POLICY, "-n", release.local_namespace
    )
    conditions = (policy.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == "Ready"), None)


def gateway_grpc_address(release: rd.RealRelease) -> str:
    (pod,) = release.chart_pods("gateway")
    return f"{pod['status']['podIP']}:{GATEWAY_GRPC_PORT}"


def patch_dimee(release: rd.RealRelease, dimee: Mapping[str, Any]) -> None:
    """Merge ``dimee`` into the policy's ``spec.dimee``."""
    release.access.kubectl(
        "patch", "offloadpolicy", POLICY, "-n", release.local_namespace, "--type=merge",
        "-p", json.dumps({"spec": {"dimee": dict(dimee)}}),
    )  # fmt: skip


def _configmap_json(release: rd.RealRelease, name: str, key: str) -> Any:
    cm = release.access.kubectl_json("get", "configmap", name, "-n", release.local_namespace)
    return json.loads(cm["data"][key])


def routing_mode(release: rd.RealRelease) -> str | None:
    table = _configmap_json(release, routing_configmap_name(POLICY), ROUTING_FILE)
    return (table.get("dimee") or {}).get("mode")


def planned_pools_sha256(release: rd.RealRelease) -> str:
    plan = _configmap_json(release, gateway_plan_configmap_name(POLICY), PLAN_FILE)
    return str(plan["artifacts"][0]["sha256"])


def restart_gateway(release: rd.RealRelease, wait: bool = True) -> None:
    """A new gateway pod (DIMEE settings and pools are read when the gateway starts): its
    init container fetches by the plan as it is now. ``wait``: until the rollout is done and
    the old pod is gone."""
    deployment = f"deployment/{rd.RELEASE}-gateway"
    ns = release.local_namespace
    release.access.kubectl("rollout", "restart", "-n", ns, deployment)
    if not wait:
        return
    release.access.kubectl("rollout", "status", "-n", ns, deployment, "--timeout=600s", timeout=630)
    wait_until(
        lambda: (
            len(release.chart_pods("gateway")) == 1
            and all(rd.pod_ready(p) for p in release.chart_pods("gateway"))
        ),
        "one gateway pod, Ready",
        timeout=300,
    )
