"""CoDE's path cost (eq. 1) and path choice (eq. 2), as pure functions.

Units, shared with ``braid.api.v1alpha1.offloadpolicy`` and the path catalog:

- accuracy ``A_p`` and ``L_A``: fractions in [0, 1] (0.92, not 92);
- times ``T_cm``, ``T_cp_l``, ``T_cp_h`` and the bound ``L_T``: microseconds;
- parameter counts ``C_l``, ``C_h``: millions of parameters.

With these units the coefficients of the paper's experiment 4 (a=40, c_l=1e-6, c_h=2e-5,
d_l=10, d_h=10) weigh a 1-point accuracy drop (e^0.4 - 1 = 0.49) about like 50 k parameters
(0.5), and make compute time nearly free at the idle prices (1 ms of local time costs 0.001):
time starts to matter when load raises ``c_l`` (see ``loaded_coefficients``).

Load enters twice, both documented here so the controller and the experiments agree:

1. *Times stretch*: a server at utilisation ρ is modelled as an M/M/1 queue, so a request's
   expected time there is its service time times ``1 / (1 - ρ)``; ``under_load`` applies this
   to the local and host compute times of a path.
2. *Prices rise*: the operator can raise ``c_l`` (``c_h``) for a loaded local (host) service;
   ``loaded_coefficients`` does that by a scenario's explicit multipliers.

Choice (eq. 2): minimise F(p) subject to ``T_cp_l + T_cp_h + T_cm <= L_T``, over the original
path and the paths whose cost is strictly below the original's (the paper discards the rest).
Ties are broken deterministically: lower cost first (costs equal after rounding to 9 decimal
places are tied), then lower modelled latency, then fewer local parameters, then the path id
in lexicographic order. When no candidate meets ``L_T`` the one with the lowest latency is
returned with ``within_bound=False`` (best effort; the controller decides what to do with it).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from braid.api.catalog import PathEntry
from braid.api.v1alpha1.offloadpolicy import CostCoefficients

_COST_DECIMALS = 9


@dataclass(frozen=True)
class PathFigures:
    """The numbers eq. 1 and eq. 2 need for one path, in the module's units."""

    path_id: str
    accuracy: float
    t_local_us: float
    t_host_us: float
    t_comm_us: float
    params_local_m: float
    params_host_m: float

    @property
    def latency_us(self) -> float:
        """``T_cp_l + T_cp_h + T_cm``: the left side of eq. 2's constraint."""
        return self.t_local_us + self.t_host_us + self.t_comm_us


@dataclass(frozen=True)
class Load:
    """Utilisation of the local and host services, each in [0, 1)."""

    local: float = 0.0
    host: float = 0.0

    def __post_init__(self) -> None:
        for name, rho in (("local", self.local), ("host", self.host)):
            if not 0.0 <= rho < 1.0:
                raise ValueError(f"{name} utilisation must be in [0, 1), got {rho}")

    @property
    def local_factor(self) -> float:
        """M/M/1 stretch of local times: ``1 / (1 - ρ_l)``."""
        return 1.0 / (1.0 - self.local)

    @property
    def host_factor(self) -> float:
        return 1.0 / (1.0 - self.host)


@dataclass(frozen=True)
class Network:
    """The link between the local and host servers: per-crossing round trip and bandwidth."""

    rtt_us: float = 200.0
    bandwidth_mbit_s: float = 1000.0

    def transfer_us(self, nbytes: int) -> float:
        """Time for one crossing of ``nbytes``: RTT plus serialisation (1 Mbit/s = 1 bit/µs)."""
        return self.rtt_us + nbytes * 8.0 / self.bandwidth_mbit_s


def comm_time_us(crossing_bytes: Iterable[int], network: Network) -> float:
    """``T_cm`` of a path: every crossing pays one transfer."""
    return sum(network.transfer_us(b) for b in crossing_bytes)


def figures_from_entry(entry: PathEntry, network: Network) -> PathFigures:
    """A catalog entry in the cost module's units (unloaded times, parameters in millions)."""
    m = entry.metrics
    return PathFigures(
        path_id=entry.id,
        accuracy=m.accuracy,
        t_local_us=m.compute_us_local,
        t_host_us=m.compute_us_host,
        t_comm_us=comm_time_us((c.bytes for c in entry.crossings), network),
        params_local_m=m.params_local / 1e6,
        params_host_m=m.params_host / 1e6,
    )


