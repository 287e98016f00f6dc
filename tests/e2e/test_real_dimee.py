"""DIMEE through braid's chart on the real node: the three tier Blocks' Triton pods fetch
their repository archives from an S3 store in their init containers and serve the MiniLM
tiers from braid's runtime image; the chart's gateway pod (``gateway.dimee.enabled``) fetches
the policy's pools archive from the same store in its ``fetch-models`` init container; and
SST-2 sentences sent to the gateway pod's address get the offline evaluation's decisions.

The quick profile's cached export is used (no fine-tune here). This machine has one real
node (the local pool's), so the edge and cloud tiers' Blocks run on it too
(``braid_dev.real_dimee``)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from braid.policy.dimee import RouterMode
from braid_dev import real_deploy, real_dimee
from braid_dev.dimee_deploy import (
    BLOCKS,
    Comparison,
    DimeeExport,
    cached_export,
    offline_decisions,
    send_sentences,
)
from braid_dev.stack import node_render as nr
from braid_dev.stack import nodes
from braid_dev.stack.artifact_servers import S3Store
from tests.e2e.conftest import E2ECluster
from tests.e2e.helpers import wait_for

pytestmark = pytest.mark.e2e
LOG = logging.getLogger(__name__)

# isolated-*: the session's process-run operator leaves these to the chart's.
NAMESPACES = ("isolated-dimee-a", "isolated-dimee-b")
LOCAL_NAMESPACE = NAMESPACES[0]
SENTENCES = 100
"""The first held-out SST-2 test sentences, in order (small: every tier runs on one node
of a 2-core machine)."""
MODE: RouterMode = "adaptive"
"""Ours-D: its centroids move with each answer's exit, the stricter check of the order."""


@pytest.fixture(scope="module")
def export() -> DimeeExport:
    return cached_export()


