"""CoDE's experiments on braid's models: balanced load, heavy load, and the link-size study.

Scenarios (documented here and written into ``results/code.json`` with the numbers they
produced, so a reader can re-derive every figure):

- **balanced**: local and host services equally busy (utilisation 0.5 each, which stretches
  both compute times by the M/M/1 factor 2) and the paper's experiment-4 prices
  (a=40, b=1e-6, c_l=1e-6, c_h=2e-5, d_l=10, d_h=10; µs and millions of parameters).
- **heavy**: the local service at utilisation 0.9 (times x10), the host still at 0.5, and
  local compute priced 1000x higher (c_l=1e-3: one millisecond of local compute costs as much
  as 0.1 M local parameters), which is how CoDE says load should enter (Section III-B).

Both scenarios share one latency bound L_T: ``latency_bound_factor`` times the original
path's modelled latency in the balanced scenario, i.e. a fixed service-level objective that
the original path meets at balanced load and can miss under heavy load.

The network between the local and the host server (``Network``: 200 µs round trip per
crossing, 1 Gbit/s) only matters for cross paths.

Reported per scenario: the chosen path, its accuracy and drop (points), the cut of local
compute time relative to the original (measured, unloaded times), and the modelled latency
ratio (chosen path's modelled latency / the original's, both under the scenario's load).
The heavy scenario's ratio is also measured on the running stack under load
(``bench/heavy_latency.py`` adds ``heavy.measured_latency_ratio`` and its interval through
``with_measured_heavy``); where it is there, the heavy target is judged on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from braid.api.catalog import PathCatalog, PathEntry
from braid.api.v1alpha1.offloadpolicy import CostCoefficients
from braid.policy.cost import (
    Choice,
    Load,
    Network,
    PathFigures,
    choose_path,
    cost_terms,
    figures_from_entry,
    loaded_coefficients,
    under_load,
)

TARGETS = {
    "balanced": {"local_compute_cut_pct_min": 75.0, "accuracy_drop_pt_max": 2.0},
    "heavy": {"latency_ratio_max": 0.7, "accuracy_drop_pt_max": 2.0},
}


@dataclass(frozen=True)
class Scenario:
    name: str
    load: Load
    local_price_multiplier: float = 1.0
    host_price_multiplier: float = 1.0
    description: str = ""


@dataclass(frozen=True)
class ExperimentConfig:
    coefficients: CostCoefficients = field(default_factory=CostCoefficients)
    network: Network = field(default_factory=Network)
    latency_bound_factor: float = 2.0
    scenarios: tuple[Scenario, ...] = (
        Scenario(
            "balanced",
            Load(local=0.5, host=0.5),
            description="local and host equally loaded; the paper's experiment-4 prices",
        ),
        Scenario(
            "heavy",
            Load(local=0.9, host=0.5),
            local_price_multiplier=1000.0,
            description="local service at 90% utilisation, local compute priced 1000x",
        ),
    )


def _pct_cut(path: float, original: float) -> float:
    return 100.0 * (1.0 - path / original) if original > 0 else 0.0


def _summary(
    entry: PathEntry,
    chosen_fig: PathFigures,
    original: PathEntry,
    original_fig: PathFigures,
    baseline: float,
) -> dict[str, Any]:
    m, o = entry.metrics, original.metrics
    return {
        "path": entry.id,
        "kind": entry.kind,
        "accuracy": round(m.accuracy, 4),
        "accuracy_drop_pt": round(100.0 * (baseline - m.accuracy), 2),
        "local_compute_cut_pct": round(_pct_cut(m.compute_us_local, o.compute_us_local), 1),
        "local_macs_cut_pct": round(_pct_cut(m.macs_local, o.macs_local), 1),
        "local_params_cut_pct": round(_pct_cut(m.params_local, o.params_local), 1),
        "modelled_latency_ratio": round(chosen_fig.latency_us / original_fig.latency_us, 3),
        "latency_us": round(chosen_fig.latency_us, 1),
        "original_latency_us": round(original_fig.latency_us, 1),
        "params_local": m.params_local,
        "params_host": m.params_host,
    }


def run_scenario(
    catalog: PathCatalog, scenario: Scenario, config: ExperimentConfig, latency_bound_us: float
) -> tuple[Choice, dict[str, Any]]:
    """Eq. 2 under ``scenario``; returns the choice and its row for ``results/code.json``."""
    coeffs = loaded_coefficients(
        config.coefficients, scenario.local_price_multiplier, scenario.host_price_multiplier
    )
    figs = [under_load(figures_from_entry(p, config.network), scenario.load) for p in catalog.paths]
    choice = choose_path(
        figs, catalog.original_path, catalog.baseline_accuracy, coeffs, latency_bound_us
    )
    entry = catalog.path(choice.path_id)
    original = catalog.path(catalog.original_path)
    row = _summary(
        entry, choice.chosen.figures, original, choice.original.figures, catalog.baseline_accuracy
    )
    row.update(
        {
            "cost": round(choice.chosen.cost, 4),
            "original_cost": round(choice.original.cost, 4),
            "within_latency_bound": choice.within_bound,
            "original_within_latency_bound": choice.original.within_bound,
            "latency_bound_us": round(latency_bound_us, 1),
            "cost_terms": {
                k: round(v, 5)
                for k, v in cost_terms(
                    choice.chosen.figures, catalog.baseline_accuracy, coeffs
                ).items()
            },
            "paths_cheaper_than_original": sum(c.cheaper_than_original for c in choice.ranked),
            "load": asdict(scenario.load),
            "coefficients": coeffs.model_dump(),
            "description": scenario.description,
        }
    )
    targets = TARGETS.get(scenario.name, {})
    if targets:
        row["targets"] = targets
        row["targets_met"] = _met(row, targets)
        if "latency_ratio_max" in targets:
            row["latency_target_judged_on"] = _ratio_judged(row)
    return choice, row


def _met(row: dict[str, Any], targets: dict[str, float]) -> bool:
    ok = row["accuracy_drop_pt"] <= targets["accuracy_drop_pt_max"]
    if "local_compute_cut_pct_min" in targets:
        ok = ok and row["local_compute_cut_pct"] >= targets["local_compute_cut_pct_min"]
    if "latency_ratio_max" in targets:
        ok = ok and row[_ratio_judged(row)] <= targets["latency_ratio_max"]
    return bool(ok)


def _ratio_judged(row: dict[str, Any]) -> str:
    """The issue's target is on the measured ratio; the modelled one stands in until then."""
    return "measured_latency_ratio" if "measured_latency_ratio" in row else "modelled_latency_ratio"


