"""Every candidate path's F(p) and feasibility in one round, as array arithmetic. Pure.

The controller prices every candidate path of its model each round. A Python loop over the
catalog's pydantic entries cost ~16 µs a path (160 ms for 10,000); here the catalog is
compiled once into arrays (``compile_catalog``, cached by identity: the controller keeps one
catalog object for its lifetime) and a round is a few dozen numpy operations over them.

The rule is the one ``braid.policy.load_model`` and ``braid.policy.cost`` state and
``braid.policy.feasibility`` explains, computed with the same floating-point operations in the
same order (sums start at 0.0 and add hop by hop, eq. 1's terms add in the order
``cost_terms`` lists them, the accuracy term uses ``math.exp``), so a cost here is the scalar
cost to the bit; ``tests/unit/test_pricing.py`` checks that against the scalar reference on
random catalogs. Ties are ``cost.choose_path``'s: costs equal after ``round(·, 9)``, then
latency, then local parameters, then the path id.

Only the few assessments someone reads become ``PathAssessment`` objects (``Assessments``
builds them on access), so a round over 10,000 paths allocates no per-path Python objects.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import overload

import numpy as np
import numpy.typing as npt

from braid.api.catalog import Hop, PathCatalog
from braid.api.v1alpha1.offloadpolicy import InfeasibleReason, OffloadPolicySpec
from braid.policy.cost import Load, loaded_coefficients
from braid.policy.feasibility import SATURATED, after_costing, before_costing
from braid.policy.load_model import (
    RHO_CLIP,
    ControlSettings,
    Metrics,
    TierMetrics,
    background_utilisation,
    hop_wait_us,
    modelled_hop_us,
    utilisation,
)

Array = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

TIERS = ("local", "host")
"""A hop's server, as an index: 0 local, 1 host (``braid.api.catalog.Server``)."""

FEASIBLE, HOST_NOT_ALLOWED, METRICS_MISSING, TIER_SATURATED, OVER_LATENCY_BOUND = range(5)
REASONS: tuple[InfeasibleReason | None, ...] = (
    None,
    "HostNotAllowed",
    "MetricsMissing",
    "TierSaturated",
    "OverLatencyBound",
)
_ROUND_EXACT_BELOW = 1e3
"""``np.round(x, 9)`` is Python's ``round(x, 9)`` for |x| < 1e3 away from a .5 boundary
(x * 1e9 is then exact to 1e-4); other costs are rounded by Python, one by one."""
_ROUND_SAME_ABOVE = 2.0**24
"""From here a double's spacing exceeds 1e-9, so ``round(x, 9) == x``."""


@dataclass(frozen=True)
class CompiledCatalog:
    """A catalog's static figures as arrays, one row per path (catalog order)."""

    catalog: PathCatalog
    ids: tuple[str, ...]
    index: Mapping[str, int]
    id_rank: IntArray
    """Position of each id in lexicographic order (the last tie-break)."""
    accuracy: Array
    params_local_m: Array
    params_host_m: Array
    idle_local_us: Array
    idle_host_us: Array
    tier_mask: IntArray
    """Bit 0: the path runs on the local tier; bit 1: on the host tier."""
    host_model: IntArray
    """Index into ``host_models``; -1 for a path without a host model."""
    host_models: tuple[str, ...]
    crossing_path: IntArray
    crossing_bytes: Array
    hop_cell: IntArray
    """``2 * path + tier`` of each hop, in catalog and hop order (a bincount's bins)."""
    hop_tier: IntArray
    hop_compute_us: Array
    hop_model: IntArray
    """Index into ``models`` of each hop's Triton model."""
    hop_key: IntArray
    """Index into ``keys``: a hop's (tier, Triton model)."""
    models: tuple[str, ...]
    keys: tuple[tuple[str, str], ...]
    catalog_us: Mapping[str, float]
    """Catalog compute time per Triton model (the last hop that names it, as ``calibration``)."""
    first_hops: tuple[Hop, ...]
    """Each Triton model's first hop in catalog order (what ``hop_overhead_us`` reads)."""
    _policies: dict[int, tuple[OffloadPolicySpec, PolicyView]] = field(
        default_factory=dict, compare=False, repr=False
    )

    def view(self, policy: OffloadPolicySpec) -> PolicyView:
        """The candidates and static terms ``policy`` gives this catalog (cached per policy)."""
        cached = self._policies.get(id(policy))
        if cached is not None and cached[0] is policy:
            return cached[1]
        if len(self._policies) >= _CACHE_SIZE:
            self._policies.pop(next(iter(self._policies)))
        made = _policy_view(self, policy)
        self._policies[id(policy)] = (policy, made)
        return made


