"""Why a candidate path may not be chosen, as a reason a person can act on. Pure.

A path's cost F(p) says how good it is; whether it may be chosen at all is a separate
question with four answers, checked in this order (the first that applies is reported):

- ``HostNotAllowed``: it runs part of the model on a host the policy does not allow
  (``spec.allowedHosts``; an entry without ``model`` allows every model, as the operator
  reads it when it renders the routing);
- ``MetricsMissing``: a tier it runs on reported nothing this round, so it has no cost;
- ``TierSaturated``: a tier it runs on is busy at or beyond its capacity with work that is
  not this model's (its background), so no share of this model's traffic fits there;
- ``OverLatencyBound``: its modelled latency under the measured load exceeds ``L_T``.

A path that passes all four is feasible; among those, eq. 2 picks the cheapest.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from braid.api.catalog import PathEntry
from braid.api.v1alpha1.offloadpolicy import InfeasibleReason, OffloadPolicySpec

SATURATED = 1.0
"""Background utilisation at which a tier has no room left for this model's traffic."""


@dataclass(frozen=True)
class Infeasible:
    reason: InfeasibleReason
    message: str


def host_allowed(entry: PathEntry, policy: OffloadPolicySpec) -> bool:
    if entry.host_model is None:
        return True
    return any(h.model is None or h.model == entry.host_model for h in policy.allowed_hosts)


def tiers_of(entry: PathEntry) -> list[str]:
    """The tiers ``entry`` runs on, in the order its hops reach them."""
    return list(dict.fromkeys(hop.server for hop in entry.hops))


def before_costing(
    entry: PathEntry, policy: OffloadPolicySpec, measured_tiers: set[str]
) -> Infeasible | None:
    """The reasons that leave a path without a usable cost: not allowed, or unmeasured."""
    if not host_allowed(entry, policy):
        return Infeasible(
            "HostNotAllowed", f"host model {entry.host_model} is not in spec.allowedHosts"
        )
    missing = [t for t in tiers_of(entry) if t not in measured_tiers]
    if missing:
        return Infeasible("MetricsMissing", f"no metrics from tier {', '.join(missing)}")
    return None


def after_costing(
    entry: PathEntry, latency_us: float, bound_us: float, background: Mapping[str, float]
) -> Infeasible | None:
    """The reasons that need the round's load: a saturated tier, or latency over ``L_T``."""
    full = [t for t in tiers_of(entry) if background.get(t, 0.0) >= SATURATED]
    if full:
        busy = ", ".join(f"{t} at rho={background[t]:.2f}" for t in full)
        return Infeasible("TierSaturated", f"saturated without this model's traffic: {busy}")
    if latency_us > bound_us:
        return Infeasible(
            "OverLatencyBound", f"latency {latency_us:.0f} us > L_T {bound_us:.0f} us"
        )
    return None
