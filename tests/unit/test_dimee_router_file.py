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
        "mobile_layers": 2,
        "edge_layers": 4,
        "layers": 6,
        "exit_output": "EXIT",
    }
    path = tmp_path / "dimee-pools.json"
    path.write_text(json.dumps(doc))
    return path


def test_an_empty_pool_is_never_chosen_and_routed_mode_moves_centroids(tmp_path: Path) -> None:
    pools = write_pools(tmp_path, [[0.0, 0.0], None, [10.0, 0.0]])
    ids = np.array([[1, 4, 2, 0], [1, 5, 2, 0], [1, 4, 5, 2]])  # means 0, 10, 5
    fixed = load_tier_router(pools)
    assert fixed.route(ids, object()) == ["m/mobile", "m/cloud", "m/mobile"]  # tie: first
    routed = load_tier_router(pools, "adaptive-routed", prior_count=1)
    routed.route(ids[2:], object())
    assert routed.pools.centroids[0].tolist() == [2.5, 0.0]


def test_adaptive_mode_takes_feedback_and_an_export_without_exits_is_refused(
    tmp_path: Path,
) -> None:
    pools = write_pools(tmp_path, [[0.0, 0.0], None, [10.0, 0.0]])
    adaptive = load_tier_router(pools, "adaptive", prior_count=1)
    assert adaptive.feedback_outputs == {p: "EXIT" for p in ("m/mobile", "m/edge", "m/cloud")}
    ids = np.array([[1, 4, 5, 2]])  # mean 5: routed to mobile, centroids unmoved
    assert adaptive.route(ids, object()) == ["m/mobile"]
    assert adaptive.pools.centroids[0].tolist() == [0.0, 0.0]
    # Mobile saw no exit reach alpha: it belongs to the (empty until now) moderate pool.
    adaptive.observe(ids, "m/mobile", np.zeros(1, dtype=np.int64).tobytes())
    assert adaptive.pools.centroids[1].tolist() == [5.0, 0.0]
    doc = json.loads(pools.read_text())
    del doc["exit_output"]
    pools.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="exit_output"):
        load_tier_router(pools, "adaptive")


def test_a_pools_file_without_any_centroid_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="every pool is empty"):
        load_tier_router(write_pools(tmp_path, [None, None, None]))