@dataclass(frozen=True)
class PolicyView:
    """What a policy fixes for a catalog: its candidates, allowed hosts and accuracy term."""

    candidates: IntArray
    """Catalog rows of the candidate paths, in catalog order."""
    is_candidate: BoolArray
    host_ok: BoolArray
    accuracy_term: Array
    """``e^{a (L_A - A_p)}`` per catalog row (``math.exp``, as ``cost_terms``)."""


_CACHE_SIZE = 16
_compiled: dict[int, CompiledCatalog] = {}


def compile_catalog(catalog: PathCatalog) -> CompiledCatalog:
    """``catalog`` as arrays; the last few catalogs are cached by identity (they are frozen)."""
    cached = _compiled.get(id(catalog))
    if cached is not None and cached.catalog is catalog:
        return cached
    if len(_compiled) >= _CACHE_SIZE:
        _compiled.pop(next(iter(_compiled)))
    made = _compile(catalog)
    _compiled[id(catalog)] = made
    return made


def _compile(catalog: PathCatalog) -> CompiledCatalog:
    paths = catalog.paths
    ids = tuple(p.id for p in paths)
    if len(set(ids)) != len(ids):
        raise ValueError("path ids must be unique")
    rank = np.empty(len(ids), dtype=np.int64)
    rank[sorted(range(len(ids)), key=ids.__getitem__)] = np.arange(len(ids))
    host_models = tuple(dict.fromkeys(p.host_model for p in paths if p.host_model is not None))
    host_index = {m: i for i, m in enumerate(host_models)}
    models: dict[str, int] = {}
    keys: dict[tuple[str, str], int] = {}
    catalog_us: dict[str, float] = {}
    first: dict[str, Hop] = {}
    cell, tier, compute, model, key = [], [], [], [], []
    crossing_path, crossing_bytes = [], []
    tier_mask = []
    for row, entry in enumerate(paths):
        mask = 0
        for hop in entry.hops:
            t = TIERS.index(hop.server)
            mask |= 1 << t
            first.setdefault(hop.triton_model, hop)
            catalog_us[hop.triton_model] = hop.compute_us
            cell.append(2 * row + t)
            tier.append(t)
            compute.append(hop.compute_us)
            model.append(models.setdefault(hop.triton_model, len(models)))
            key.append(keys.setdefault((hop.server, hop.triton_model), len(keys)))
        tier_mask.append(mask)
        for c in entry.crossings:
            crossing_path.append(row)
            crossing_bytes.append(float(c.bytes))

    def floats(values: Sequence[float]) -> Array:
        return np.array(values, dtype=np.float64)

    def ints(values: Sequence[int]) -> IntArray:
        return np.array(values, dtype=np.int64)

    return CompiledCatalog(
        catalog=catalog,
        ids=ids,
        index={p: i for i, p in enumerate(ids)},
        id_rank=rank,
        accuracy=floats([p.metrics.accuracy for p in paths]),
        params_local_m=floats([p.metrics.params_local / 1e6 for p in paths]),
        params_host_m=floats([p.metrics.params_host / 1e6 for p in paths]),
        idle_local_us=floats([p.metrics.compute_us_local for p in paths]),
        idle_host_us=floats([p.metrics.compute_us_host for p in paths]),
        tier_mask=ints(tier_mask),
        host_model=ints([host_index.get(p.host_model or "", -1) for p in paths]),
        host_models=host_models,
        crossing_path=ints(crossing_path),
        crossing_bytes=floats(crossing_bytes),
        hop_cell=ints(cell),
        hop_tier=ints(tier),
        hop_compute_us=floats(compute),
        hop_model=ints(model),
        hop_key=ints(key),
        models=tuple(models),
        keys=tuple(keys),
        catalog_us=catalog_us,
        first_hops=tuple(first.values()),
    )


