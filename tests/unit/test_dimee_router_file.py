"""The gateway's DIMEE router loads the pools artifact that ``braid dimee`` exports."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from braid.dataplane.dimee import load_tier_router

pytestmark = pytest.mark.unit


def write_pools(tmp_path: Path, centroids: list[list[float] | None]) -> Path:
    table = np.zeros((8, 2), dtype=np.float32)
    table[4] = [0.0, 0.0]
    table[5] = [10.0, 0.0]
    np.save(tmp_path / "emb.npy", table)
    doc = {
        "centroids": centroids,
        "pool_sizes": [10, 0 if centroids[1] is None else 10, 10],
        "paths": {"mobile": "m/mobile", "edge": "m/edge", "cloud": "m/cloud"},
        "special_ids": [1, 2],
        "word_embeddings": "emb.npy",
    }
    path = tmp_path / "dimee-pools.json"
    path.write_text(json.dumps(doc))
    return path


def test_an_empty_pool_is_never_chosen_and_adaptive_mode_moves_centroids(tmp_path: Path) -> None:
    pools = write_pools(tmp_path, [[0.0, 0.0], None, [10.0, 0.0]])
    ids = np.array([[1, 4, 2, 0], [1, 5, 2, 0], [1, 4, 5, 2]])  # means 0, 10, 5
    fixed = load_tier_router(pools)
    assert fixed.route(ids, object()) == ["m/mobile", "m/cloud", "m/mobile"]  # tie: first
    adaptive = load_tier_router(pools, "adaptive", prior_count=1)
    adaptive.route(ids[2:], object())
    assert adaptive.pools.centroids[0].tolist() == [2.5, 0.0]


def test_a_pools_file_without_any_centroid_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="every pool is empty"):
        load_tier_router(write_pools(tmp_path, [None, None, None]))
