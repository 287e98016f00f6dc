"""DIMEE through braid's resources: the three tiers as Blocks on the three pools, the pools
archive delivered to the gateway like any artifact (by URI, fetched by its init step with the
sha256 checked), and SST-2 sentences through the gateway giving the offline evaluation's
decisions.

The quick profile's model is exported once (cached); the archive is served by a real HTTPS
store; the operator renders the Triton Deployments, the routing ConfigMap and the gateway's
fetch plan; the kwok runtime runs a real tritonserver per Triton Deployment; the gateway pod's
init step and gateway run as processes on the operator's ConfigMaps
(``braid_dev.dimee_deploy``). In each mode (Ours-F ``fixed``, Ours-D ``adaptive``) every
sentence must reach the tier the offline router picks and get the offline prediction, so the
accuracy is the offline accuracy on the same sentences.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from braid.dimee.export import MODEL
from braid.render.routing import gateway_plan_configmap_name
from braid_dev.dimee_deploy import (
    BLOCKS,
    POLICY,
    DimeeRig,
    compare_with_offline,
    deploy_dimee,
    gateway_pod_with_failed_fetch,
    offline_decisions,
    run_fetch_step,
)
from braid_dev.stack.processes import ManagedProcess
from tests.e2e.conftest import E2ECluster
from tests.e2e.helpers import wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def rig(
    cluster: E2ECluster, operator: ManagedProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DimeeRig]:
    namespace = "e2e-dimee"
    cluster.kubectl("create", "namespace", namespace, check=False)
    wait_for(
        lambda: cluster.kubectl("get", "serviceaccount", "default", "-n", namespace, check=False),
        f"the default ServiceAccount in {namespace}",
    )
    try:
        with deploy_dimee(cluster.access, namespace, tmp_path_factory.mktemp("dimee")) as r:
            yield r
    finally:
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def test_the_tiers_run_as_blocks_on_their_pools(cluster: E2ECluster, rig: DimeeRig) -> None:
    for tier, (pool, _) in BLOCKS.items():
        dep = wait_for(
            lambda tier=tier: cluster.kubectl(
                "get", "deployment", f"triton-dimee-{tier}", "-n", rig.namespace, "-o", "json",
                check=False,
            ),
            f"the {tier} tier's Deployment",
        )  # fmt: skip
        spec = json.loads(dep)["spec"]["template"]["spec"]
        assert spec["nodeSelector"]["braid.dev/tier"] == pool
        loads = [a for a in spec["containers"][0]["args"] if a.startswith("--load-model=")]
        expected = [f"--load-model={MODEL}.{tier}"]
        if tier == "mobile":
            expected.append(f"--load-model={MODEL}.full")  # the original path, on local
        assert loads == expected
    # The gateway's fetch plan is the policy's pools artifact, by URI and digest.
    cm = wait_for(
        lambda: rig.configmap(gateway_plan_configmap_name(POLICY)), "the gateway's fetch plan"
    )
    (artifact,) = json.loads(cm["data"]["plan.json"])["artifacts"]
    assert artifact["uri"].startswith("https://")
    assert artifact["unpack"] is True
    assert len(artifact["sha256"]) == 64


@pytest.mark.parametrize("mode", ["fixed", "adaptive"])
def test_sst2_through_the_gateway_gives_the_offline_decisions(
    rig: DimeeRig, mode: str, tmp_path: Path
) -> None:
    compared = compare_with_offline(rig, mode)  # type: ignore[arg-type]
    served, offline = compared.served, compared.offline
    assert len(set(offline.tiers.tolist())) >= 2  # the premise: the router splits the traffic
    if mode == "adaptive":
        # The premise of checking Ours-D: its feedback changes where sentences go.
        assert (offline.tiers != offline_decisions(rig.export, "fixed").tiers).any()
    assert served.paths == offline.path_ids()
    assert served.predictions.tolist() == offline.predictions.tolist()
    assert served.accuracy == offline.accuracy
    ready = rig.policy_ready()
    assert ready is not None
    assert ready["status"] == "True", ready


def test_an_unreachable_pools_artifact_stops_the_gateway_with_the_reason(
    rig: DimeeRig, tmp_path: Path
) -> None:
    """The init step on a plan whose store is gone fails with its reason where the kubelet
    reads it, so the gateway never starts without its pools (no silent fallback), and the
    operator makes that reason the policy's Ready condition."""
    plan = rig.configmap(gateway_plan_configmap_name(POLICY))
    assert plan is not None
    doc = json.loads(plan["data"]["plan.json"])
    doc["artifacts"][0]["uri"] = "https://127.0.0.1:9/models/dimee-pools.tar"
    result = run_fetch_step(json.dumps(doc), tmp_path / "artifacts", {})
    assert result.returncode != 0
    log = (tmp_path / "artifacts-termination-log").read_text()
    assert log.startswith("ArtifactUnreachable: ")
    assert not (tmp_path / "artifacts" / "dimee" / "dimee-pools.json").exists()

    def condition(reason: str) -> dict[str, Any] | None:
        ready = rig.policy_ready()
        return ready if ready is not None and ready["reason"] == reason else None

    with gateway_pod_with_failed_fetch(rig, result.returncode, log):
        ready = wait_for(lambda: condition("ArtifactFetchFailed"), "Ready=False from the fetch")
        assert ready["status"] == "False"
        assert "gateway pools artifact: ArtifactUnreachable: " in ready["message"]
        assert "127.0.0.1:9" in ready["message"]
    # The failed pod gone, the policy is routed again.
    assert wait_for(lambda: condition("Routed"), "Ready=True again")["status"] == "True"
