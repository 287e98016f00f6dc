"""The DIMEE pools archive as an artifact: the operator's gateway fetch plan, the routing
table that points into it, the gateway's refusal to start without it, and the fetcher's
failure read back from the gateway pod."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from braid.api.catalog import PathCatalog
from braid.api.repository_plan import RepositoryPlan
from braid.api.routing import DimeeRouting, PathWeight, RoutingTable, routing_table_from_policy
from braid.api.v1alpha1.offloadpolicy import OffloadPolicySpec
from braid.cli import app
from braid.dataplane.dimee import PoolsUnavailableError, load_tier_router
from braid.dataplane.service import dimee_pools_path
from braid.render.block import ObjectMeta
from braid.render.model_repository import PLAN_FILE
from braid.render.pod_readiness import ARTIFACT_FETCH_FAILED, fetch_problem
from braid.render.routing import (
    PolicyRouting,
    policy_readiness,
    render_gateway_plan,
    render_gateway_plan_configmap,
)

pytestmark = pytest.mark.unit

DIGEST = "ab" * 32
OWNER = ObjectMeta(name="dimee", namespace="provider-a", uid="u-1", kind="OffloadPolicy")


def policy(**dimee: Any) -> OffloadPolicySpec:
    return OffloadPolicySpec.model_validate(
        {
            "modelRef": {"name": "minilm-sst2"},
            "latencyBoundMicroseconds": 100000,
            "allPaths": True,
            "dimee": {"enabled": True, "mode": "adaptive", **dimee},
        }
    )


ARTIFACT = {"uri": "https://store.example/models/dimee-pools.tar", "sha256": DIGEST}


def test_the_pools_artifact_becomes_the_gateways_fetch_plan_and_routing() -> None:
    spec = policy(poolsArtifact=ARTIFACT)
    cm = render_gateway_plan_configmap(OWNER, spec)
    assert cm is not None
    assert cm["metadata"]["name"] == "braid-gateway-plan-dimee"
    assert cm["metadata"]["ownerReferences"][0]["kind"] == "OffloadPolicy"
    plan = RepositoryPlan.model_validate_json(cm["data"][PLAN_FILE])
    (artifact,) = plan.artifacts
    assert (artifact.uri, artifact.sha256, artifact.dest, artifact.unpack) == (
        ARTIFACT["uri"],
        DIGEST,
        "dimee",
        True,
    )
    assert plan.models == []
    table = routing_table_from_policy(spec, None, model="minilm-sst2", original_path="o")
    assert table.dimee == DimeeRouting(
        mode="adaptive", pools="dimee/dimee-pools.json", fetched=True, prior_count=100
    )


def test_a_pools_file_needs_no_plan_and_is_read_where_it_is() -> None:
    spec = policy(pools="/models/dimee-pools.json")
    assert render_gateway_plan(spec) is None
    table = routing_table_from_policy(spec, None, model="minilm-sst2", original_path="o")
    assert table.dimee is not None
    assert not table.dimee.fetched
    assert dimee_pools_path(table.dimee, None) == Path("/models/dimee-pools.json")


@pytest.mark.parametrize("uri", ["pvc://claim/dimee-pools.tar", "file:///tmp/dimee-pools.tar"])
def test_an_artifact_the_gateway_cannot_fetch_is_refused_with_the_field(uri: str) -> None:
    with pytest.raises(ValueError, match=r"spec\.dimee\.poolsArtifact\.uri"):
        render_gateway_plan(policy(poolsArtifact={"uri": uri}))


def test_an_unknown_scheme_is_refused_by_the_spec() -> None:
    with pytest.raises(ValidationError):
        policy(poolsArtifact={"uri": "ftp://store/dimee-pools.tar"})


def test_the_gateway_will_not_route_without_its_fetched_pools(tmp_path: Path) -> None:
    fetched = DimeeRouting(pools="dimee/dimee-pools.json", fetched=True)
    with pytest.raises(ValueError, match="--artifacts-dir"):
        dimee_pools_path(fetched, None)
    assert dimee_pools_path(fetched, tmp_path) == tmp_path / "dimee" / "dimee-pools.json"


def test_a_gateway_without_its_fetched_pools_stops_with_one_line_naming_the_file(
    tmp_path: Path, synthetic_catalog: PathCatalog
) -> None:
    """The fetch-models init container left no pools where the routing table points: the
    gateway exits 1 with one line that names the missing file, not a traceback."""
    catalog = tmp_path / "catalog.json"
    catalog.write_text(synthetic_catalog.model_dump_json())
    table = RoutingTable(
        model=synthetic_catalog.local_model,
        paths=[PathWeight(id=synthetic_catalog.original_path, weight=1.0)],
        dimee=DimeeRouting(pools="dimee/dimee-pools.json", fetched=True),
    )
    routing = tmp_path / "routing.json"
    routing.write_text(table.model_dump_json(by_alias=True))
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    result = CliRunner().invoke(
        app,
        [
            "gateway", f"--catalog={catalog}", f"--routing={routing}",
            "--endpoint=local=127.0.0.1:1", "--endpoint=host=127.0.0.1:2",
            f"--artifacts-dir={artifacts}", "--http-port=0", "--grpc-port=0",
        ],
    )  # fmt: skip
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert str(artifacts / "dimee" / "dimee-pools.json") in lines[0]
    assert "missing" in lines[0]
    assert "Traceback" not in result.output


def test_missing_word_embeddings_are_named_too(tmp_path: Path) -> None:
    pools = tmp_path / "dimee-pools.json"
    pools.write_text(
        json.dumps({"centroids": [[0.0, 1.0]], "pool_sizes": [1], "word_embeddings": "words.npy"})
    )
    with pytest.raises(PoolsUnavailableError, match=r"words\.npy: the word embeddings"):
        load_tier_router(pools)


def gateway_pod(init: dict[str, Any], name: str = "gw-1") -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {"nodeName": "n1"},
        "status": {"phase": "Pending", "initContainerStatuses": [init]},
    }


def test_a_failed_fetch_of_the_gateway_pod_is_the_policys_reason() -> None:
    failed = {
        "name": "fetch-models",
        "state": {"waiting": {"reason": "CrashLoopBackOff"}},
        "lastState": {
            "terminated": {
                "exitCode": 1,
                "message": "ArtifactUnreachable: https://store/dimee-pools.tar: gave up",
            }
        },
    }
    problem = fetch_problem([gateway_pod(failed)])
    assert problem is not None
    assert problem.reason == ARTIFACT_FETCH_FAILED
    assert problem.message.startswith("ArtifactUnreachable: ")
    # A gateway still fetching, or one whose fetch is done, has nothing to report.
    running = {"name": "fetch-models", "state": {"running": {}}}
    done = {"name": "fetch-models", "state": {"terminated": {"exitCode": 0}}}
    assert fetch_problem([gateway_pod(running), gateway_pod(done, "gw-2")]) is None
    # The fetch's reason is the policy's, ahead of anything its routing says.
    routing = PolicyRouting(["a"], ["spec.candidatePaths: unknown path ids ['x']"], {})
    assert policy_readiness(routing, problem) == (
        False,
        ARTIFACT_FETCH_FAILED,
        f"gateway pools artifact: {problem.message}",
    )
    assert policy_readiness(routing, None)[:2] == (False, "UnknownPaths")
