"""``braid dimee ...``: train the multi-exit MiniLM, evaluate DIMEE routing, export the tiers.

Its own module so torch and transformers load only when a ``dimee`` command runs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

dimee_app = typer.Typer(
    help="DIMEE: a multi-exit MiniLM on mobile / edge / cloud, samples routed by difficulty.",
    no_args_is_help=True,
)

QuickOption = Annotated[
    bool, typer.Option("--quick", help="Subsets of train and dev (the tests' profile).")
]
CacheOption = Annotated[
    Path | None, typer.Option(help="Artifact cache (default <BRAID_CACHE>/dimee).")
]
VerboseOption = Annotated[bool, typer.Option("--verbose", "-v", help="Log each stage.")]


def _train(quick: bool, cache_dir: Path | None, verbose: bool) -> Any:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        TaskID,
        TextColumn,
        TimeElapsedColumn,
    )
    from rich.progress import Progress as RichProgress

    from braid.dimee.train import Progress, train
    from braid.logs import setup_logging
    from braid.tooling.data import DatasetMissingError

    setup_logging(logging.INFO if verbose else logging.WARNING)
    console = Console(stderr=True)
    bar = RichProgress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )

    class _Bars(Progress):
        def __init__(self) -> None:
            self.tasks: dict[str, TaskID] = {}

        def stage(self, name: str, total: int) -> Callable[[int], None]:
            task = bar.add_task(name, total=total)
            self.tasks[name] = task
            return lambda n: bar.advance(task, n)

        def done(self, name: str) -> None:
            task = self.tasks.get(name)
            if task is not None:
                bar.update(task, completed=bar.tasks[task].total)

    try:
        with bar:
            trained = train("quick" if quick else "full", cache_dir=cache_dir, progress=_Bars())
    except DatasetMissingError as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(1) from None
    console.print(
        f"[green]trained[/green] {trained.config.profile} profile "
        f"({'cached, ' if trained.cached else ''}{trained.seconds:.1f} s), key {trained.key}",
        highlight=False,
    )
    return trained


@dimee_app.command("train")
def dimee_train(
    quick: QuickOption = False, cache_dir: CacheOption = None, verbose: VerboseOption = False
) -> None:
    """Compute the frozen backbone's features of every split and train the exit heads (cached)."""
    _train(quick, cache_dir, verbose)


@dimee_app.command("evaluate")
def dimee_evaluate(
    quick: QuickOption = False,
    cache_dir: CacheOption = None,
    verbose: VerboseOption = False,
    mobile_layers: Annotated[int, typer.Option(help="m: layers on mobile.")] = 2,
    edge_layers: Annotated[int, typer.Option(help="n: layers on the edge.")] = 4,
    lambda_mobile: Annotated[float, typer.Option(help="Per-layer cost on mobile.")] = 0.1,
    lambda_edge: Annotated[float, typer.Option(help="Per-layer cost on the edge.")] = 0.05,
    offload_edge: Annotated[float, typer.Option(help="Offload cost to the edge.")] = 0.1,
    offload_cloud: Annotated[float, typer.Option(help="Offload cost to the cloud.")] = 0.3,
    cloud_charge: Annotated[float, typer.Option(help="Cloud charge per sample.")] = 0.1,
    prior_count: Annotated[int, typer.Option(help="Ours-D: weight of a dev pool.")] = 100,
    results: Annotated[
        Path | None, typer.Option(help="results JSON (default results/dimee.json, full profile).")
    ] = None,
    plot: Annotated[
        Path | None, typer.Option(help="Plot (default docs/img/dimee.png, full profile).")
    ] = None,
    export: Annotated[
        Path | None, typer.Option(help="Also write the three tiers as a Triton repository here.")
    ] = None,
) -> None:
    """Pick α and the pools on dev, score every method on test (and on tweets for drift)."""
    from rich.console import Console

    from braid.dimee.evaluate import calibrate, evaluate, plot_results, write_results
    from braid.policy.dimee import CostModel, Tiers

    trained = _train(quick, cache_dir, verbose)
    console = Console(stderr=True)
    if not quick:
        results = results if results is not None else Path("results/dimee.json")
        plot = plot if plot is not None else Path("docs/img/dimee.png")
    tiers = Tiers(mobile=mobile_layers, edge=edge_layers, layers=6)
    costs = CostModel(lambda_mobile, lambda_edge, offload_edge, offload_cloud, cloud_charge)
    doc = evaluate(trained, tiers, costs, prior_count=prior_count)
    console.print(
        f"alpha {doc['alpha']:.3f}, pools {doc['pool_sizes']}, "
        f"full model accuracy {100 * doc['full_model_accuracy']:.2f} %",
        highlight=False,
    )
    for name, row in doc["methods"].items():
        console.print(
            f"  {name:11s} accuracy {100 * row['accuracy']:.2f} %  "
            f"cost {row['cost_change_pct']:+.1f} %  tiers {row['tier_share']}",
            highlight=False,
        )
    for name, row in doc["drift"]["methods"].items():
        console.print(
            f"  tweets {name:11s} accuracy {100 * row['accuracy']:.2f} %  "
            f"cost {row['cost_change_pct']:+.1f} %",
            highlight=False,
        )
    if results is not None:
        write_results(doc, results)
        console.print(f"  results: {results}", highlight=False)
    if plot is not None:
        plot_results(doc, plot)
        console.print(f"  plot: {plot}", highlight=False)
    if export is not None:
        from braid.dimee.export import export_repository

        export_repository(trained, calibrate(trained, tiers, costs), export)
        console.print(f"  Triton repository: {export}", highlight=False)
