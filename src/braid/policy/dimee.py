"""DIMEE's decisions, pure: the reward, the α grid, difficulty pools, costs, the tier routers.

A multi-exit backbone of ``L`` layers is deployed three ways: its first ``m`` layers on the
mobile (local) tier, the first ``n > m`` on the edge, all of it on the cloud. With a
threshold α on an exit's max-softmax confidence ``C_i``, a sample that would first reach α
at layer ``i`` earns (the paper's eq. 2):

- ``i <= m`` (mobile): ``C_i - λ_m·i``
- ``m < i <= n`` (edge): ``C_i - λ_e·i - o_e``
- otherwise (cloud): ``C_L - o_c - γ``

α is the value of ``alpha_grid`` (ten values from 1/K to 1) with the highest mean reward on
validation data. Validation samples then fall into easy / moderate / hard pools by where
they exit, and the pools' mean cheap embeddings are the centroids a router uses to send a
new sample straight to its tier.

Cost of one sample, in the reward's units (the same structure for every method):

- on mobile, exiting at layer ``i``: ``λ_m·i`` (processing only);
- on the edge, exiting at ``i``: ``o_e + λ_e·i``;
- on the cloud: ``o_c + γ`` (the cloud's processing is what its charge pays for).

**Normalisation:** ``cost_change_pct`` compares a method's mean cost per sample with the
full model on the mobile tier, ``λ_m·L`` (the paper's main baseline: the whole backbone on
the device, processing cost only) = 1.00.

Nothing here does I/O; arrays in, arrays out. The routers keep state (Ours-D's running
means) but no files or sockets: the gateway loads the pools artifact and hands arrays in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

Array = np.ndarray[Any, Any]

TIERS: tuple[str, str, str] = ("mobile", "edge", "cloud")
EASY, MODERATE, HARD = 0, 1, 2
"""Pool indices; pool ``k`` is served by tier ``TIERS[k]``."""
Tier = Literal["mobile", "edge", "cloud"]


@dataclass(frozen=True)
class CostModel:
    """The paper's cost structure; defaults are those of ``OffloadPolicy.spec.dimee``.

    Ratios (edge layer = 1): a mobile layer 2, offloading to the edge 2, to the cloud 6,
    the cloud's per-sample charge 2.
    """

    lambda_mobile: float = 0.1
    lambda_edge: float = 0.05
    offload_edge: float = 0.1
    offload_cloud: float = 0.3
    cloud_charge: float = 0.1


@dataclass(frozen=True)
class Tiers:
    """How many layers each tier runs: mobile ``m``, edge ``n``, cloud all ``layers``."""

    mobile: int
    edge: int
    layers: int

    def __post_init__(self) -> None:
        if not 1 <= self.mobile < self.edge < self.layers:
            raise ValueError(
                f"need 1 <= m < n < L, got m={self.mobile}, n={self.edge}, L={self.layers}"
            )

    def depth(self, tier: int) -> int:
        """Layers the tier runs (``tier`` is 0, 1, 2 for mobile, edge, cloud)."""
        return (self.mobile, self.edge, self.layers)[tier]


# -- exits and the reward -----------------------------------------------------------------------


def softmax(logits: Array) -> Array:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    out: Array = e / e.sum(axis=-1, keepdims=True)
    return out


def confidences(logits: Array) -> Array:
    """Max-softmax confidence ``C_i`` of every exit: ``[N, L, K]`` logits -> ``[N, L]``."""
    out: Array = softmax(logits).max(axis=-1)
    return out


def alpha_grid(classes: int, count: int = 10) -> Array:
    """Thresholds to try: ``count`` equidistant values from 1/K to 1 (below 1/K is moot)."""
    out: Array = np.linspace(1.0 / classes, 1.0, count)
    return out


def first_exit(conf: Array, alpha: float, last: int, first: int = 1) -> Array:
    """1-based layer where each sample leaves: the first in ``[first, last]`` with
    ``C_i >= alpha``, else ``last``."""
    window = conf[:, first - 1 : last] >= alpha
    window[:, -1] = True
    out: Array = first + np.argmax(window, axis=1)
    return out


def rewards(conf: Array, alpha: float, tiers: Tiers, costs: CostModel) -> Array:
    """Each sample's reward for threshold ``alpha`` (eq. 2)."""
    exit_at = first_exit(conf, alpha, tiers.layers)
    c_exit = conf[np.arange(len(conf)), exit_at - 1]
    mobile = c_exit - costs.lambda_mobile * exit_at
    edge = c_exit - costs.lambda_edge * exit_at - costs.offload_edge
    cloud = conf[:, -1] - costs.offload_cloud - costs.cloud_charge
    confident = conf[np.arange(len(conf)), exit_at - 1] >= alpha
    out: Array = np.where(
        confident & (exit_at <= tiers.mobile),
        mobile,
        np.where(confident & (exit_at <= tiers.edge), edge, cloud),
    )
    return out


