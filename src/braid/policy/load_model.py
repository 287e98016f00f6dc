"""The controller's model of load: measured busy times in, a path's loaded figures out. Pure.

How measured load becomes CoDE's terms (units of ``braid.policy.cost``):

- a tier's utilisation ``ρ`` is its Triton servers' busy time per second
  (``rate(nv_inference_compute_infer_duration_us)``) over its ``capacity`` (concurrent
  executions it sustains, e.g. cores), clipped below 1;
- a path's expected ``T_cp`` on a tier is the sum of its hops' catalog service times there,
  scaled by the tier's calibration (measured / catalog compute of the models that saw
  traffic, see ``calibration``), plus the time it queues: each hop's own M/D/1 wait from its
  model's measured utilisation and execution time (``hop_wait_us``), or, when the servers
  report no per-model figures, CoDE's tier-wide M/M/1 stretch ``1 / (1 - ρ)``;
- prices follow the load too: ``c_l`` and ``c_h`` are multiplied by the same factors, so an
  idle tier's time is nearly free and a saturated tier's time dominates F(p).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from braid.api.catalog import Hop, PathCatalog, PathEntry
from braid.policy.cost import Load, Network, PathFigures, figures_from_entry, under_load

RHO_CLIP = 0.95
"""Utilisation used for the M/M/1 stretch is clipped here: beyond it the model says nothing."""


@dataclass(frozen=True)
class TierMetrics:
    """One tier's servers as measured over the last window."""

    busy: float
    """Busy executions per second of wall time: Σ compute µs per second / 1e6."""
    compute_us: Mapping[str, float] = field(default_factory=dict)
    """Measured mean compute time per inference by Triton model (models with traffic);
    used to calibrate the catalog's times, never as a path's time on its own."""
    model_busy: Mapping[str, float] = field(default_factory=dict)
    """Busy executions per second of wall time by Triton model (its instance's utilisation)."""
    exec_us: Mapping[str, float] = field(default_factory=dict)
    """Mean compute time per execution by Triton model: a batch of 64 from another tenant
    is one execution, and it is what a request arriving behind it waits for."""


@dataclass(frozen=True)
class Metrics:
    """What the controller measured at ``at`` (seconds since the epoch)."""

    at: float
    tiers: Mapping[str, TierMetrics] = field(default_factory=dict)
    """By server role (local, host); a tier absent here is unmeasured."""
    path_rps: Mapping[str, float] = field(default_factory=dict)
    """Requests per second the gateway routed to each path of the model."""
    network: Network = field(default_factory=Network)
    hop_us: Mapping[str, float] = field(default_factory=dict)
    """Mean time of one call to each Triton model as the gateway saw it (models it called
    in the window): queueing, compute, the server's scheduling and the transport, measured."""

    @property
    def offered_rps(self) -> float:
        return sum(self.path_rps.values())


@dataclass(frozen=True)
class ControlSettings:
    """Knobs of the controller that are not part of the policy's spec."""

    capacity: Mapping[str, float] = field(default_factory=lambda: {"local": 1.0, "host": 1.0})
    """Concurrent executions each tier sustains (its ρ is busy / capacity)."""
    max_utilisation: float = 0.8
    """A tier the chosen path would push past this gets a split."""
    smoothing: float = 0.5
    """Weight of a *falling* busy-time measurement in its running mean (1: no smoothing).

    The queueing stretch and the load-following prices both grow like ``1 / (1 - ρ)``, so
    scrape-to-scrape noise in ``ρ`` near saturation swings F(p) by more than any sensible
    cost margin; averaging ``ρ`` over a few rounds is what keeps a steady load steady.
    """
    attack: float = 1.0
    """Weight of a *rising* measurement. Like the HPA's scale-up / scale-down asymmetry: a
    load step is believed at once (a saturated tier hurts every request until the switch),
    a drop only after a few rounds, so the smoothed ``ρ`` follows the peaks of a noisy
    steady load rather than its troughs and the decision holds still."""
    model_instances: float = 1.0
    """Instances per Triton model: a model's utilisation is its busy time over this."""
    step_threshold: float = 0.25
    """A load step: some tier's utilisation rose this much since the active split was
    decided. The split was chosen for a lighter load, so the dwell is waived until a round
    re-decides (the cost margin still applies); the dwell holds a steady load still.

    Only a rise waives it. A fall is often the split's own doing (a path with fewer blocks
    takes load off the tier it leaves): waiving the dwell then let the controller swing back
    to a dearer path, whose load brought the step back, and so on (two flaps in 35 s when
    the provider's own traffic was the load). A fall only moves the reference level, so
    the next rise is measured from where the load now is."""


