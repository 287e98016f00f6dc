"""The ``braid`` commands of the dev stack: ``braid dev cluster``, ``braid demo`` and ``braid
serve``. The product's CLI finds them through the ``braid.cli`` entry-point group, so an
install without the dev package has none of them and imports none of this.
"""

from __future__ import annotations

from pathlib import Path

import typer

dev_app = typer.Typer(
    help="The local development stack (no container engine needed).", no_args_is_help=True
)
cluster_app = typer.Typer(
    help="A real control plane on this machine: etcd, kube-apiserver, controller-manager, scheduler, kwok nodes.",
    no_args_is_help=True,
)
dev_app.add_typer(cluster_app, name="cluster")


def _setup_cli_logging(verbose: bool) -> None:
    import logging

    from braid.logs import setup_logging

    setup_logging(logging.INFO if verbose else logging.WARNING)
    # One line per poll of the API server would drown the events that matter.
    logging.getLogger("httpx").setLevel(logging.WARNING)


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:.0f} MiB"


@cluster_app.command("up")
def cluster_up(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log each step."),
) -> None:
    """Start the control plane and six kwok nodes (idempotent: a healthy one is reported)."""
    from rich.console import Console

    from braid.settings import get_settings
    from braid_dev.stack import cluster

    _setup_cli_logging(verbose)
    console = Console()
    settings = get_settings()
    try:
        with console.status("starting the control plane") as spinner:
            result = cluster.up(settings, progress=lambda msg: spinner.update(msg))
    except cluster.ClusterError as exc:
        console.print(f"[red]error:[/red] {exc}", markup=True, highlight=False)
        raise typer.Exit(1) from None
    state = result.state
    if result.already_running:
        console.print(
            f"[green]cluster already running[/green] (since {state.started_at}, "
            f"started in {state.up_seconds:.1f}s)"
        )
    else:
        console.print(f"[green]cluster up[/green] in {state.up_seconds:.1f}s")
    console.print(f"apiserver   https://127.0.0.1:{state.ports.apiserver}", highlight=False)
    console.print(f"kubeconfig  {result.kubeconfig}", highlight=False)
    console.print(f"  export KUBECONFIG={result.kubeconfig}", highlight=False)
    if result.kubectl is not None:
        version = state.versions.get("kube-apiserver", "")
        console.print(
            f"kubectl     {result.kubectl}  (matches the apiserver {version}; "
            "an older kubectl on PATH may lag behind)",
            highlight=False,
        )


@cluster_app.command("down")
def cluster_down(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log each step."),
) -> None:
    """Stop every process of the control plane, and what a ``braid demo --keep`` or ``braid
    serve`` under the same state directory started; safe to run when nothing is running.

    A demo or serve still running is sent SIGTERM and tears down as on Ctrl-C; servers left
    by one that was killed are stopped from their records (pid, command line, start time).
    """
    from braid.settings import get_settings
    from braid_dev.stack import cluster
    from braid_dev.stack.processes import owned_root, stop_owned

    _setup_cli_logging(verbose)
    settings = get_settings()
    # Before the cluster: a running demo's tear-down still needs its API server.
    owned = stop_owned(owned_root(settings.state))
    if owned:
        typer.echo(f"stopped what demo/serve started ({', '.join(owned)})")
    stopped = cluster.down(settings)
    if stopped:
        typer.echo(f"cluster stopped ({', '.join(stopped)})")
    else:
        typer.echo("cluster is not running; nothing to stop")


@cluster_app.command("status")
def cluster_status(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log each step."),
) -> None:
    """Show which components run, their health and memory, the nodes and the start-up time.

    Exits 1 when the cluster is degraded (some but not all of it running or healthy).
    """
    from rich.console import Console
    from rich.table import Table

    from braid.settings import get_settings
    from braid_dev.stack import cluster

    _setup_cli_logging(verbose)
    console = Console()
    current = cluster.status(get_settings())
    if current.stopped:
        console.print("cluster is not running (start it with `braid dev cluster up`)")
        return
    table = Table(title=f"braid local cluster ({current.root})")
    for column in ("component", "pid", "port", "state", "RSS"):
        table.add_column(column)
    for c in current.components:
        health = {True: "healthy", False: "unhealthy", None: "running"}[c.healthy]
        table.add_row(
            c.name,
            str(c.pid or "-"),
            str(c.port or "-"),
            health if c.running else "[red]stopped[/red]",
            _mib(c.rss_bytes),
        )
    console.print(table)
    console.print(f"memory (RSS, all components): {_mib(current.total_rss_bytes)}")
    state = current.state
    if state is not None:
        phases = ", ".join(f"{k} {v:.1f}s" for k, v in state.phases.items())
        console.print(
            f"started {state.started_at}; `up` took {state.up_seconds:.1f}s ({phases})",
            highlight=False,
        )
    if current.nodes_ready is not None:
        console.print(f"nodes ready: {len(current.nodes_ready)} ({', '.join(current.nodes_ready)})")
    if current.kubeconfig is not None:
        console.print(f"kubeconfig: {current.kubeconfig}", highlight=False)
    if current.strays:
        strays = ", ".join(f"{name} (pid {pid})" for pid, name in current.strays.items())
        console.print(f"[yellow]untracked cluster processes:[/yellow] {strays}")
    if not current.running:
        console.print("[red]cluster is degraded[/red]: run `braid dev cluster up` to restart it")
        raise typer.Exit(1)


def demo(
    full: bool = typer.Option(
        False, "--full", help="The full model profile (~15 min cold) instead of --quick."
    ),
    duration: float = typer.Option(60.0, help="Seconds of traffic: light, heavy, light thirds."),
    keep: bool = typer.Option(False, "--keep", help="Leave the stack serving until Ctrl-C."),
    workdir: Path | None = typer.Option(None, help="Logs, repository, files (<state>/demo)."),
    png: Path = typer.Option(Path("docs/img/demo-timeline.png"), help="Timeline PNG to write."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log each event."),
    namespaces: str = typer.Option(
        "provider-a,provider-b",
        help="LOCAL,HOST: the providers' namespaces (other names need real nodes).",
    ),
) -> None:
    """The whole system end to end: models, cluster, operator, Triton, gateway, traffic."""
    from braid.settings import get_settings
    from braid_dev.demo.cli import run_demo_cli

    local, sep, host = namespaces.partition(",")
    if not (local and sep and host) or "," in host:
        raise typer.BadParameter("two namespaces: LOCAL,HOST", param_hint="--namespaces")
    if namespaces != "provider-a,provider-b" and get_settings().cluster_real_nodes == 0:
        raise typer.BadParameter(
            "a kwok-only demo (BRAID_CLUSTER_REAL_NODES=0) serves the samples' provider-a and"
            " provider-b only",
            param_hint="--namespaces",
        )
    run_demo_cli(full, duration, keep, workdir, png, verbose, (local.strip(), host.strip()))
