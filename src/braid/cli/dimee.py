"""``braid dimee ...``: train the multi-exit MiniLM, evaluate DIMEE routing, export the tiers.

Its own module so torch and transformers load only when a ``dimee`` command runs.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

import typer

dimee_app = typer.Typer(
    help="DIMEE: a multi-exit MiniLM on mobile / edge / cloud, samples routed by difficulty.",
    no_args_is_help=True,
)

QuickOption = Annotated[
    bool,
    typer.Option(
        "--quick", help="The tests' profile: a small training subset, 300 validation sentences."
    ),
]
CacheOption = Annotated[
    Path | None, typer.Option(help="Artifact cache (default <BRAID_CACHE>/dimee).")
]
VerboseOption = Annotated[bool, typer.Option("--verbose", "-v", help="Log each stage.")]
ThreadsOption = Annotated[
    int, typer.Option(help="torch threads (1 is cheaper on a machine shared with other jobs).")
]


def _train(
    quick: bool, cache_dir: Path | None, verbose: bool, seed: int = 0, threads: int = 2
) -> Any:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        TaskID,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.progress import Progress as RichProgress

    from braid.dimee.train import Advance, Progress, train
    from braid.logs import setup_logging
    from braid.tooling.data import DatasetMissingError

    setup_logging(logging.INFO if verbose else logging.WARNING)
    console = Console(stderr=True)
    bar = RichProgress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=console,
    )

    class _Bars(Progress):
        def __init__(self) -> None:
            self.tasks: dict[str, TaskID] = {}

        def stage(self, name: str, total: int) -> Advance:
            task = bar.add_task(name, total=total, info="")
            self.tasks[name] = task

            def advance(n: int, info: str = "") -> None:
                bar.update(task, advance=n, info=info)

            return advance

        def done(self, name: str) -> None:
            task = self.tasks.get(name)
            if task is not None:
                bar.update(task, completed=bar.tasks[task].total)

    try:
        with bar:
            trained = train(
                "quick" if quick else "full",
                seed=seed,
                cache_dir=cache_dir,
                progress=_Bars(),
                threads=threads,
            )
    except DatasetMissingError as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(1) from None
    run = trained.training
    console.print(
        f"[green]trained[/green] {trained.config.profile} profile, seed {seed}, key {trained.key} "
        f"({'cached; ' if trained.cached else ''}this run {trained.seconds:.1f} s wall; "
        f"fine-tuning {run.get('wall_seconds')} s wall, {run.get('cpu_seconds')} s CPU)",
        highlight=False,
    )
    return trained


@dimee_app.command("train")
def dimee_train(
    quick: QuickOption = False,
    cache_dir: CacheOption = None,
    verbose: VerboseOption = False,
    seed: Annotated[int, typer.Option(help="Training seed (subset, order, heads).")] = 0,
    threads: ThreadsOption = 2,
) -> None:
    """Fine-tune MiniLM with its six exits and compute every split's exit logits (cached)."""
    _train(quick, cache_dir, verbose, seed, threads)


@dimee_app.command("evaluate")
def dimee_evaluate(
    quick: QuickOption = False,
    cache_dir: CacheOption = None,
    verbose: VerboseOption = False,
    seeds: Annotated[
        str, typer.Option(help="Training seeds, comma-separated (each trains once, cached).")
    ] = "0",
    threads: ThreadsOption = 2,
    mobile_layers: Annotated[int, typer.Option(help="m: layers on mobile.")] = 2,
    edge_layers: Annotated[int, typer.Option(help="n: layers on the edge.")] = 4,
    lambda_mobile: Annotated[float, typer.Option(help="Per-layer cost on mobile.")] = 0.1,
    lambda_edge: Annotated[float, typer.Option(help="Per-layer cost on the edge.")] = 0.05,
    offload_edge: Annotated[float, typer.Option(help="Offload cost to the edge.")] = 0.1,
    offload_cloud: Annotated[float, typer.Option(help="Offload cost to the cloud.")] = 0.3,
    cloud_charge: Annotated[float, typer.Option(help="Cloud charge per sample.")] = 0.1,
    prior_count: Annotated[int, typer.Option(help="Ours-D: weight of a validation pool.")] = 100,
    results: Annotated[
        Path | None, typer.Option(help="results JSON (default results/dimee.json, full profile).")
    ] = None,
    plot: Annotated[
        Path | None, typer.Option(help="Plot (default docs/img/dimee.png, full profile).")
    ] = None,
    export: Annotated[
        Path | None,
        typer.Option(help="Also write the first seed's tiers as a Triton repository here."),
    ] = None,
) -> None:
    """Choose every method's operating point on validation, score it on test and on tweets."""
    from rich.console import Console

    from braid.dimee.evaluate import combine, evaluate, serving_calibration, write_results
    from braid.dimee.plot import plot_results
    from braid.policy.dimee import CostModel, Tiers

    console = Console(stderr=True)
    if not quick:
        results = results if results is not None else Path("results/dimee.json")
        plot = plot if plot is not None else Path("docs/img/dimee.png")
    tiers = Tiers(mobile=mobile_layers, edge=edge_layers, layers=6)
    costs = CostModel(lambda_mobile, lambda_edge, offload_edge, offload_cloud, cloud_charge)
    runs, first = [], None
    for seed in [int(s) for s in seeds.split(",") if s.strip()]:
        trained = _train(quick, cache_dir, verbose, seed, threads)
        first = first or trained
        run = evaluate(trained, tiers, costs, prior_count=prior_count)
        runs.append(run)
        console.print(
            f"seed {seed}: full model {100 * run['full_model_accuracy']:.2f} % on test "
            f"({100 * run['val_full_model_accuracy']:.2f} % on val)",
            highlight=False,
        )
        for name, row in run["methods"].items():
            point = run["operating_points"].get(name, {})
            console.print(
                f"  {name:14s} accuracy {100 * row['accuracy']:.2f} %  "
                f"cost {row['cost_change_pct']:+.1f} %  tiers {row['tier_share']}  "
                f"{point.get('knob', '')} {point.get('value', '')}",
                highlight=False,
            )
        for name, row in run["drift"]["methods"].items():
            console.print(
                f"  tweets {name:14s} accuracy {100 * row['accuracy']:.2f} %  "
                f"cost {row['cost_change_pct']:+.1f} %",
                highlight=False,
            )
    if first is None:
        raise typer.BadParameter("no seed given", param_hint="--seeds")
    doc = combine(runs, tiers, costs, first)
    if results is not None:
        write_results(doc, results)
        console.print(f"  results: {results}", highlight=False)
    if plot is not None:
        plot_results(doc, plot)
        console.print(f"  plot: {plot}", highlight=False)
    if export is not None:
        from braid.dimee.export import export_repository

        cal = serving_calibration(first, tiers, costs, prior_count=prior_count)
        export_repository(first, cal, export)
        console.print(f"  Triton repository (alpha {cal.alpha}): {export}", highlight=False)