def calibration(catalog: PathCatalog, tiers: Mapping[str, TierMetrics]) -> dict[str, float]:
    """Per tier: measured over catalog compute time of the models that saw traffic.

    Served times differ from the build's bare-model medians (the server's overhead, CPU
    contention), but by a factor common to a tier's models. Scaling every hop's catalog time
    by it keeps paths comparable: using measured times only for the hops that carry traffic
    would make every path the gateway does not use look cheap, and the controller would
    chase them back and forth.
    """
    catalog_us: dict[str, float] = {}
    for entry in catalog.paths:
        for hop in entry.hops:
            catalog_us[hop.triton_model] = hop.compute_us
    out: dict[str, float] = {}
    for tier, m in tiers.items():
        pairs = [(us, catalog_us[name]) for name, us in m.compute_us.items() if name in catalog_us]
        measured = sum(us for us, _ in pairs)
        expected = sum(c for _, c in pairs)
        out[tier] = measured / expected if measured > 0 and expected > 0 else 1.0
    return out


def hop_wait_us(tier: TierMetrics | None, model: str, settings: ControlSettings) -> float:
    """Expected wait in ``model``'s queue: M/D/1, ``ρ S / (2 (1 - ρ))``.

    ``S`` is the model's mean execution time and ``ρ`` its instance's utilisation, both
    measured. A request queues behind whatever the model is executing for anyone (another
    tenant's batch included), so a path through models nobody else uses (a skip or a link
    model) waits for nothing even on a busy tier: the tier-wide M/M/1 stretch misses that.
    """
    if tier is None:
        return 0.0
    exec_us = tier.exec_us.get(model, 0.0)
    rho = min(max(tier.model_busy.get(model, 0.0) / settings.model_instances, 0.0), RHO_CLIP)
    return rho * exec_us / (2.0 * (1.0 - rho)) if exec_us > 0 else 0.0


def queueing_s(
    entry: PathEntry, metrics: Metrics, settings: ControlSettings
) -> dict[str, float] | None:
    """Seconds ``entry`` waits in queues on each tier, or ``None`` without per-model metrics."""
    if not any(m.model_busy for m in metrics.tiers.values()):
        return None
    waits: dict[str, float] = {}
    for hop in entry.hops:
        wait = hop_wait_us(metrics.tiers.get(hop.server), hop.triton_model, settings)
        waits[hop.server] = waits.get(hop.server, 0.0) + wait / 1e6
    return waits


def tier_work_s(entry: PathEntry, scale: Mapping[str, float] | None = None) -> dict[str, float]:
    """Seconds of service one request of ``entry`` needs on each tier (catalog x calibration)."""
    work: dict[str, float] = {}
    for hop in entry.hops:
        factor = scale.get(hop.server, 1.0) if scale else 1.0
        work[hop.server] = work.get(hop.server, 0.0) + hop.compute_us * factor / 1e6
    return work


def utilisation(metrics: Metrics, settings: ControlSettings) -> dict[str, float]:
    return {
        tier: m.busy / max(settings.capacity.get(tier, 1.0), 1e-9)
        for tier, m in metrics.tiers.items()
    }


def modelled_hop_us(
    hop: Hop, metrics: Metrics, scale: Mapping[str, float], settings: ControlSettings
) -> float:
    """A call's time from the model alone: calibrated compute plus the M/D/1 wait."""
    compute = hop.compute_us * scale.get(hop.server, 1.0)
    return compute + hop_wait_us(metrics.tiers.get(hop.server), hop.triton_model, settings)


