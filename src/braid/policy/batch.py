"""``choose_paths`` for many providers at once, as array arithmetic.

One controller per cluster may decide for thousands of providers each round; a Python loop
over pydantic objects costs tens of µs per path, which at 10,000 paths is most of a second.
This module is the same rule — eq. 1 with load-stretched times and load-following prices,
eq. 2's candidate pool (the original and the paths strictly cheaper than it), the L_T
fallback to the original, the cost margin and the dwell — over ``(providers, paths)`` arrays.
Column 0 is each provider's original path. Splits are left to ``choose_paths`` (they need
the routed rates of a single provider); the unit tests check both agree on the single path.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from braid.api.v1alpha1.offloadpolicy import CostCoefficients
from braid.policy.decision import RHO_CLIP

Array = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class PathArrays:
    """Per provider and path (shape ``(P, K)``), in ``braid.policy.cost``'s units."""

    accuracy: Array
    t_local_us: Array
    t_host_us: Array
    t_comm_us: Array
    params_local_m: Array
    params_host_m: Array
    baseline_accuracy: Array
    """Shape ``(P,)``: L_A per provider."""
    latency_bound_us: Array
    """Shape ``(P,)``: L_T per provider."""


@dataclass(frozen=True)
class BatchState:
    """Active path index and since when, per provider (shape ``(P,)``); -1: none yet."""

    active: IntArray
    since: Array


def batch_costs(
    paths: PathArrays, rho_local: Array, rho_host: Array, k: CostCoefficients
) -> tuple[Array, Array]:
    """F(p) and the expected latency of every path under the measured utilisations."""
    f_l = (1.0 / (1.0 - np.clip(rho_local, 0.0, RHO_CLIP)))[:, None]
    f_h = (1.0 / (1.0 - np.clip(rho_host, 0.0, RHO_CLIP)))[:, None]
    t_l = paths.t_local_us * f_l
    t_h = paths.t_host_us * f_h
    cost = (
        np.exp(k.a * (paths.baseline_accuracy[:, None] - paths.accuracy))
        + k.b * paths.t_comm_us
        + (k.c_local * f_l) * t_l
        + (k.c_host * f_h) * t_h
        + k.d_local * paths.params_local_m
        + k.d_host * paths.params_host_m
    )
    return cost, t_l + t_h + paths.t_comm_us


def choose_paths_batch(
    paths: PathArrays,
    rho_local: Array,
    rho_host: Array,
    coefficients: CostCoefficients,
    state: BatchState,
    now: float,
    cost_margin: float,
    min_dwell_s: float,
) -> BatchState:
    """One round for every provider; returns the next state (changed rows get ``since=now``)."""
    cost, latency = batch_costs(paths, rho_local, rho_host, coefficients)
    rounded = np.round(cost, 9)
    feasible = latency <= paths.latency_bound_us[:, None]
    pool = rounded < rounded[:, :1]
    pool[:, 0] = True
    eligible = pool & feasible
    # Ties as in braid.policy.cost: cost, then latency (argmin takes the first of equals).
    key = np.where(eligible, rounded + latency * 1e-15, np.inf)
    best = np.argmin(key, axis=1)
    best = np.where(eligible.any(axis=1), best, 0)
    rows = np.arange(cost.shape[0])
    current = np.where(state.active >= 0, state.active, best)
    cur_cost = cost[rows, current]
    margin_ok = (cost[rows, best] <= (1.0 - cost_margin) * cur_cost) | ~feasible[rows, current]
    dwelt = (now - state.since) >= min_dwell_s
    first = state.active < 0
    change = first | ((best != current) & margin_ok & dwelt)
    return BatchState(
        active=np.where(change, best, current).astype(np.int64),
        since=np.where(change, now, state.since),
    )