def expected_reward(conf: Array, alpha: float, tiers: Tiers, costs: CostModel) -> float:
    return float(rewards(conf, alpha, tiers, costs).mean())


def choose_alpha(
    conf: Array, tiers: Tiers, costs: CostModel, grid: Sequence[float] | Array
) -> tuple[float, list[float]]:
    """The α of ``grid`` with the highest expected reward on ``conf``, and every α's reward."""
    values = [expected_reward(conf, float(a), tiers, costs) for a in grid]
    return float(grid[int(np.argmax(values))]), values


def difficulty_pools(conf: Array, alpha: float, tiers: Tiers) -> Array:
    """Pool of each sample: easy (exits by layer m), moderate (by n), hard (Algorithm 1)."""
    exit_at = first_exit(conf, alpha, tiers.layers)
    confident = conf[np.arange(len(conf)), exit_at - 1] >= alpha
    out: Array = np.where(
        confident & (exit_at <= tiers.mobile),
        EASY,
        np.where(confident & (exit_at <= tiers.edge), MODERATE, HARD),
    )
    return out


# -- the cheap embedding and the centroids ---------------------------------------------------------


def cheap_embedding(ids: Array, table: Array, special_ids: Sequence[int] = ()) -> Array:
    """Mean word-embedding row of each sample's tokens (pad and special tokens left out).

    No forward pass: one gather and a mean, ``O(T·d)`` per sample. A sample with no
    ordinary token falls back to all its non-pad tokens.
    """
    ids = np.asarray(ids)
    out = np.zeros((len(ids), table.shape[1]), dtype=np.float32)
    special = np.asarray(sorted(set(special_ids) | {0}), dtype=ids.dtype)
    for start in range(0, len(ids), 512):
        chunk = ids[start : start + 512]
        keep = ~np.isin(chunk, special)
        empty = ~keep.any(axis=1)
        keep[empty] = chunk[empty] != 0
        rows = table[chunk].astype(np.float32)
        weights = keep.astype(np.float32)[..., None]
        out[start : start + 512] = (rows * weights).sum(axis=1) / np.maximum(
            weights.sum(axis=1), 1.0
        )
    return out


def pool_centroids(embeddings: Array, pools: Array) -> tuple[Array, Array]:
    """Mean embedding of each pool ``[3, d]`` and pool sizes; an empty pool's centroid is NaN
    (never nearest)."""
    centroids = np.full((3, embeddings.shape[1]), np.nan, dtype=np.float64)
    counts = np.zeros(3, dtype=np.int64)
    for k in range(3):
        members = embeddings[pools == k]
        counts[k] = len(members)
        if len(members):
            centroids[k] = members.mean(axis=0)
    return centroids, counts


def nearest(centroids: Array, embedding: Array) -> int:
    """Index of the nearest centroid (Euclidean); NaN centroids are skipped."""
    d = ((centroids - embedding[None, :]) ** 2).sum(axis=1)
    return int(np.nanargmin(np.where(np.isnan(d), np.inf, d)))


@dataclass
class PoolRouter:
    """Nearest-centroid tier choice: fixed pools (Ours-F) or running means (Ours-D).

    Ours-D updates the centroid a sample is sent to with that sample's embedding, as a
    running mean whose count starts at ``min(pool size, prior_count)``: the validation pool
    counts as at most ``prior_count`` samples, so the centroids can follow a drifting input
    distribution instead of being pinned by thousands of validation samples.
    """

    centroids: Array
    counts: Array
    adaptive: bool = False
    prior_count: int = 100
    _weights: Array = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.centroids = np.array(self.centroids, dtype=np.float64, copy=True)
        self._weights = np.minimum(np.asarray(self.counts, dtype=np.float64), self.prior_count)

    def assign(self, embeddings: Array) -> Array:
        """Pool (= tier index) of each sample, in order, updating the centroids if adaptive."""
        out = np.empty(len(embeddings), dtype=np.int64)
        for i, e in enumerate(np.asarray(embeddings, dtype=np.float64)):
            k = nearest(self.centroids, e)
            out[i] = k
            if self.adaptive:
                self._weights[k] += 1.0
                self.centroids[k] += (e - self.centroids[k]) / self._weights[k]
        return out


