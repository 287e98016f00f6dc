"""``braid models ...``: the model tooling's commands (registered on the main app in cli.py).

Kept in its own module so the model tooling's heavy imports (torch, matplotlib) load only
when a ``models`` command runs, not for every ``braid`` invocation.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

models_app = typer.Typer(
    help="Split models into blocks, train links and exits, measure paths, export to Triton.",
    no_args_is_help=True,
)


@models_app.command("build")
def models_build(
    quick: Annotated[
        bool, typer.Option("--quick", help="Small epochs, subsets and grid (about a minute).")
    ] = False,
    out: Annotated[Path, typer.Option("--out", help="Triton model repository to write.")] = Path(
        "model-repo"
    ),
    results: Annotated[
        Path | None,
        typer.Option(help="results JSON (default results/code.json for the full profile)."),
    ] = None,
    plots: Annotated[
        Path | None, typer.Option(help="Plot folder (default docs/img for the full profile).")
    ] = None,
    cache_dir: Annotated[
        Path | None, typer.Option(help="Artifact cache (default <BRAID_CACHE>/models).")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log each stage.")] = False,
) -> None:
    """Train, cut, link, measure every path, export a Triton repository and the catalog."""
    import logging

    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        TaskID,
        TextColumn,
        TimeElapsedColumn,
    )
    from rich.progress import Progress as RichProgress

    from braid.logs import setup_logging
    from braid.tooling.data import DatasetMissingError
    from braid.tooling.pipeline import run_pipeline
    from braid.tooling.progress import Progress
    from braid.tooling.zoo import HostWeightsMissingError

    setup_logging(logging.INFO if verbose else logging.WARNING)
    console = Console(stderr=True)
    profile = "quick" if quick else "full"
    if not quick:
        results = results if results is not None else Path("results/code.json")
        plots = plots if plots is not None else Path("docs/img")

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

        def stage(self, name: str, total: int) -> Callable[[], None]:
            task = bar.add_task(name, total=total)
            self.tasks[name] = task
            return lambda: bar.advance(task)

        def done(self, name: str) -> None:
            task = self.tasks.get(name)
            if task is not None:
                bar.update(task, completed=bar.tasks[task].total)

    try:
        with bar:
            output = run_pipeline(
                profile,
                out,
                results_path=results,
                plots_dir=plots,
                cache_dir=cache_dir,
                progress=_Bars(),
            )
    except (DatasetMissingError, HostWeightsMissingError) as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(1) from None
    summary = output.results
    console.print(
        f"[green]built[/green] {summary['paths_evaluated']} paths, "
        f"{len(output.models)} Triton models in {out} "
        f"({'cached, ' if output.cached else ''}{output.seconds:.1f} s); "
        f"baseline accuracy {100 * summary['baseline_accuracy']:.2f} %",
        highlight=False,
    )
    for name in ("balanced", "heavy"):
        row = summary[name]
        console.print(
            f"  {name:8s} -> {row['path']}: accuracy {100 * row['accuracy']:.2f} % "
            f"(drop {row['accuracy_drop_pt']:.2f} pt), local compute cut "
            f"{row['local_compute_cut_pct']:.0f} %, latency ratio {row['latency_ratio']:.2f}",
            highlight=False,
        )
    if results is not None:
        console.print(f"  results: {results}", highlight=False)
    if plots is not None:
        console.print(f"  plots: {', '.join(str(p) for p in output.plots)}", highlight=False)


@models_app.command("schema")
def models_schema() -> None:
    """Print the path catalog's JSON Schema (regenerates src/braid/api/path_catalog.schema.json).

    The schema embeds the Model resource's partition type, so an API change there changes
    it: ``braid models schema > src/braid/api/path_catalog.schema.json``.
    """
    import json

    from braid.api.catalog import catalog_json_schema

    typer.echo(json.dumps(catalog_json_schema(), indent=2, sort_keys=True))
