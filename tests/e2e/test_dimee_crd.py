"""The API server enforces the OffloadPolicy's DIMEE rules (CEL): n > m, pools when enabled."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import E2ECluster

pytestmark = pytest.mark.e2e


def create(cluster: E2ECluster, namespace: str, dimee: dict[str, Any]) -> tuple[int, str]:
    spec = {
        "modelRef": {"name": "minilm-sst2"},
        "latencyBoundMicroseconds": 100000,
        "allPaths": True,
        "dimee": copy.deepcopy(dimee),
    }
    doc = {
        "apiVersion": "braid.dev/v1alpha1",
        "kind": "OffloadPolicy",
        "metadata": {"name": "dimee", "namespace": namespace},
        "spec": spec,
    }
    result = cluster.access.kubectl(
        "create", "--dry-run=server", "--validate=strict", "-f", "-",
        input=yaml.safe_dump(doc), check=False,
    )  # fmt: skip
    return result.returncode, result.stderr


def test_dimee_settings_are_checked_by_the_api_server(crds: E2ECluster, namespace: str) -> None:
    ok = {"enabled": True, "mode": "adaptive", "mobileLayers": 2, "edgeLayers": 4,
          "pools": "/models/dimee-pools.json", "priorCount": 100}  # fmt: skip
    assert create(crds, namespace, ok) == (0, "")

    rc, err = create(crds, namespace, {**ok, "edgeLayers": 2})
    assert rc != 0
    assert "edgeLayers must be greater than mobileLayers" in err

    without_pools = {k: v for k, v in ok.items() if k != "pools"}
    rc, err = create(crds, namespace, without_pools)
    assert rc != 0
    assert "needs its pools artifact" in err
    assert create(crds, namespace, {**without_pools, "enabled": False})[0] == 0

    # The pools by URI (what a cluster's gateway fetches), or a file, never both.
    artifact = {"uri": "https://store.example/dimee-pools.tar", "sha256": "ab" * 32}
    assert create(crds, namespace, {**without_pools, "poolsArtifact": artifact}) == (0, "")
    rc, err = create(crds, namespace, {**ok, "poolsArtifact": artifact})
    assert rc != 0
    assert "set one of pools" in err
    rc, err = create(crds, namespace, {**without_pools, "poolsArtifact": {"uri": "ftp://x/p.tar"}})
    assert rc != 0
    assert "poolsArtifact.uri" in err