def observed_pool(tier: int, true_pool: int) -> int:
    """The pool a sample turns out to be in, as far as the tier it ran on can tell.

    The edge and the cloud run every exit up to their depth, so they see where the sample
    would have left (the cloud: exactly; the edge: easy, moderate, or not by ``n`` = hard).
    Mobile only sees layers up to ``m``: a sample that did not leave there counts as
    moderate, the next tier up. No labels: only the exits' confidences.
    """
    if tier == EASY and true_pool != EASY:
        return MODERATE
    return true_pool


@dataclass
class FeedbackPoolRouter(PoolRouter):
    """Ours-D with feedback (an offline variant, not in the paper nor the gateway yet).

    Routes like ``PoolRouter`` (fixed between samples), then moves the centroid of the pool
    the sample *turned out* to be in (``observed_pool``) instead of the one it was sent to:
    the centroids follow where each difficulty lies in the drifted inputs, not only where
    the inputs are. Needs the served tier's exit, which the gateway's tier models do not
    return yet, so it is evaluated offline only.
    """

    def assign_with_feedback(self, embeddings: Array, true_pools: Array) -> Array:
        out = np.empty(len(embeddings), dtype=np.int64)
        for i, e in enumerate(np.asarray(embeddings, dtype=np.float64)):
            k = nearest(self.centroids, e)
            out[i] = k
            seen = observed_pool(k, int(true_pools[i]))
            self._weights[seen] += 1.0
            if np.isnan(self.centroids[seen]).any():
                self.centroids[seen] = e
            else:
                self.centroids[seen] += (e - self.centroids[seen]) / self._weights[seen]
        return out


@dataclass
class TierRouter:
    """The gateway's ``SampleRouter`` for DIMEE: token ids in, one tier path id per sample.

    ``paths`` maps each tier to its path id in the catalog. The embedding is the cheap one
    (a gather of word-embedding rows), so the work per sample is ``O(T·d)`` plus three
    distances: cheap enough for the event loop.
    """

    pools: PoolRouter
    word_embeddings: Array
    special_ids: Sequence[int]
    paths: Mapping[str, str]

    def route(self, inputs: Array, table: object) -> list[str]:
        emb = cheap_embedding(inputs, self.word_embeddings, self.special_ids)
        return [self.paths[TIERS[k]] for k in self.pools.assign(emb)]


# -- serving a sample on a tier, and what it costs ------------------------------------------------


def tier_exits(conf: Array, tier_of: Array, alpha: float, tiers: Tiers) -> Array:
    """Layer each sample leaves at on its tier: mobile and edge exit early at α within their
    layers; the cloud answers from the last layer (the reward's ``C_L``)."""
    exit_mobile = first_exit(conf, alpha, tiers.mobile)
    exit_edge = first_exit(conf, alpha, tiers.edge)
    out: Array = np.where(
        tier_of == EASY, exit_mobile, np.where(tier_of == MODERATE, exit_edge, tiers.layers)
    )
    return out


def sample_costs(tier_of: Array, exit_at: Array, costs: CostModel) -> Array:
    """Each sample's cost for the tier it ran on and the layer it left at."""
    out: Array = np.where(
        tier_of == EASY,
        costs.lambda_mobile * exit_at,
        np.where(
            tier_of == MODERATE,
            costs.offload_edge + costs.lambda_edge * exit_at,
            costs.offload_cloud + costs.cloud_charge,
        ),
    )
    return out


def full_model_cost(tiers: Tiers, costs: CostModel) -> float:
    """The reference (cost 1.00): every layer on the mobile tier, processing only."""
    return costs.lambda_mobile * tiers.layers


@dataclass(frozen=True)
class MethodResult:
    name: str
    accuracy: float
    cost: float
    """Mean cost per sample relative to ``full_model_cost`` (1.00 = the full model)."""
    tier_share: tuple[float, float, float]
    mean_exit_layer: float

    @property
    def cost_change_pct(self) -> float:
        return 100.0 * (self.cost - 1.0)


def score(
    name: str,
    predictions: Array,
    labels: Array,
    tier_of: Array,
    exit_at: Array,
    tiers: Tiers,
    costs: CostModel,
) -> MethodResult:
    """Accuracy and normalised cost of one method's per-sample tiers and exits."""
    per_sample = sample_costs(tier_of, exit_at, costs)
    share = tuple(float((tier_of == k).mean()) for k in range(3))
    return MethodResult(
        name=name,
        accuracy=float((predictions == labels).mean()),
        cost=float(per_sample.mean() / full_model_cost(tiers, costs)),
        tier_share=(share[0], share[1], share[2]),
        mean_exit_layer=float(exit_at.mean()),
    )


def predictions_at(logits: Array, exit_at: Array) -> Array:
    """Class predicted by each sample's exit (``exit_at`` is 1-based)."""
    out: Array = logits[np.arange(len(logits)), exit_at - 1].argmax(axis=-1)
    return out
