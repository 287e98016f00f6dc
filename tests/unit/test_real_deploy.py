"""The real-node release's pure shaping: Blocks placed on the real pool, each fetching its
own repository archive where one is named (DIMEE's tiers), the shared one otherwise."""

from __future__ import annotations

from typing import Any

import pytest

from braid_dev import real_deploy, real_dimee

pytestmark = pytest.mark.unit

SHARED = {"uri": "s3://models/repository.tar.gz", "sha256": "ab" * 32}
OWN = {"uri": "s3://models/dimee-edge.tar", "sha256": "cd" * 32, "credentialsSecret": "s"}


def block(name: str, tier: str) -> dict[str, Any]:
    return {"kind": "Block", "metadata": {"name": name}, "spec": {"tier": tier}}


def test_blocks_fetch_their_own_archive_where_named_and_move_onto_the_real_pool() -> None:
    objs = [block("dimee-mobile", "local"), block("dimee-edge", "edge"), block("other", "cloud")]
    placed = real_deploy.place_on_real_pool(
        objs,
        {"local"},
        "registry.local/braid-triton-runtime:1",
        SHARED,
        moved={"dimee-edge": "local"},
        repositories={"dimee-edge": OWN},
        resources=real_dimee.BLOCK_RESOURCES,
    )
    mobile, edge, other = (o["spec"] for o in placed)
    assert mobile["modelRepository"] == {**SHARED, "format": "triton-repository"}
    assert edge["modelRepository"] == {**OWN, "format": "triton-repository"}
    assert (edge["tier"], edge["nodePool"]) == ("local", "local-real")
    assert edge["resources"] == {"cpu": "250m", "memory": "2Gi", "gpu": 0}
    assert other == {"tier": "cloud"}  # no real node on its pool: left to kwok
    assert objs[1]["spec"] == {"tier": "edge"}  # the input is not changed


def test_the_mobile_tier_archive_carries_the_original_path() -> None:
    assert real_dimee.TIER_MODELS == {
        "dimee-mobile": ("minilm-sst2.mobile", "minilm-sst2.full"),
        "dimee-edge": ("minilm-sst2.edge",),
        "dimee-cloud": ("minilm-sst2.cloud",),
    }


def test_the_dimee_release_runs_the_gateways_fetch_with_the_stores_credentials() -> None:
    values = real_dimee.dimee_chart_values()
    assert "gateway.dimee.enabled=true" in values
    assert f"gateway.dimee.credentialsSecret={real_deploy.CREDENTIALS_SECRET}" in values
    assert "test.input.shape={1,64}" in values
