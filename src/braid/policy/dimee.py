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
means) but no files or sockets: the gateway loads the pools artifact and hands arrays in,
and hands back each tier's ``EXIT`` output for Ours-D's feedback.
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


RouterMode = Literal["fixed", "adaptive", "adaptive-routed"]
"""How the centroids move while serving (the OffloadPolicy's ``dimee.mode``):

- ``fixed`` (Ours-F): never;
- ``adaptive`` (Ours-D, the paper's: "the average is recalculated based on the incoming
  sample's complexity"): after the tier answered, the centroid of the pool the sample turned
  out to be in (``observed_pool``, from the exits the tier ran) moves towards it;
- ``adaptive-routed`` (a variant, no feedback needed): the centroid the sample was sent to
  moves towards it when it is routed. Under drift it drags every centroid towards the new
  inputs whatever their difficulty, which costs more and helps less (``results/dimee.json``).
"""
ROUTER_MODES: tuple[RouterMode, ...] = ("fixed", "adaptive", "adaptive-routed")


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


def pool_of_exit(exit_layer: int, tiers: Tiers) -> int:
    """Pool of a sample whose first exit reaching α is ``exit_layer`` (1-based; 0: none),
    as ``difficulty_pools`` decides it: easy by ``m``, moderate by ``n``, hard otherwise."""
    if 1 <= exit_layer <= tiers.mobile:
        return EASY
    if tiers.mobile < exit_layer <= tiers.edge:
        return MODERATE
    return HARD


def reached_exits(conf: Array, alpha: float, depth: int) -> Array:
    """What a tier model of ``depth`` layers returns as ``EXIT``: the first layer up to
    ``depth`` whose confidence reaches ``alpha``, or 0 when none does."""
    window = conf[:, :depth] >= alpha
    out: Array = np.where(window.any(axis=1), 1 + np.argmax(window, axis=1), 0)
    return out


@dataclass
class PoolRouter:
    """Nearest-centroid tier choice; the centroids move as ``mode`` says (``RouterMode``).

    A moving centroid is a running mean whose count starts at ``min(pool size,
    prior_count)``: the validation pool counts as at most ``prior_count`` samples, so the
    centroids can follow a drifting input distribution instead of being pinned by thousands
    of validation samples. An empty pool's centroid (NaN) is never nearest; feedback that a
    sample belongs there makes that sample its centroid.

    Every method is synchronous and the gateway calls them on its event loop, so each
    update is atomic with respect to other requests; the order of updates is the order in
    which the tiers answer (the order of the requests, when they are sent one at a time).
    """

    centroids: Array
    counts: Array
    mode: RouterMode = "fixed"
    prior_count: int = 100
    _weights: Array = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.mode not in ROUTER_MODES:
            raise ValueError(f"unknown DIMEE mode {self.mode!r}, expected one of {ROUTER_MODES}")
        self.centroids = np.array(self.centroids, dtype=np.float64, copy=True)
        self._weights = np.minimum(np.asarray(self.counts, dtype=np.float64), self.prior_count)

    @property
    def feedback(self) -> bool:
        """Whether the router wants to hear where each sample turned out to exit."""
        return self.mode == "adaptive"

    def move(self, pool: int, embedding: Array) -> None:
        """One more sample in ``pool``: its running mean moves towards ``embedding``."""
        self._weights[pool] += 1.0
        if np.isnan(self.centroids[pool]).any():
            self.centroids[pool] = embedding
        else:
            self.centroids[pool] += (embedding - self.centroids[pool]) / self._weights[pool]

    def assign(self, embeddings: Array) -> Array:
        """Pool (= tier index) of each sample, in order (``adaptive-routed`` moves as it goes)."""
        out = np.empty(len(embeddings), dtype=np.int64)
        for i, e in enumerate(np.asarray(embeddings, dtype=np.float64)):
            k = nearest(self.centroids, e)
            out[i] = k
            if self.mode == "adaptive-routed":
                self.move(k, e)
        return out

    def observe(self, tier: int, exit_layers: Array, embeddings: Array, tiers: Tiers) -> None:
        """Feedback (``adaptive`` only): samples served by ``tier`` whose first exit reaching
        α was ``exit_layers`` (the tier model's ``EXIT``; 0: none within the tier)."""
        if not self.feedback:
            return
        for layer, e in zip(
            np.asarray(exit_layers).reshape(-1).tolist(),
            np.asarray(embeddings, dtype=np.float64),
            strict=True,
        ):
            self.move(observed_pool(tier, pool_of_exit(int(layer), tiers)), e)

    def assign_with_feedback(
        self, embeddings: Array, conf: Array, alpha: float, tiers: Tiers
    ) -> Array:
        """Offline Ours-D: route each sample, then feed back what its tier saw, in order.

        ``conf`` holds every exit's confidence (``[N, L]``); the tier of depth ``d`` sees
        ``reached_exits(conf, alpha, d)``, exactly what its Triton model returns as ``EXIT``.
        """
        out = np.empty(len(embeddings), dtype=np.int64)
        seen = {k: reached_exits(conf, alpha, tiers.depth(k)) for k in range(3)}
        for i, e in enumerate(np.asarray(embeddings, dtype=np.float64)):
            k = self.assign(e[None, :])[0]
            out[i] = k
            self.observe(int(k), seen[int(k)][i : i + 1], e[None, :], tiers)
        return out


@dataclass
class TierRouter:
    """The gateway's ``SampleRouter`` for DIMEE: token ids in, one tier path id per sample.

    ``paths`` maps each tier to its path id in the catalog. The embedding is the cheap one
    (a gather of word-embedding rows), so the work per sample is ``O(T·d)`` plus three
    distances: cheap enough for the event loop. In ``adaptive`` mode it also takes the
    tiers' feedback: ``feedback_outputs`` names, per path, the extra output its Triton model
    returns (``EXIT``), and ``observe`` moves the centroids by it once the tier answered
    (the embedding is computed again there: cheaper than keeping it per request).
    """

    pools: PoolRouter
    word_embeddings: Array
    special_ids: Sequence[int]
    paths: Mapping[str, str]
    tiers: Tiers | None = None
    """The tier depths ``observe`` needs; ``adaptive`` mode cannot do without them."""
    exit_output: str = "EXIT"
    _tier_of_path: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.pools.feedback and self.tiers is None:
            raise ValueError("adaptive (feedback) mode needs the tiers' depths")
        self._tier_of_path = {path: TIERS.index(tier) for tier, path in self.paths.items()}

    @property
    def feedback_outputs(self) -> Mapping[str, str]:
        """Path id -> name of the extra output to bring back from it (none unless adaptive)."""
        if not self.pools.feedback:
            return {}
        return {path: self.exit_output for path in self.paths.values()}

    def route(self, inputs: Array, table: object) -> list[str]:
        emb = cheap_embedding(inputs, self.word_embeddings, self.special_ids)
        return [self.paths[TIERS[k]] for k in self.pools.assign(emb)]

    def observe(self, inputs: Array, path: str, side: bytes) -> None:
        """``inputs`` (the samples ``path`` served, in request order) exited where ``side``
        (the tier model's ``EXIT``, raw INT64 as Triton sends it) says."""
        tier = self._tier_of_path.get(path)
        if tier is None or self.tiers is None:
            return
        exits = np.frombuffer(side, dtype=np.int64)
        if len(exits) != len(inputs):
            raise ValueError(f"{path}: {len(exits)} exits for {len(inputs)} samples")
        emb = cheap_embedding(inputs, self.word_embeddings, self.special_ids)
        self.pools.observe(tier, exits, emb, self.tiers)


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
