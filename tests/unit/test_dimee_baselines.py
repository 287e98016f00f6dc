"""The paper's bandit baselines (AdaEE, I-SplitEE), pure: UCB1, costs, what they learn."""

from __future__ import annotations

import numpy as np
import pytest

from braid.policy.dimee import CostModel
from braid.policy.dimee_baselines import UCB1, adaee, isplitee

pytestmark = pytest.mark.unit

COSTS = CostModel()


def test_ucb1_tries_every_arm_then_settles_on_the_best() -> None:
    bandit = UCB1(3, exploration=0.5)
    rewards = [0.1, 0.9, 0.5]
    played = []
    for _ in range(300):
        arm = bandit.select()
        played.append(arm)
        bandit.update(arm, rewards[arm])
    assert played[:3] == [0, 1, 2]
    assert played[-50:].count(1) > 45


def test_a_confident_split_exits_on_the_device_and_an_unconfident_one_is_offloaded() -> None:
    conf = np.array([[0.99] * 6, [0.6] * 5 + [0.99]])
    out = adaee(conf, split=2, alphas=[0.9], costs=COSTS)
    assert out.exit_at.tolist() == [2, 6]
    assert out.offloaded.tolist() == [False, True]
    device = COSTS.lambda_mobile * 2
    np.testing.assert_allclose(
        out.cost, [device, device + COSTS.offload_cloud + COSTS.cloud_charge]
    )


def test_isplitee_learns_an_early_split_when_the_first_exit_is_confident() -> None:
    conf = np.full((400, 6), 0.99)
    out = isplitee(conf, alpha=0.9, costs=COSTS)
    assert out.arm[:6].tolist() == [0, 1, 2, 3, 4, 5]  # each split layer once
    # then split 1 most: the cheapest for the same confidence
    assert np.bincount(out.arm[-200:], minlength=6).argmax() == 0
    assert not out.offloaded.any()


def test_adaee_learns_a_low_threshold_when_offloading_gains_no_confidence() -> None:
    rng = np.random.default_rng(0)
    conf = np.full((500, 6), 0.95)
    conf[:, 1] = rng.uniform(0.5, 1.0, 500)  # the split exit's confidence varies
    alphas = [0.5, 0.75, 1.0]
    out = adaee(conf, split=2, alphas=alphas, costs=COSTS)
    # Offloading costs 0.4 and gains at most 0.45 confidence: exiting always pays more.
    assert np.bincount(out.arm[-200:], minlength=3).argmax() == 0
