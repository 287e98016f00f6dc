"""The CoDE experiments turn a catalog into the rows of results/code.json consistently."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from braid.api.catalog import PathCatalog
from braid.policy.cost import Load
from braid.tooling.experiments import (
    ExperimentConfig,
    adaptive_exits,
    carry_measured_heavy,
    pareto_front,
    run_experiments,
    with_measured_heavy,
)

from .test_catalog_schema import sample


def entry(doc: dict[str, Any], pid: str, kind: str, **metrics: Any) -> dict[str, Any]:
    e = copy.deepcopy(doc["paths"][0])
    e["id"], e["kind"] = pid, kind
    e["metrics"].update(metrics)
    return e


@pytest.fixture
def catalog() -> PathCatalog:
    doc = sample()
    original = doc["paths"][0]
    original["metrics"].update(
        accuracy=0.92, params_local=172_000, compute_us_local=400.0, macs_local=5_700_000
    )
    cross = doc["paths"][1]
    cross["metrics"].update(
        accuracy=0.905,
        params_local=75_000,
        params_host=30_000,
        compute_us_local=80.0,
        compute_us_host=300.0,
        macs_local=200_000,
    )
    doc["baseline_accuracy"] = 0.92
    doc["paths"].append(
        entry(
            doc,
            "fmnist-cnn/exit/4",
            "exit",
            accuracy=0.915,
            params_local=100_000,
            compute_us_local=390.0,
            macs_local=5_500_000,
        )
    )
    doc["paths"][-1]["exit_profile"] = [
        # threshold, exit rate, accuracy, expected local µs
        {"confidence": 0.5, "exit_rate": 0.9, "accuracy": 0.89, "compute_us_local": 100.0},
        {"confidence": 0.7, "exit_rate": 0.7, "accuracy": 0.905, "compute_us_local": 150.0},
        {"confidence": 0.9, "exit_rate": 0.4, "accuracy": 0.919, "compute_us_local": 250.0},
    ]
    return PathCatalog.model_validate(doc)


def test_rows_have_the_required_fields_and_consistent_numbers(catalog: PathCatalog) -> None:
    results = run_experiments(catalog)
    for name in ("balanced", "heavy"):
        row = results[name]
        for key in (
            "path",
            "accuracy",
            "accuracy_drop_pt",
            "local_compute_cut_pct",
            "modelled_latency_ratio",
        ):
            assert key in row
        chosen = catalog.path(row["path"]).metrics
        assert row["accuracy_drop_pt"] == pytest.approx(100 * (0.92 - chosen.accuracy), abs=0.01)
        assert row["local_compute_cut_pct"] == pytest.approx(
            100 * (1 - chosen.compute_us_local / 400.0), abs=0.1
        )
        assert row["modelled_latency_ratio"] == pytest.approx(
            row["latency_us"] / row["original_latency_us"], abs=1e-3
        )


def test_heavy_load_offloads_and_balanced_does_not(catalog: PathCatalog) -> None:
    results = run_experiments(catalog)
    # Balanced: the exit saves 72 k parameters (0.72) for 0.5 pt (e^0.2 - 1 = 0.22) and wins;
    # the cross path saves 67 k for 1.5 pt (e^0.6 - 1 = 0.82) and loses.
    assert results["balanced"]["path"] == "fmnist-cnn/exit/4"
    # Heavy (local x10, c_l x1000): local time dominates and the cross path wins.
    assert results["heavy"]["path"] == "fmnist-cnn/cross/0-mnist-cnn:1-1-5/normal"
    assert results["heavy"]["modelled_latency_ratio"] < 0.7
    assert results["heavy"]["targets_met"] is True
    assert results["balanced"]["targets_met"] is False  # cut of 2.5 % < 75 %


def test_scenarios_are_configurable(catalog: PathCatalog) -> None:
    cfg = ExperimentConfig()
    idle = type(cfg.scenarios[0])("balanced", Load(0.0, 0.0))
    results = run_experiments(catalog, ExperimentConfig(scenarios=(idle,)))
    assert "heavy" not in results
    assert results["balanced"]["load"] == {"local": 0.0, "host": 0.0}


def test_pareto_front_is_monotone(catalog: PathCatalog) -> None:
    front = pareto_front(catalog)
    cuts = [f["local_compute_cut_pct"] for f in front]
    accs = [f["accuracy"] for f in front]
    assert cuts == sorted(cuts)
    assert accs == sorted(accs, reverse=True)


def test_adaptive_exit_picks_the_cheapest_threshold_within_the_drop(catalog: PathCatalog) -> None:
    (row,) = adaptive_exits(catalog, max_drop_pt=2.0)
    # 0.5 loses 3 pt; 0.7 loses 1.5 pt at 150 µs (62.5 % below the original's 400 µs).
    assert row["confidence"] == 0.7
    assert row["expected_local_compute_cut_pct"] == 62.5
    assert adaptive_exits(catalog, max_drop_pt=0.5)[0]["confidence"] == 0.9


def _measured(p50_ratio: float) -> dict[str, Any]:
    """The part of a bench/heavy_latency.py report the results file reads."""
    return {"p50_ratio": {"median": p50_ratio, "ci95_low": p50_ratio - 0.1, "ci95_high": 0.9}}


def test_a_measured_heavy_ratio_decides_the_heavy_target(catalog: PathCatalog) -> None:
    results = run_experiments(catalog)
    assert results["heavy"]["latency_target_judged_on"] == "modelled_latency_ratio"
    slower = with_measured_heavy(results, _measured(0.8))["heavy"]
    assert slower["measured_latency_ratio"] == 0.8
    assert slower["measured_latency_ratio_ci95"] == [pytest.approx(0.7), 0.9]
    assert slower["modelled_latency_ratio"] == results["heavy"]["modelled_latency_ratio"]
    assert slower["latency_target_judged_on"] == "measured_latency_ratio"
    assert slower["targets_met"] is False  # the modelled ratio met it; the measured does not
    assert with_measured_heavy(results, _measured(0.5))["heavy"]["targets_met"] is True


def test_a_rebuild_keeps_the_measurement_only_while_it_is_current(catalog: PathCatalog) -> None:
    results = {"build_hash": "abc", **run_experiments(catalog)}
    earlier = with_measured_heavy(results, _measured(0.8))
    assert carry_measured_heavy(earlier, results) == earlier
    rebuilt = {**results, "build_hash": "def"}
    assert "measured" not in carry_measured_heavy(earlier, rebuilt)["heavy"]
    other_choice = {**results, "heavy": {**results["heavy"], "path": "fmnist-cnn/original"}}
    assert "measured" not in carry_measured_heavy(earlier, other_choice)["heavy"]