def _policy_view(compiled: CompiledCatalog, policy: OffloadPolicySpec) -> PolicyView:
    catalog = compiled.catalog
    if policy.all_paths or not policy.candidate_paths:
        is_candidate = np.ones(len(compiled.ids), dtype=np.bool_)
    else:
        wanted = {*policy.candidate_paths, catalog.original_path}
        is_candidate = np.array([p in wanted for p in compiled.ids], dtype=np.bool_)
    allowed = [
        any(h.model is None or h.model == m for h in policy.allowed_hosts)
        for m in compiled.host_models
    ]
    host_ok = np.append(np.array(allowed, dtype=np.bool_), True)[compiled.host_model]
    a, baseline = policy.cost.a, catalog.baseline_accuracy
    exponent = (a * (baseline - compiled.accuracy)).tolist()
    return PolicyView(
        candidates=np.flatnonzero(is_candidate).astype(np.int64),
        is_candidate=is_candidate,
        host_ok=host_ok,
        accuracy_term=np.array([math.exp(x) for x in exponent], dtype=np.float64),
    )


def round_costs(cost: Array) -> Array:
    """``round(c, 9)`` of every cost, as Python rounds it (see ``_ROUND_EXACT_BELOW``)."""
    scaled = cost * 1e9
    out: Array = np.rint(scaled) / 1e9
    frac = np.abs(scaled - np.floor(scaled) - 0.5)
    magnitude = np.abs(cost)
    odd = ((magnitude >= _ROUND_EXACT_BELOW) | (frac < 1e-3)) & ~(magnitude >= _ROUND_SAME_ABOVE)
    out[magnitude >= _ROUND_SAME_ABOVE] = cost[magnitude >= _ROUND_SAME_ABOVE]
    where = np.flatnonzero(odd)
    if where.size:
        out[where] = [round(c, 9) for c in cost[where].tolist()]
    return out


@dataclass(frozen=True)
class Priced:
    """One round's prices over a catalog's candidates (arrays indexed by catalog row)."""

    compiled: CompiledCatalog
    policy: OffloadPolicySpec
    candidates: IntArray
    is_candidate: BoolArray
    priced: BoolArray
    """Has a cost: every candidate but those on an unmeasured tier."""
    reason: IntArray
    """``FEASIBLE`` or the first reason (``REASONS``) that rules the path out."""
    cost: Array
    terms: tuple[Array, Array, Array, Array, Array, Array]
    """Eq. 1's terms in ``cost_terms``' order."""
    t_local_us: Array
    t_host_us: Array
    latency_us: Array
    load: Load
    background: Mapping[str, float]
    measured_tiers: frozenset[str]

    @property
    def feasible(self) -> BoolArray:
        ok: BoolArray = self.reason == FEASIBLE
        return ok

    def ranked_choice(self) -> RankedPaths | None:
        """The paths eq. 2 ranks for the split, best first; ``None`` when nothing feasible wins.

        Eq. 2's pool is the original and the paths strictly cheaper than it; the original
        stays in it even when infeasible (it is the fallback). The winner is the best-ranked
        pool member within ``L_T``: when that is a feasible path, the feasible pool members
        follow it in rank order; when it is not (the original, saturated), none is chosen.
        """
        rounded, is_original, eq2_pool = self._eq2_pool()
        feasible = self.feasible & self.priced
        pool = eq2_pool & (feasible | is_original)
        eligible = np.flatnonzero(pool & (self.latency_us <= float(self.bound_us)))
        if eligible.size == 0:
            return None
        cheapest = eligible[rounded[eligible] == rounded[eligible].min()]
        best = int(cheapest[self.order(cheapest, rounded)[0]])
        if not feasible[best]:
            return None
        members = np.flatnonzero(pool & feasible).astype(np.int64)
        return RankedPaths(self, best, members, rounded)

    def best_effort(self) -> int | None:
        """When no path of eq. 2's pool meets ``L_T``: the pool's path with the lowest
        modelled latency (``cost.choose_path``'s best effort), among the paths only the bound
        rules out; ``None`` when a pool path meets the bound, or the original itself is ruled
        out for another reason (a saturated tier: nothing then runs better than the fallback).

        Under a load no path carries within the bound, holding the original, the slowest
        path, saturates it further; the fastest path is the one that sheds load.
        """
        rounded, is_original, eq2_pool = self._eq2_pool()
        runnable = self.priced & ((self.reason == FEASIBLE) | (self.reason == OVER_LATENCY_BOUND))
        if not runnable[is_original].all():
            return None
        pool = eq2_pool & runnable
        rows = np.flatnonzero(pool)
        if (self.latency_us[rows] <= float(self.bound_us)).any():
            return None
        fastest = rows[self.latency_us[rows] == self.latency_us[rows].min()]
        return int(fastest[self.order(fastest, rounded)[0]])

    def _eq2_pool(self) -> tuple[Array, BoolArray, BoolArray]:
        """Rounded costs, the original's mask, and eq. 2's pool: the priced paths strictly
        cheaper than the original, and the original."""
        original = self.compiled.index[self.compiled.catalog.original_path]
        rounded = round_costs(self.cost)
        is_original = np.zeros(len(self.cost), dtype=np.bool_)
        is_original[original] = True
        pool: BoolArray = self.priced & ((rounded < rounded[original]) | is_original)
        return rounded, is_original, pool

    @property
    def bound_us(self) -> float:
        return float(self.policy.latency_bound_microseconds)

    def order(self, rows: IntArray, rounded: Array) -> IntArray:
        """Positions that sort ``rows`` by eq. 2's rank: cost, latency, local params, id."""
        c = self.compiled
        keys = (c.id_rank[rows], c.params_local_m[rows], self.latency_us[rows], rounded[rows])
        order: IntArray = np.lexsort(keys).astype(np.int64)
        return order