def hop_overhead_us(
    catalog: PathCatalog, metrics: Metrics, scale: Mapping[str, float], settings: ControlSettings
) -> dict[str, float]:
    """Per tier: what an observed call took beyond its modelled time, averaged over the
    models the gateway called. It is what every call pays and the model does not see: the
    gRPC round trip, and on a busy machine the wait for a CPU to run the model's process.
    A hop nobody calls yet is priced at its modelled time plus its tier's overhead."""
    seen: dict[str, list[float]] = {}
    done: set[str] = set()
    for entry in catalog.paths:
        for hop in entry.hops:
            observed = metrics.hop_us.get(hop.triton_model)
            if observed is None or hop.triton_model in done:
                continue
            done.add(hop.triton_model)
            extra = observed - modelled_hop_us(hop, metrics, scale, settings)
            seen.setdefault(hop.server, []).append(max(extra, 0.0))
    return {tier: sum(v) / len(v) for tier, v in seen.items()}


def loaded_figures(
    entry: PathEntry,
    metrics: Metrics,
    rho: Mapping[str, float],
    scale: Mapping[str, float],
    settings: ControlSettings,
    overhead: Mapping[str, float],
    base: PathFigures | None = None,
) -> tuple[PathFigures, Load]:
    """The path's loaded figures: calibrated service time plus the time spent queueing.

    When the gateway reports its calls, each hop costs what its calls took (a hop not called
    yet: its modelled time plus its tier's ``overhead``); else, with per-model Triton
    metrics, calibrated compute plus each hop's own M/D/1 wait (``hop_wait_us``); with
    neither, the tier-wide M/M/1 stretch of CoDE's model (``under_load``).
    """
    base = base or figures_from_entry(entry, metrics.network)
    load = Load(
        local=min(max(rho.get("local", 0.0), 0.0), RHO_CLIP),
        host=min(max(rho.get("host", 0.0), 0.0), RHO_CLIP),
    )
    if metrics.hop_us:
        times: dict[str, float] = {}
        for hop in entry.hops:
            observed = metrics.hop_us.get(hop.triton_model)
            t = (
                observed
                if observed is not None
                else modelled_hop_us(hop, metrics, scale, settings) + overhead.get(hop.server, 0.0)
            )
            times[hop.server] = times.get(hop.server, 0.0) + t
        return replace(
            base, t_local_us=times.get("local", 0.0), t_host_us=times.get("host", 0.0)
        ), load
    work = tier_work_s(entry, scale)
    waits = queueing_s(entry, metrics, settings)
    measured = replace(
        base,
        t_local_us=work.get("local", 0.0) * 1e6,
        t_host_us=work.get("host", 0.0) * 1e6,
    )
    if waits is None:
        return under_load(measured, load), load
    return replace(
        measured,
        t_local_us=measured.t_local_us + waits.get("local", 0.0) * 1e6,
        t_host_us=measured.t_host_us + waits.get("host", 0.0) * 1e6,
    ), load


def background_utilisation(
    entries: Sequence[PathEntry],
    metrics: Metrics,
    settings: ControlSettings,
    scale: Mapping[str, float] | None = None,
) -> dict[str, float]:
    """Per tier: its utilisation without the traffic the gateway routed to ``entries``."""
    rho = utilisation(metrics, settings)
    routed: dict[str, float] = {}
    for path_id, rps in metrics.path_rps.items():
        entry = next((e for e in entries if e.id == path_id), None)
        if entry is None:
            continue
        for tier, seconds in tier_work_s(entry, scale).items():
            routed[tier] = routed.get(tier, 0.0) + rps * seconds
    return {
        tier: max(
            rho.get(tier, 0.0) - routed.get(tier, 0.0) / settings.capacity.get(tier, 1.0), 0.0
        )
        for tier in set(rho) | set(routed)
    }