MEASURED_HEAVY_KEYS = ("measured_latency_ratio", "measured_latency_ratio_ci95", "measured")
"""What ``bench/heavy_latency.py`` adds to ``heavy``; a rebuild of the same artifacts keeps it."""


def with_measured_heavy(results: dict[str, Any], measured: dict[str, Any]) -> dict[str, Any]:
    """``results`` with the heavy row's measured latency ratio (the median p50 ratio of
    ``measured``, a ``bench/heavy_latency.py`` report) and its target judged on it."""
    p50 = measured["p50_ratio"]
    heavy = {
        **results["heavy"],
        "measured_latency_ratio": p50["median"],
        "measured_latency_ratio_ci95": [p50["ci95_low"], p50["ci95_high"]],
        "measured": measured,
    }
    heavy["targets_met"] = _met(heavy, heavy["targets"])
    heavy["latency_target_judged_on"] = _ratio_judged(heavy)
    return {**results, "heavy": heavy}


def carry_measured_heavy(earlier: dict[str, Any], results: dict[str, Any]) -> dict[str, Any]:
    """A rebuild's ``results`` with ``earlier``'s measurement kept when it measured the same
    build's same heavy path (a changed build or choice makes it stale, so it is dropped)."""
    before = earlier.get("heavy", {})
    same = (
        earlier.get("build_hash") == results.get("build_hash")
        and before.get("path") == results.get("heavy", {}).get("path")
        and "measured" in before
    )
    return with_measured_heavy(results, before["measured"]) if same else results


def pareto_front(catalog: PathCatalog) -> list[dict[str, Any]]:
    """Paths no other path beats on both accuracy and local compute cut (the trade-off)."""
    original = catalog.path(catalog.original_path).metrics
    points = [
        (
            _pct_cut(p.metrics.compute_us_local, original.compute_us_local),
            p.metrics.accuracy,
            p.id,
        )
        for p in catalog.paths
    ]
    points.sort(key=lambda t: (-t[0], -t[1]))
    front: list[dict[str, Any]] = []
    best = -1.0
    for cut, acc, pid in points:
        if acc > best:
            front.append(
                {
                    "path": pid,
                    "local_compute_cut_pct": round(cut, 1),
                    "accuracy": round(acc, 4),
                    "accuracy_drop_pt": round(100 * (catalog.baseline_accuracy - acc), 2),
                }
            )
            best = acc
    front.reverse()
    return front


def link_size_study(catalog: PathCatalog) -> list[dict[str, Any]]:
    """CoDE's Fig. 5a/5b and Fig. 6: each link at normal vs reduced size."""
    rows: dict[str, dict[str, Any]] = {}
    original = catalog.path(catalog.original_path)
    block_params = {h.triton_model: h.params for h in original.hops}
    for p in catalog.paths:
        if p.kind not in ("skip", "cross") or p.link_size is None:
            continue
        key = p.id.rsplit("/", 1)[0]
        link_params = sum(h.params for h in p.hops if h.role == "link")
        row = rows.setdefault(key, {"connection": key, "kind": p.kind})
        if p.kind == "skip" and p.lout is not None and p.lin is not None:
            row["skipped_params"] = sum(
                block_params[h.triton_model] for h in original.hops[p.lout + 1 : p.lin]
            )
        row[p.link_size] = {"accuracy": round(p.metrics.accuracy, 4), "link_params": link_params}
    return list(rows.values())


