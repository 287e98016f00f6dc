"""DIMEE's pure decisions: the reward, α, pools, centroids, routers and costs."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from braid.api.routing import routing_table_from_policy
from braid.api.v1alpha1.offloadpolicy import Dimee, OffloadPolicySpec
from braid.policy.dimee import (
    EASY,
    HARD,
    MODERATE,
    ROUTER_MODES,
    CostModel,
    PoolRouter,
    TierRouter,
    Tiers,
    alpha_grid,
    cheap_embedding,
    choose_alpha,
    difficulty_pools,
    first_exit,
    full_model_cost,
    nearest,
    observed_pool,
    pool_centroids,
    pool_of_exit,
    reached_exits,
    rewards,
    sample_costs,
    score,
    tier_exits,
)

pytestmark = pytest.mark.unit

TIERS = Tiers(mobile=2, edge=4, layers=6)
COSTS = CostModel(
    lambda_mobile=0.1, lambda_edge=0.05, offload_edge=0.1, offload_cloud=0.3, cloud_charge=0.1
)
# Three samples: confident at layer 1 (easy), at layer 3 (moderate), never (hard).
CONF = np.array(
    [
        [0.95, 0.96, 0.97, 0.98, 0.99, 0.99],
        [0.60, 0.70, 0.92, 0.93, 0.95, 0.97],
        [0.55, 0.60, 0.62, 0.65, 0.70, 0.80],
    ]
)


def test_the_alpha_grid_is_ten_values_from_one_over_k_to_one() -> None:
    grid = alpha_grid(2)
    assert len(grid) == 10
    assert grid[0] == pytest.approx(0.5)
    assert grid[-1] == pytest.approx(1.0)
    assert np.all(np.diff(grid) > 0)


def test_a_sample_leaves_at_its_first_confident_exit_or_the_last() -> None:
    assert first_exit(CONF, 0.9, last=6).tolist() == [1, 3, 6]
    assert first_exit(CONF, 0.9, last=2).tolist() == [1, 2, 2]


def test_the_reward_follows_the_tier_of_the_exit() -> None:
    got = rewards(CONF, 0.9, TIERS, COSTS)
    assert got[0] == pytest.approx(0.95 - 0.1 * 1)  # mobile, layer 1
    assert got[1] == pytest.approx(0.92 - 0.05 * 3 - 0.1)  # edge, layer 3
    assert got[2] == pytest.approx(0.80 - 0.3 - 0.1)  # cloud: C_L - o_c - gamma


def test_alpha_maximises_the_expected_reward() -> None:
    alpha, values = choose_alpha(CONF, TIERS, COSTS, [0.5, 0.9, 1.0])
    assert values == pytest.approx([rewards(CONF, a, TIERS, COSTS).mean() for a in (0.5, 0.9, 1.0)])
    assert alpha == [0.5, 0.9, 1.0][int(np.argmax(values))]
    # Cheap cloud: sending everything there (alpha = 1) wins.
    free_cloud = CostModel(lambda_mobile=1, lambda_edge=1, offload_edge=1, offload_cloud=0)
    assert choose_alpha(CONF, TIERS, free_cloud, [0.5, 0.9, 1.0])[0] == 1.0


def test_pools_come_from_where_samples_exit() -> None:
    assert difficulty_pools(CONF, 0.9, TIERS).tolist() == [EASY, MODERATE, HARD]
    assert difficulty_pools(CONF, 1.0, TIERS).tolist() == [HARD, HARD, HARD]


def test_centroids_are_pool_means_and_an_empty_pool_is_never_nearest() -> None:
    emb = np.array([[0.0, 0.0], [2.0, 0.0], [10.0, 10.0], [12.0, 10.0]])
    centroids, counts = pool_centroids(emb, np.array([EASY, EASY, HARD, HARD]))
    assert counts.tolist() == [2, 0, 2]
    assert centroids[EASY].tolist() == [1.0, 0.0]
    assert np.isnan(centroids[MODERATE]).all()
    assert nearest(centroids, np.array([5.0, 5.0])) == EASY
    assert nearest(centroids, np.array([9.0, 9.0])) == HARD


def test_fixed_pools_do_not_move_and_routed_pools_follow_the_samples() -> None:
    centroids = np.array([[0.0, 0.0], [5.0, 0.0], [10.0, 0.0]])
    counts = np.array([1000, 1000, 1000])
    samples = np.array([[-4.0, 0.0]] * 50 + [[2.4, 0.0]])
    fixed = PoolRouter(centroids, counts)
    assert fixed.assign(samples).tolist() == [EASY] * 51
    assert fixed.centroids[EASY].tolist() == [0.0, 0.0]
    adaptive = PoolRouter(centroids, counts, mode="adaptive-routed", prior_count=10)
    tiers = adaptive.assign(samples)
    # The easy centroid moved towards -4 (weight 10 + 50 samples): 2.4 is now moderate.
    assert adaptive.centroids[EASY][0] == pytest.approx(-4.0 * 50 / 60)
    assert tiers[-1] == MODERATE
    assert centroids[EASY].tolist() == [0.0, 0.0]  # the caller's array is not changed


def test_the_cheap_embedding_averages_ordinary_tokens_only() -> None:
    table = np.arange(20, dtype=np.float32).reshape(10, 2)
    ids = np.array([[1, 4, 6, 2, 0, 0], [1, 2, 0, 0, 0, 0]])  # [CLS]=1 [SEP]=2, pad 0
    got = cheap_embedding(ids, table, special_ids=[1, 2])
    assert got[0].tolist() == [10.0, 11.0]  # mean of rows 4 and 6
    assert got[1].tolist() == [3.0, 4.0]  # no ordinary token: mean of [CLS] and [SEP]


def test_the_tier_router_returns_one_path_per_sample_by_nearest_centroid() -> None:
    table = np.zeros((10, 2), dtype=np.float32)
    table[5] = [10.0, 0.0]
    table[6] = [0.0, 0.0]
    router = TierRouter(
        pools=PoolRouter(np.array([[0.0, 0.0], [5.0, 0.0], [10.0, 0.0]]), np.array([1, 1, 1])),
        word_embeddings=table,
        special_ids=[1, 2],
        paths={"mobile": "m/mobile", "edge": "m/edge", "cloud": "m/cloud"},
    )
    ids = np.array([[1, 5, 2, 0], [1, 6, 2, 0], [1, 5, 6, 2]])
    assert router.route(ids, object()) == ["m/cloud", "m/mobile", "m/edge"]


def test_costs_normalise_to_the_full_model_on_mobile() -> None:
    assert full_model_cost(TIERS, COSTS) == pytest.approx(0.6)
    tier_of = np.array([EASY, MODERATE, HARD])
    exit_at = tier_exits(CONF, tier_of, 0.9, TIERS)
    assert exit_at.tolist() == [1, 3, 6]
    assert sample_costs(tier_of, exit_at, COSTS) == pytest.approx([0.1, 0.25, 0.4])
    result = score("x", np.array([1, 0, 1]), np.array([1, 1, 1]), tier_of, exit_at, TIERS, COSTS)
    assert result.accuracy == pytest.approx(2 / 3)
    assert result.cost == pytest.approx((0.1 + 0.25 + 0.4) / 3 / 0.6)
    assert result.cost_change_pct == pytest.approx(100 * ((0.75 / 3) / 0.6 - 1))
    assert result.tier_share == pytest.approx((1 / 3, 1 / 3, 1 / 3))


def test_tiers_need_m_below_n_below_l() -> None:
    with pytest.raises(ValueError, match="m < n < L"):
        Tiers(mobile=4, edge=4, layers=6)


def test_an_enabled_policy_puts_its_dimee_settings_in_the_routing_table() -> None:
    spec = OffloadPolicySpec.model_validate(
        {
            "modelRef": {"name": "minilm-sst2"},
            "latencyBoundMicroseconds": 100000,
            "dimee": {"enabled": True, "mode": "adaptive", "pools": "/repo/dimee-pools.json"},
        }
    )
    table = routing_table_from_policy(spec, None, model="minilm-sst2", original_path="p")
    assert table.dimee is not None
    assert (table.dimee.mode, table.dimee.pools) == ("adaptive", "/repo/dimee-pools.json")
    off = spec.model_copy(update={"dimee": Dimee(enabled=False, pools="/x.json")})
    assert routing_table_from_policy(off, None, model="m", original_path="p").dimee is None


def test_feedback_moves_the_pool_a_sample_turned_out_to_be_in() -> None:
    # Mobile cannot tell moderate from hard: a sample that did not leave there is moderate.
    assert observed_pool(EASY, HARD) == MODERATE
    assert observed_pool(EASY, EASY) == EASY
    assert observed_pool(HARD, EASY) == EASY  # the cloud runs every exit
    router = PoolRouter(
        np.array([[0.0, 0.0], [5.0, 0.0], [10.0, 0.0]]), np.array([1, 1, 1]), "adaptive", 1
    )
    # Routing alone moves nothing in this mode.
    assert router.assign(np.array([[1.0, 0.0]])).tolist() == [EASY]
    assert router.centroids.tolist() == [[0.0, 0.0], [5.0, 0.0], [10.0, 0.0]]
    # Sent to mobile, no exit reached alpha there (EXIT 0): the moderate centroid moves.
    router.observe(EASY, np.array([[0]]), np.array([[1.0, 0.0]]), TIERS)
    assert router.centroids[EASY].tolist() == [0.0, 0.0]
    assert router.centroids[MODERATE].tolist() == [3.0, 0.0]
    # The cloud saw it exit at layer 1: the easy centroid moves (weight 1 + 1).
    router.observe(HARD, np.array([[1]]), np.array([[4.0, 0.0]]), TIERS)
    assert router.centroids[EASY].tolist() == [2.0, 0.0]


def test_the_exit_a_tier_returns_gives_the_pool_difficulty_pools_gives() -> None:
    assert [pool_of_exit(e, TIERS) for e in range(7)] == [
        HARD, EASY, EASY, MODERATE, MODERATE, HARD, HARD
    ]  # fmt: skip
    # What each tier's model returns as EXIT for CONF at alpha 0.9 (0: none within the tier).
    assert reached_exits(CONF, 0.9, TIERS.mobile).tolist() == [1, 0, 0]
    assert reached_exits(CONF, 0.9, TIERS.edge).tolist() == [1, 3, 0]
    assert reached_exits(CONF, 0.9, TIERS.layers).tolist() == [1, 3, 0]
    truth = difficulty_pools(CONF, 0.9, TIERS)
    for tier in (EASY, MODERATE, HARD):
        seen = reached_exits(CONF, 0.9, TIERS.depth(tier))
        assert [observed_pool(tier, pool_of_exit(int(e), TIERS)) for e in seen] == [
            observed_pool(tier, int(p)) for p in truth
        ]


def test_offline_feedback_equals_routing_then_observing_one_sample_at_a_time() -> None:
    rng = np.random.default_rng(0)
    centroids = np.array([[0.0, 0.0], [5.0, 0.0], [10.0, 0.0]])
    emb = rng.normal(5.0, 4.0, size=(40, 2))
    conf = rng.uniform(0.5, 1.0, size=(40, 6))
    offline = PoolRouter(centroids, np.array([5, 5, 5]), "adaptive", 5)
    tiers = offline.assign_with_feedback(emb, conf, 0.8, TIERS)
    served = PoolRouter(centroids, np.array([5, 5, 5]), "adaptive", 5)
    for i in range(40):
        k = int(served.assign(emb[i : i + 1])[0])
        assert k == tiers[i]
        served.observe(
            k, reached_exits(conf[i : i + 1], 0.8, TIERS.depth(k)), emb[i : i + 1], TIERS
        )
    np.testing.assert_array_equal(served.centroids, offline.centroids)
    assert len(set(tiers.tolist())) == 3


def test_the_tier_router_asks_for_exits_only_in_adaptive_mode_and_learns_from_them() -> None:
    table = np.zeros((10, 2), dtype=np.float32)
    table[5] = [4.0, 0.0]
    paths = {"mobile": "m/mobile", "edge": "m/edge", "cloud": "m/cloud"}
    centroids = np.array([[0.0, 0.0], [5.0, 0.0], [10.0, 0.0]])

    def router(mode: str) -> TierRouter:
        pools = PoolRouter(centroids, np.array([1, 1, 1]), mode, 1)  # type: ignore[arg-type]
        return TierRouter(pools, table, [1, 2], paths, tiers=TIERS)

    assert router("fixed").feedback_outputs == {}
    assert router("adaptive-routed").feedback_outputs == {}
    adaptive = router("adaptive")
    assert adaptive.feedback_outputs == {p: "EXIT" for p in paths.values()}
    ids = np.array([[1, 5, 2, 0]])  # embedding [4, 0]: nearest the moderate centroid
    assert adaptive.route(ids, object()) == ["m/edge"]
    # The edge answered EXIT = 1 (int64 bytes, as Triton sends them): it was easy.
    adaptive.observe(ids, "m/edge", np.array([[1]], dtype=np.int64).tobytes())
    assert adaptive.pools.centroids[EASY].tolist() == [2.0, 0.0]
    with pytest.raises(ValueError, match="tiers"):
        TierRouter(PoolRouter(centroids, np.array([1, 1, 1]), "adaptive"), table, [], paths)


def test_the_policy_modes_are_the_routers_modes_and_nothing_else() -> None:
    for mode in ROUTER_MODES:
        Dimee(mode=mode)
    with pytest.raises(ValidationError):
        Dimee.model_validate({"mode": "dynamic"})
    with pytest.raises(ValueError, match="unknown DIMEE mode"):
        PoolRouter(np.zeros((3, 2)), np.ones(3), "dynamic")  # type: ignore[arg-type]
