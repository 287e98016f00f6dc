"""The paper's bandit baselines, pure: AdaEE and I-SplitEE on a mobile/cloud split.

Both are edge-cloud co-inference methods: the device (here the mobile tier, the paper's
reading: "they require all the samples to be processed on the mobile device before
offloading") runs the backbone up to a split layer ``s`` and checks that exit's confidence;
a sample whose ``C_s`` reaches α leaves there, any other is offloaded to the cloud, which
answers from the last layer. Cost, in DIMEE's structure: ``λ_m·s`` on the device, plus
``o_c + γ`` when offloaded.

Each learns online, label-free, with UCB1 over its arms and the reward of the DIMEE paper's
eq. 2 restricted to two tiers: ``C_s − λ_m·s`` for an exit, ``C_L − λ_m·s − o_c − γ`` for
an offload (both methods' own rewards have this shape: confidence gained against cost).

- **AdaEE** learns the threshold α (arms: an α grid) at a fixed split layer ``s``;
- **I-SplitEE** learns the split layer ``s`` (arms: 1..L) at a fixed α.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from braid.policy.dimee import Array, CostModel


@dataclass
class UCB1:
    """UCB1 over ``arms``: play each once, then the highest ``mean + c·sqrt(ln t / n)``."""

    arms: int
    exploration: float = 1.0
    counts: Array = field(init=False)
    sums: Array = field(init=False)

    def __post_init__(self) -> None:
        self.counts = np.zeros(self.arms)
        self.sums = np.zeros(self.arms)

    def select(self) -> int:
        untried = np.flatnonzero(self.counts == 0)
        if len(untried):
            return int(untried[0])
        t = self.counts.sum()
        index = self.sums / self.counts + self.exploration * np.sqrt(math.log(t) / self.counts)
        return int(np.argmax(index))

    def update(self, arm: int, reward: float) -> None:
        self.counts[arm] += 1
        self.sums[arm] += reward


@dataclass(frozen=True)
class SplitOutcome:
    """Per sample: the layer it was answered from, whether it was offloaded, its cost (in
    the reward's units), and the arm the bandit played."""

    exit_at: Array
    offloaded: Array
    cost: Array
    arm: Array


def _split_step(
    conf: Array, t: int, split: int, alpha: float, costs: CostModel
) -> tuple[int, bool, float, float]:
    layers = conf.shape[1]
    offloaded = split < layers and bool(conf[t, split - 1] < alpha)
    device = costs.lambda_mobile * split
    if offloaded:
        cost = device + costs.offload_cloud + costs.cloud_charge
        return layers, True, cost, float(conf[t, -1]) - cost
    return split, False, device, float(conf[t, split - 1]) - device


def _run(conf: Array, plays: Sequence[tuple[int, float]], exploration: float,
         costs: CostModel) -> SplitOutcome:  # fmt: skip
    n = len(conf)
    bandit = UCB1(len(plays), exploration)
    exit_at = np.zeros(n, dtype=np.int64)
    offloaded = np.zeros(n, dtype=bool)
    cost = np.zeros(n)
    arm = np.zeros(n, dtype=np.int64)
    for t in range(n):  # the samples arrive one at a time, in order
        a = bandit.select()
        split, alpha = plays[a]
        exit_at[t], offloaded[t], cost[t], reward = _split_step(conf, t, split, alpha, costs)
        bandit.update(a, reward)
        arm[t] = a
    return SplitOutcome(exit_at, offloaded, cost, arm)


def adaee(conf: Array, split: int, alphas: Sequence[float], costs: CostModel,
          exploration: float = 1.0) -> SplitOutcome:  # fmt: skip
    """AdaEE: the split layer fixed, UCB1 over the thresholds ``alphas``."""
    return _run(conf, [(split, float(a)) for a in alphas], exploration, costs)


def isplitee(conf: Array, alpha: float, costs: CostModel,
             exploration: float = 1.0) -> SplitOutcome:  # fmt: skip
    """I-SplitEE: α fixed, UCB1 over the split layers 1..L."""
    layers = conf.shape[1]
    return _run(conf, [(s, alpha) for s in range(1, layers + 1)], exploration, costs)


__all__ = ["UCB1", "SplitOutcome", "adaee", "isplitee"]