@pytest.fixture(scope="module")
def release(
    crds: E2ECluster,
    store: S3Store,
    export: DimeeExport,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[real_deploy.RealRelease]:
    try:
        with real_dimee.deployed_dimee(
            crds.access,
            crds.settings,
            Path(__file__).resolve().parents[2],
            tmp_path_factory.mktemp("real-dimee"),
            store,
            export,
            NAMESPACES,
            MODE,
        ) as installed:
            yield installed
    except real_deploy.DeployError as exc:
        pytest.fail(str(exc), pytrace=False)


def _tier_pods(release: real_deploy.RealRelease) -> list[dict[str, Any]] | None:
    """The three tier Blocks' Triton pods, once each is Ready in a container on the node."""
    node = nr.real_node_name(nodes.REAL_TIER, 0)
    pods = release.pods(LOCAL_NAMESPACE, "braid.dev/block")
    ready = [p for p in pods if real_deploy.pod_ready(p) and real_deploy.runs_in_container(p, node)]
    return ready if len(ready) == len(BLOCKS) == len(pods) else None


def test_the_tiers_fetch_their_archives_and_serve_in_containers(
    release: real_deploy.RealRelease,
) -> None:
    pods = wait_for(
        lambda: _tier_pods(release), "every tier's Triton pod Ready in a container", timeout=900
    )
    assert {p["metadata"]["labels"]["braid.dev/block"] for p in pods} == set(real_dimee.TIER_MODELS)
    for pod in pods:
        assert pod["status"]["containerStatuses"][0]["image"] == release.images.reference(
            "triton-runtime"
        )
        assert real_deploy.fetched_in_container(pod), pod["status"]
        block = pod["metadata"]["labels"]["braid.dev/block"]
        loads = [a for a in pod["spec"]["containers"][0]["args"] if a.startswith("--load-model=")]
        assert sorted(loads) == sorted(f"--load-model={m}" for m in real_dimee.TIER_MODELS[block])
    for block in real_dimee.TIER_MODELS:
        got = release.access.kubectl_json("get", "block", block, "-n", LOCAL_NAMESPACE)
        conditions = {c["type"]: c for c in got["status"]["conditions"]}
        assert conditions["Ready"]["status"] == "True", conditions


def test_the_gateway_pod_fetches_the_pools_in_its_init_container(
    release: real_deploy.RealRelease,
) -> None:
    node = nr.real_node_name(nodes.REAL_TIER, 0)
    (pod,) = release.chart_pods("gateway")
    assert real_deploy.runs_in_container(pod, node), pod["status"]
    assert real_deploy.pod_ready(pod), pod["status"]
    assert real_deploy.fetched_in_container(pod), pod["status"]
    args = pod["spec"]["containers"][0]["args"]
    assert "--artifacts-dir=/var/lib/braid/artifacts" in args


def test_sst2_through_the_gateway_pod_gives_the_offline_decisions(
    release: real_deploy.RealRelease,
    export: DimeeExport,
) -> None:
    wait_for(
        lambda: _tier_pods(release), "every tier's Triton pod Ready in a container", timeout=900
    )

    def routed() -> dict[str, Any] | None:
        ready = real_dimee.policy_ready(release)
        return ready if ready is not None and ready["status"] == "True" else None

    wait_for(routed, "the DIMEE policy Ready=True", timeout=300)
    served = send_sentences(real_dimee.gateway_grpc_address(release), export, SENTENCES)
    compared = Comparison(MODE, served, offline_decisions(export, MODE, SENTENCES))
    LOG.info("dimee_real mode=adaptive %s", compared.summary())  # --log-cli-level=INFO
    offline = compared.offline
    assert len(set(offline.tiers.tolist())) >= 2  # the premise: the router splits the traffic
    assert served.paths == offline.path_ids()
    assert served.predictions.tolist() == offline.predictions.tolist()
    assert served.accuracy == offline.accuracy
    assert compared.same_tiers
    assert compared.same_decisions


def test_fixed_mode_after_a_gateway_restart_gives_the_offline_decisions(
    release: real_deploy.RealRelease, export: DimeeExport
) -> None:
    """Ours-F: the policy's mode changes the routing ConfigMap; a new gateway pod (DIMEE
    settings are read at start) fetches the pools again and routes by the fixed pools."""
    real_dimee.patch_dimee(release, {"mode": "fixed"})
    wait_for(lambda: real_dimee.routing_mode(release) == "fixed", "the routing in fixed mode")
    real_dimee.restart_gateway(release)
    (pod,) = release.chart_pods("gateway")
    assert real_deploy.fetched_in_container(pod), pod["status"]
    served = send_sentences(real_dimee.gateway_grpc_address(release), export, SENTENCES)
    compared = Comparison("fixed", served, offline_decisions(export, "fixed", SENTENCES))
    LOG.info("dimee_real mode=fixed %s", compared.summary())
    assert (compared.offline.tiers != offline_decisions(export, MODE, SENTENCES).tiers).any()
    assert served.paths == compared.offline.path_ids()
    assert served.predictions.tolist() == compared.offline.predictions.tolist()
    assert served.accuracy == compared.offline.accuracy


def test_a_wrong_pools_digest_stops_the_new_gateway_pod_in_its_init_container(
    release: real_deploy.RealRelease,
) -> None:
    """The real fetch-models container refuses an archive whose sha256 is not the policy's:
    the new pod never starts its gateway, the policy turns Ready=False ArtifactFetchFailed
    with the fetcher's reason, and the running pod keeps serving. The right digest back, a
    new pod fetches and the policy is routed again."""
    good = real_dimee.planned_pools_sha256(release)
    wrong = "0" * 64
    (serving,) = release.chart_pods("gateway")
    real_dimee.patch_dimee(release, {"poolsArtifact": {"sha256": wrong}})
    try:
        wait_for(lambda: real_dimee.planned_pools_sha256(release) == wrong, "the plan's new digest")
        real_dimee.restart_gateway(release, wait=False)

        def failed() -> dict[str, Any] | None:
            ready = real_dimee.policy_ready(release)
            return ready if ready is not None and ready["reason"] == "ArtifactFetchFailed" else None

        ready = wait_for(failed, "Ready=False from the gateway pod's fetch", timeout=600)
        assert ready["status"] == "False"
        assert "DigestMismatch" in ready["message"], ready
        assert wrong in ready["message"]
        pods = {p["metadata"]["name"]: p for p in release.chart_pods("gateway")}
        assert real_deploy.pod_ready(pods[serving["metadata"]["name"]])
        stuck = [p for name, p in pods.items() if name != serving["metadata"]["name"]]
        assert stuck
        assert all(not real_deploy.pod_ready(p) for p in stuck)
    finally:
        real_dimee.patch_dimee(release, {"poolsArtifact": {"sha256": good}})
    wait_for(lambda: real_dimee.planned_pools_sha256(release) == good, "the plan's digest back")
    real_dimee.restart_gateway(release)

    def routed() -> dict[str, Any] | None:
        ready = real_dimee.policy_ready(release)
        return ready if ready is not None and ready["status"] == "True" else None

    assert wait_for(routed, "Ready=True again", timeout=300)["reason"] == "Routed"