def best_within(catalog: PathCatalog, min_cut_pct: float) -> dict[str, Any] | None:
    """The most accurate path that cuts local compute by at least ``min_cut_pct``."""
    original = catalog.path(catalog.original_path).metrics
    fits = [
        p
        for p in catalog.paths
        if _pct_cut(p.metrics.compute_us_local, original.compute_us_local) >= min_cut_pct
    ]
    if not fits:
        return None
    p = max(fits, key=lambda e: (e.metrics.accuracy, e.id))
    return {
        "path": p.id,
        "accuracy": round(p.metrics.accuracy, 4),
        "accuracy_drop_pt": round(100 * (catalog.baseline_accuracy - p.metrics.accuracy), 2),
        "local_compute_cut_pct": round(
            _pct_cut(p.metrics.compute_us_local, original.compute_us_local), 1
        ),
    }


def adaptive_exits(catalog: PathCatalog, max_drop_pt: float = 2.0) -> list[dict[str, Any]]:
    """Per exit head, the threshold with the least expected local compute within the drop.

    Adaptive exits are not paths of eq. 2 (their cost depends on each sample); this shows
    what the gateway's exit rules could add on top of the chosen path.
    """
    original = catalog.path(catalog.original_path).metrics.compute_us_local
    rows: list[dict[str, Any]] = []
    for p in catalog.paths:
        fits = [
            e
            for e in p.exit_profile or []
            if 100 * (catalog.baseline_accuracy - e.accuracy) <= max_drop_pt
        ]
        if not fits:
            continue
        best = min(fits, key=lambda e: (e.compute_us_local, -e.accuracy))
        rows.append(
            {
                "path": p.id,
                "confidence": best.confidence,
                "exit_rate": best.exit_rate,
                "accuracy": best.accuracy,
                "accuracy_drop_pt": round(100 * (catalog.baseline_accuracy - best.accuracy), 2),
                "expected_local_compute_cut_pct": round(
                    _pct_cut(best.compute_us_local, original), 1
                ),
            }
        )
    return rows


SWEEP_FACTORS = (1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 10.0)


def latency_bound_sweep(
    catalog: PathCatalog, config: ExperimentConfig, reference_us: float
) -> dict[str, list[dict[str, Any]]]:
    """Each scenario's choice as L_T varies (multiples of the balanced original latency).

    L_T is a service-level objective that an operator sets, not a property of the models, so
    the results show how the choice moves with it instead of one hand-picked value only.
    """
    sweep: dict[str, list[dict[str, Any]]] = {}
    for scenario in config.scenarios:
        rows = []
        for factor in SWEEP_FACTORS:
            _, row = run_scenario(catalog, scenario, config, factor * reference_us)
            rows.append(
                {
                    "latency_bound_factor": factor,
                    **{
                        k: row[k]
                        for k in (
                            "path",
                            "accuracy_drop_pt",
                            "local_compute_cut_pct",
                            "modelled_latency_ratio",
                            "within_latency_bound",
                        )
                    },
                }
            )
        sweep[scenario.name] = rows
    return sweep


def run_experiments(catalog: PathCatalog, config: ExperimentConfig | None = None) -> dict[str, Any]:
    """Every scenario plus the link-size study and the trade-off curve."""
    config = config or ExperimentConfig()
    original = catalog.path(catalog.original_path)
    balanced = next(s for s in config.scenarios if s.name == "balanced")
    ref = under_load(figures_from_entry(original, config.network), balanced.load)
    bound = config.latency_bound_factor * ref.latency_us
    out: dict[str, Any] = {}
    choices: dict[str, Choice] = {}
    for scenario in config.scenarios:
        choice, row = run_scenario(catalog, scenario, config, bound)
        out[scenario.name] = row
        choices[scenario.name] = choice
    out["latency_bound_sweep"] = latency_bound_sweep(catalog, config, ref.latency_us)
    out["network"] = asdict(config.network)
    out["latency_bound_factor"] = config.latency_bound_factor
    out["link_size_study"] = link_size_study(catalog)
    out["pareto_front"] = pareto_front(catalog)
    out["best_path_with_75pct_local_cut"] = best_within(catalog, 75.0)
    out["adaptive_exits_within_2pt"] = adaptive_exits(catalog)
    return out


def chosen_ids(
    results: dict[str, Any], names: Sequence[str] = ("balanced", "heavy")
) -> dict[str, str]:
    return {n: results[n]["path"] for n in names if n in results}