def price_paths(
    catalog: PathCatalog,
    metrics: Metrics,
    policy: OffloadPolicySpec,
    settings: ControlSettings,
    scale: Mapping[str, float],
) -> Priced:
    """Every candidate's loaded figures, F(p) and feasibility under ``metrics`` (see module)."""
    c = compile_catalog(catalog)
    view = c.view(policy)
    n = len(c.ids)
    rho = utilisation(metrics, settings)
    measured = frozenset(metrics.tiers)
    measured_mask = sum(1 << i for i, t in enumerate(TIERS) if t in measured)
    candidate = view.is_candidate
    missing = (c.tier_mask & ~measured_mask) != 0
    priced = candidate & (~missing | ~view.host_ok)
    load = Load(
        local=min(max(rho.get("local", 0.0), 0.0), RHO_CLIP),
        host=min(max(rho.get("host", 0.0), 0.0), RHO_CLIP),
    )
    if not priced.any():
        load = Load()

    t_local, t_host = _loaded_times(c, metrics, settings, scale, load)
    network = metrics.network
    per_crossing = network.rtt_us + c.crossing_bytes * 8.0 / network.bandwidth_mbit_s
    t_comm: Array = np.bincount(c.crossing_path, weights=per_crossing, minlength=n).astype(
        np.float64
    )
    latency = t_local + t_host + t_comm

    k = loaded_coefficients(policy.cost, load.local_factor, load.host_factor)
    terms = (
        view.accuracy_term,
        k.b * t_comm,
        k.c_local * t_local,
        k.c_host * t_host,
        k.d_local * c.params_local_m,
        k.d_host * c.params_host_m,
    )
    cost = terms[0] + terms[1] + terms[2] + terms[3] + terms[4] + terms[5]

    background = background_of(c, candidate, metrics, settings, scale)
    saturated_mask = sum(1 << i for i, t in enumerate(TIERS) if background.get(t, 0.0) >= SATURATED)
    reason = np.full(n, FEASIBLE, dtype=np.int64)
    bound = float(policy.latency_bound_microseconds)
    reason[latency > bound] = OVER_LATENCY_BOUND
    reason[(c.tier_mask & saturated_mask) != 0] = TIER_SATURATED
    reason[missing] = METRICS_MISSING
    reason[~view.host_ok] = HOST_NOT_ALLOWED
    return Priced(
        compiled=c,
        policy=policy,
        candidates=view.candidates,
        is_candidate=view.is_candidate,
        priced=priced,
        reason=reason,
        cost=cost,
        terms=terms,
        t_local_us=t_local,
        t_host_us=t_host,
        latency_us=latency,
        load=load,
        background=background,
        measured_tiers=measured,
    )