def under_load(figures: PathFigures, load: Load) -> PathFigures:
    """The path's figures with compute times stretched by the M/M/1 factors of ``load``."""
    return replace(
        figures,
        t_local_us=figures.t_local_us * load.local_factor,
        t_host_us=figures.t_host_us * load.host_factor,
    )


def loaded_coefficients(
    base: CostCoefficients, local_multiplier: float = 1.0, host_multiplier: float = 1.0
) -> CostCoefficients:
    """``base`` with ``c_l`` and ``c_h`` raised by the given multipliers (>= 0)."""
    if local_multiplier < 0 or host_multiplier < 0:
        raise ValueError("price multipliers must be >= 0")
    return base.model_copy(
        update={
            "c_local": base.c_local * local_multiplier,
            "c_host": base.c_host * host_multiplier,
        }
    )


def cost_terms(
    figures: PathFigures, baseline_accuracy: float, coefficients: CostCoefficients
) -> dict[str, float]:
    """Each term of eq. 1, keyed by name, so a status can show why a path costs what it does."""
    k = coefficients
    return {
        "accuracy": math.exp(k.a * (baseline_accuracy - figures.accuracy)),
        "communication": k.b * figures.t_comm_us,
        "local_compute": k.c_local * figures.t_local_us,
        "host_compute": k.c_host * figures.t_host_us,
        "local_params": k.d_local * figures.params_local_m,
        "host_params": k.d_host * figures.params_host_m,
    }


def path_cost(
    figures: PathFigures, baseline_accuracy: float, coefficients: CostCoefficients
) -> float:
    """CoDE eq. 1: ``e^{a(L_A-A_p)} + b T_cm + c_l T_cp_l + c_h T_cp_h + d_l C_l + d_h C_h``."""
    return sum(cost_terms(figures, baseline_accuracy, coefficients).values())


@dataclass(frozen=True)
class Candidate:
    """One path as the choice saw it."""

    figures: PathFigures
    cost: float
    within_bound: bool
    cheaper_than_original: bool


@dataclass(frozen=True)
class Choice:
    """The outcome of eq. 2 with every candidate, ranked best first."""

    chosen: Candidate
    original: Candidate
    ranked: tuple[Candidate, ...]

    @property
    def path_id(self) -> str:
        return self.chosen.figures.path_id

    @property
    def within_bound(self) -> bool:
        return self.chosen.within_bound


def _rank_key(c: Candidate) -> tuple[float, float, float, str]:
    f = c.figures
    return (round(c.cost, _COST_DECIMALS), f.latency_us, f.params_local_m, f.path_id)


def choose_path(
    paths: Sequence[PathFigures],
    original_id: str,
    baseline_accuracy: float,
    coefficients: CostCoefficients,
    latency_bound_us: float,
) -> Choice:
    """CoDE eq. 2 over ``paths`` (one of which is the original, ``original_id``).

    Candidates are the original and every path strictly cheaper than it; among those within
    ``latency_bound_us`` the lowest cost wins (ties as in the module docstring). With none
    within the bound, the lowest-latency candidate is returned, marked outside the bound.
    """
    ids = [p.path_id for p in paths]
    if len(set(ids)) != len(ids):
        raise ValueError("path ids must be unique")
    by_id = {p.path_id: p for p in paths}
    if original_id not in by_id:
        raise ValueError(f"the original path {original_id!r} is not among the paths")

    def candidate(p: PathFigures, original_cost: float | None) -> Candidate:
        cost = path_cost(p, baseline_accuracy, coefficients)
        cheaper = original_cost is not None and (
            round(cost, _COST_DECIMALS) < round(original_cost, _COST_DECIMALS)
        )
        return Candidate(p, cost, p.latency_us <= latency_bound_us, cheaper)

    original = candidate(by_id[original_id], None)
    others = [candidate(p, original.cost) for p in paths if p.path_id != original_id]
    ranked = tuple(sorted([original, *others], key=_rank_key))
    pool = [original, *(c for c in others if c.cheaper_than_original)]
    feasible = [c for c in pool if c.within_bound]
    if feasible:
        chosen = min(feasible, key=_rank_key)
    else:
        chosen = min(pool, key=lambda c: (c.figures.latency_us, *_rank_key(c)))
    return Choice(chosen=chosen, original=original, ranked=ranked)
