"""``braid models ...``: the model tooling's commands (registered on the main app in cli.py).

Kept in its own module so the model tooling's heavy imports (torch, matplotlib) load only
when a ``models`` command runs, not for every ``braid`` invocation.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

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
    spec_file: Annotated[
        Path | None,
        typer.Option(
            "--file",
            "-f",
            help="Build spec of your own model (model source, cuts by name, dataset loader).",
        ),
    ] = None,
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
    if spec_file is not None:
        # A spec build writes its own summary only where --results says: the defaults below
        # are the built-in models' files, which it must not overwrite.
        _build_from_spec(
            spec_file, out, results, cache_dir, console, _progress_bars(console), quick=quick
        )
        return
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
            f"{row['local_compute_cut_pct']:.0f} %, modelled latency ratio "
            f"{row['modelled_latency_ratio']:.2f}"
            + (
                f", measured {row['measured_latency_ratio']:.2f}"
                if "measured_latency_ratio" in row
                else ""
            ),
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


def _progress_bars(console: Any) -> Any:
    """A ``braid.tooling.progress.Progress`` that draws rich bars (``.bar`` is the display)."""
    from rich.progress import BarColumn, MofNCompleteColumn, TaskID, TextColumn, TimeElapsedColumn
    from rich.progress import Progress as RichProgress

    from braid.tooling.progress import Progress

    bar = RichProgress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )

    class _Bars(Progress):
        def __init__(self) -> None:
            self.bar = bar
            self.tasks: dict[str, TaskID] = {}

        def stage(self, name: str, total: int) -> Callable[[], None]:
            task = bar.add_task(name, total=total)
            self.tasks[name] = task
            return lambda: bar.advance(task)

        def done(self, name: str) -> None:
            task = self.tasks.get(name)
            if task is not None:
                bar.update(task, completed=bar.tasks[task].total)

    return _Bars()


def _spec_errors() -> tuple[type[Exception], ...]:
    from braid.tooling.build_spec import BuildSpecError
    from braid.tooling.data import DatasetMissingError
    from braid.tooling.split import PartitionError

    return (BuildSpecError, PartitionError, DatasetMissingError)


def _build_from_spec(
    spec_file: Path, out: Path, results: Path | None, cache_dir: Path | None, console: Any,
    bars: Any, *, quick: bool = False,
) -> None:  # fmt: skip
    """Check the whole spec first (errors before any training), then build and report.

    ``--quick`` caps the spec's training and evaluation sizes (``user_build.QUICK_LIMITS``).
    """
    from braid.tooling.build import models_cache_dir
    from braid.tooling.build_spec import load_build_spec
    from braid.tooling.user_build import prepare, quick_spec, run_user_build

    try:
        spec = load_build_spec(spec_file)
        spec = quick_spec(spec) if quick else spec
        with console.status("checking the spec: model, cuts, dataset"):
            prepared = prepare(spec)
    except _spec_errors() as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(1) from None
    console.print(
        f"{spec.name}: {len(prepared.layers)} graph layers, "
        + ", ".join(f"{b.name} {list(b.output_shape)}" for b in prepared.blocks),
        highlight=False,
    )
    with bars.bar:
        output = run_user_build(
            prepared,
            out,
            cache_dir if cache_dir is not None else models_cache_dir(),
            progress=bars,
            results_path=results,
        )
    summary = output.summary
    chosen = summary["chosen_path"]
    console.print(
        f"[green]built[/green] {len(output.result.catalog.paths)} paths, "
        f"{len(output.models)} Triton models in {out} ({output.seconds:.1f} s); "
        f"baseline test accuracy {100 * summary['baseline']['test_accuracy']:.2f} %",
        highlight=False,
    )
    console.print(
        f"  chosen on validation -> {chosen['path']}: test accuracy "
        f"{100 * chosen['test_accuracy']:.2f} %, local MACs cut {chosen['local_macs_cut_pct']} %, "
        f"local time cut {chosen['local_time_cut_pct']} %",
        highlight=False,
    )


@models_app.command("layers")
def models_layers(
    spec_file: Annotated[Path, typer.Option("--file", "-f", help="Build spec of the model.")],
) -> None:
    """List the model's graph layers (index, node, module) and the blocks the spec cuts."""
    from braid.tooling.build_spec import load_build_spec
    from braid.tooling.graph_split import graph_layers, trace_model
    from braid.tooling.user_build import load_model, resolve_partition

    try:
        spec = load_build_spec(spec_file)
        model, leaves = load_model(spec)
        layers = graph_layers(trace_model(model, leaves))
        partition = resolve_partition(spec, layers)
    except _spec_errors() as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    starts = {b.first_layer: b.name for b in partition.blocks}
    for layer in layers:
        if layer.index in starts:
            typer.echo(f"-- block {starts[layer.index]}")
        typer.echo(f"{layer.index:4d}  {layer.name:32s} {layer.module_path}")
