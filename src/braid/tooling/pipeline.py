"""``braid models build`` end to end: build, export, experiments, plots, results."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from braid.logs import log_event
from braid.tooling.build import PROFILES, BuildConfig, BuildResult, build, models_cache_dir
from braid.tooling.experiments import ExperimentConfig, carry_measured_heavy, run_experiments
from braid.tooling.export import export_repository, models_in_catalog
from braid.tooling.progress import Progress

logger = logging.getLogger(__name__)


KEPT_SECTIONS = ("architectures", "paper_setting", "paper_setting_full")
"""Sections of the results file that other tools write (bench/architectures.py,
bench/paper_setting.py) and a build keeps."""


@dataclass
class PipelineOutput:
    out: Path
    result: BuildResult
    cached: bool
    models: list[str]
    results: dict[str, Any]
    plots: list[Path]
    seconds: float


def run_pipeline(
    config: BuildConfig | str,
    out: Path,
    *,
    results_path: Path | None = None,
    plots_dir: Path | None = None,
    cache_dir: Path | None = None,
    progress: Progress | None = None,
    experiments: ExperimentConfig | None = None,
) -> PipelineOutput:
    """Build (or reuse) everything, export the Triton repository, run CoDE's experiments.

    ``results_path`` / ``plots_dir`` are written only when given. ``build_seconds`` in the
    results is the wall time of the run that trained and measured (kept with the cached
    artifacts), so a second, cached run does not overwrite it with its own few seconds.
    """
    started = time.monotonic()
    cfg = PROFILES[config] if isinstance(config, str) else config
    cache = cache_dir if cache_dir is not None else models_cache_dir()
    progress = progress or Progress()
    result = build(cfg, cache_dir=cache, progress=progress)
    step = progress.stage("export Triton repository", len(models_in_catalog(result.catalog)))
    models = export_repository(result, out, on_model=step)
    progress.done("export Triton repository")
    results = run_experiments(result.catalog, experiments)
    plots: list[Path] = []
    if plots_dir is not None:
        from braid.tooling.plots import plot_all

        plots = plot_all(result.catalog, results, plots_dir)
    seconds = time.monotonic() - started
    stamp = cache / f"build-{result.build_hash}.json"
    if result.cached and stamp.is_file():
        build_seconds = float(json.loads(stamp.read_text())["build_seconds"])
    else:
        build_seconds = seconds
        stamp.write_text(json.dumps({"build_seconds": round(seconds, 1)}))
    # Only what the artifacts determine goes into the file, so a cached rerun rewrites it
    # byte for byte; this run's own time and cache use are in the PipelineOutput.
    summary: dict[str, Any] = {
        "schema_version": 1,
        "profile": cfg.profile,
        "build_hash": result.build_hash,
        "baseline_accuracy": round(result.catalog.baseline_accuracy, 4),
        "paths_evaluated": len(result.catalog.paths),
        "triton_models": len(models),
        "build_seconds": round(build_seconds, 1),
        **results,
    }
    if results_path is not None and results_path.is_file():
        # Sections other tools write into the same file (bench/architectures.py) stay.
        earlier = json.loads(results_path.read_text())
        summary.update({k: earlier[k] for k in KEPT_SECTIONS if k in earlier})
        # So does the heavy ratio bench/heavy_latency.py measured, while it is still current.
        summary = carry_measured_heavy(earlier, summary)
    if results_path is not None:
        results_path.parent.mkdir(parents=True, exist_ok=True)
        results_path.write_text(json.dumps(summary, indent=2) + "\n")
    log_event(
        logger,
        "models.build.done",
        profile=cfg.profile,
        paths=len(result.catalog.paths),
        models=len(models),
        seconds=f"{seconds:.1f}",
        cached=result.cached,
    )
    return PipelineOutput(out, result, result.cached, models, summary, plots, seconds)
