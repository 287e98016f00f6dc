"""Load DIMEE's pools artifact into the gateway's per-sample router (``SampleRouter``).

``braid dimee export`` writes ``dimee-pools.json`` (α, centroids, pool sizes, tier -> path
id) and the word-embedding table beside the model repository's ``catalog.json``. The
decisions themselves are pure (``braid.policy.dimee``); this module only reads files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import numpy as np

from braid.policy.dimee import PoolRouter, TierRouter

POOLS_FILE = "dimee-pools.json"


def load_tier_router(
    pools_file: Path,
    mode: Literal["fixed", "adaptive"] = "fixed",
    prior_count: int = 100,
) -> TierRouter:
    """A router over the pools in ``pools_file``: Ours-F (``fixed``) or Ours-D (``adaptive``)."""
    doc = json.loads(pools_file.read_text())
    dim = None
    rows = []
    for row in doc["centroids"]:
        rows.append(row)
        if row is not None:
            dim = len(row)
    if dim is None:
        raise ValueError(f"{pools_file}: every pool is empty")
    centroids = np.array([r if r is not None else [np.nan] * dim for r in rows], dtype=np.float64)
    table = np.load(pools_file.parent / doc["word_embeddings"])
    return TierRouter(
        pools=PoolRouter(
            centroids,
            np.asarray(doc["pool_sizes"], dtype=np.int64),
            adaptive=mode == "adaptive",
            prior_count=prior_count,
        ),
        word_embeddings=table.astype(np.float32, copy=False),
        special_ids=[int(i) for i in doc["special_ids"]],
        paths=dict(doc["paths"]),
    )
