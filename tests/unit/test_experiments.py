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
    pareto_front,
    run_experiments,
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
            "latency_ratio",
        ):
            assert key in row
        chosen = catalog.path(row["path"]).metrics
        assert row["accuracy_drop_pt"] == pytest.approx(100 * (0.92 - chosen.accuracy), abs=0.01)
        assert row["local_compute_cut_pct"] == pytest.approx(
            100 * (1 - chosen.compute_us_local / 400.0), abs=0.1
        )
        assert row["latency_ratio"] == pytest.approx(
            row["latency_us"] / row["original_latency_us"], abs=1e-3
        )


def test_heavy_load_offloads_and_balanced_does_not(catalog: PathCatalog) -> None:
    results = run_experiments(catalog)
    # Balanced: the exit saves 72 k parameters (0.72) for 0.5 pt (e^0.2 - 1 = 0.22) and wins;
    # the cross path saves 67 k for 1.5 pt (e^0.6 - 1 = 0.82) and loses.
    assert results["balanced"]["path"] == "fmnist-cnn/exit/4"
    # Heavy (local x10, c_l x1000): local time dominates and the cross path wins.
    assert results["heavy"]["path"] == "fmnist-cnn/cross/0-mnist-cnn:1-1-5/normal"
    assert results["heavy"]["latency_ratio"] < 0.7
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