def _loaded_times(
    c: CompiledCatalog,
    metrics: Metrics,
    settings: ControlSettings,
    scale: Mapping[str, float],
    load: Load,
) -> tuple[Array, Array]:
    """``load_model.loaded_figures``' local and host times of every path, hop sums in order."""
    n = len(c.ids)

    def per_path(hop_values: Array) -> tuple[Array, Array]:
        summed = np.bincount(c.hop_cell, weights=hop_values, minlength=2 * n)
        sums: Array = summed.astype(np.float64).reshape(n, 2)
        return sums[:, 0], sums[:, 1]

    def waits() -> Array:
        per_key = [hop_wait_us(metrics.tiers.get(t), m, settings) for t, m in c.keys]
        return np.array(per_key, dtype=np.float64)[c.hop_key]

    if metrics.hop_us:
        overhead = hop_overhead(c, metrics, scale, settings)
        tier_scale = np.array([scale.get(t, 1.0) for t in TIERS])[c.hop_tier]
        tier_overhead = np.array([overhead.get(t, 0.0) for t in TIERS])[c.hop_tier]
        modelled = c.hop_compute_us * tier_scale + waits() + tier_overhead
        seen = np.array([m in metrics.hop_us for m in c.models], dtype=np.bool_)[c.hop_model]
        observed = np.array([metrics.hop_us.get(m, 0.0) for m in c.models])[c.hop_model]
        return per_path(np.where(seen, observed, modelled))
    work_l, work_h = tier_work(c, scale)
    t_local, t_host = work_l * 1e6, work_h * 1e6
    if not any(m.model_busy for m in metrics.tiers.values()):
        return t_local * load.local_factor, t_host * load.host_factor
    wait_l, wait_h = per_path(waits() / 1e6)
    return t_local + wait_l * 1e6, t_host + wait_h * 1e6


def tier_work(c: CompiledCatalog, scale: Mapping[str, float]) -> tuple[Array, Array]:
    """Seconds of service one request of each path needs on each tier (hop sums in order)."""
    n = len(c.ids)
    factor = np.array([scale.get(t, 1.0) if scale else 1.0 for t in TIERS])[c.hop_tier]
    summed = np.bincount(c.hop_cell, weights=c.hop_compute_us * factor / 1e6, minlength=2 * n)
    sums: Array = summed.astype(np.float64).reshape(n, 2)
    return sums[:, 0], sums[:, 1]


def hop_overhead(
    c: CompiledCatalog, metrics: Metrics, scale: Mapping[str, float], settings: ControlSettings
) -> dict[str, float]:
    """``load_model.hop_overhead_us`` over each Triton model's first hop in catalog order."""
    seen: dict[str, list[float]] = {}
    for hop in c.first_hops:
        observed = metrics.hop_us.get(hop.triton_model)
        if observed is None:
            continue
        extra = observed - modelled_hop_us(hop, metrics, scale, settings)
        seen.setdefault(hop.server, []).append(max(extra, 0.0))
    return {tier: sum(v) / len(v) for tier, v in seen.items()}


def background_of(
    c: CompiledCatalog,
    among: BoolArray,
    metrics: Metrics,
    settings: ControlSettings,
    scale: Mapping[str, float] | None,
) -> dict[str, float]:
    """``load_model.background_utilisation`` with the routed paths limited to rows ``among``."""
    entries = [
        c.catalog.paths[i]
        for i in (c.index.get(p) for p in metrics.path_rps)
        if i is not None and among[i]
    ]
    return background_utilisation(entries, metrics, settings, scale)


@dataclass(frozen=True)
class PathAssessment:
    """One candidate as this round saw it: F(p), its terms, and whether it may be chosen.

    ``cost`` is None only for a path without metrics; ``stretch`` is, per tier, the loaded
    compute time over the catalog's idle one (the queueing the cost was priced with).
    """

    id: str
    cost: float | None
    feasible: bool
    latency_us: float | None
    terms: Mapping[str, float]
    reason: InfeasibleReason | None = None
    message: str | None = None
    stretch: Mapping[str, float] = field(default_factory=dict)


def calibrate(c: CompiledCatalog, tiers: Mapping[str, TierMetrics]) -> dict[str, float]:
    """``load_model.calibration`` from the compiled catalog's compute time per model."""
    out: dict[str, float] = {}
    for tier, m in tiers.items():
        pairs = [
            (us, c.catalog_us[name]) for name, us in m.compute_us.items() if name in c.catalog_us
        ]
        measured = sum(us for us, _ in pairs)
        expected = sum(e for _, e in pairs)
        out[tier] = measured / expected if measured > 0 and expected > 0 else 1.0
    return out


class Assessments(Sequence[PathAssessment]):
    """A round's ``PathAssessment``s, built when read: the priced in catalog order, then
    the unpriced (as the decision has always listed them)."""

    def __init__(self, priced: Priced) -> None:
        self._p = priced
        cands = priced.candidates
        on = priced.priced[cands]
        self._rows: IntArray = np.concatenate([cands[on], cands[~on]]).astype(np.int64)
        self._position: dict[str, int] | None = None

    def __len__(self) -> int:
        return len(self._rows)

    @overload
    def __getitem__(self, i: int) -> PathAssessment: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[PathAssessment]: ...
    def __getitem__(self, i: int | slice) -> PathAssessment | Sequence[PathAssessment]:
        if isinstance(i, slice):
            return tuple(self._build(int(r)) for r in self._rows[i])
        return self._build(int(self._rows[i]))

    def __iter__(self) -> Iterator[PathAssessment]:
        return (self._build(int(r)) for r in self._rows)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence):
            return NotImplemented
        return tuple(self) == tuple(other)

    __hash__ = None  # type: ignore[assignment]

    def get(self, path_id: str) -> PathAssessment | None:
        row = self._p.compiled.index.get(path_id)
        if row is None or not self._p.is_candidate[row]:
            return None
        return self._build(row)

    def _build(self, row: int) -> PathAssessment:
        p, c = self._p, self._p.compiled
        entry = c.catalog.paths[row]
        path_id = c.ids[row]
        if not p.priced[row]:
            why = before_costing(entry, p.policy, set(p.measured_tiers))
            assert why is not None
            return PathAssessment(path_id, None, False, None, {}, why.reason, why.message)
        terms = dict(zip(_TERM_NAMES, (float(t[row]) for t in p.terms), strict=True))
        latency = float(p.latency_us[row])
        reason = REASONS[int(p.reason[row])]
        message = None
        if reason is not None:
            # The words are feasibility's; which reason applies was decided above, as arrays.
            why = before_costing(entry, p.policy, set(p.measured_tiers)) or after_costing(
                entry, latency, p.bound_us, p.background
            )
            message = why.message if why else None
        stretch = {
            tier: float(loaded[row]) / float(base[row])
            for tier, loaded, base in (
                ("local", p.t_local_us, c.idle_local_us),
                ("host", p.t_host_us, c.idle_host_us),
            )
            if base[row] > 0
        }
        return PathAssessment(
            id=path_id,
            cost=float(p.cost[row]),
            feasible=reason is None,
            latency_us=latency,
            terms=terms,
            reason=reason,
            message=message,
            stretch=stretch,
        )


_TERM_NAMES = (
    "accuracy",
    "communication",
    "local_compute",
    "host_compute",
    "local_params",
    "host_params",
)


class RankedPaths:
    """Eq. 2's feasible pool: the best path, and the others ranked only when a split needs
    them (it mostly ends at the first; sorting 10,000 paths would be most of a round)."""

    def __init__(self, priced: Priced, best: int, members: IntArray, rounded: Array) -> None:
        self._priced, self._rounded = priced, rounded
        self.best, self.members = best, members

    @property
    def compiled(self) -> CompiledCatalog:
        return self._priced.compiled

    def tier_work_s(self, scale: Mapping[str, float]) -> tuple[Array, Array]:
        """``load_model.tier_work_s`` of every catalog row: local and host seconds."""
        return tier_work(self._priced.compiled, scale)

    def ranked(self, rows: IntArray) -> IntArray:
        """``rows`` (some of the members) in rank order."""
        ordered: IntArray = rows[self._priced.order(rows, self._rounded)]
        return ordered
