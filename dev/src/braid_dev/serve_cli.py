"""``braid serve``: the local runtime. It starts one tritonserver per tier from an exported
repository, then the gateway, and stops all of it on Ctrl-C, SIGTERM or SIGHUP (a dev-stack
command: in a cluster the operator's pods run Triton and ``braid gateway`` runs alone).

Exit status: 0 after a stop while serving (its normal end), 128 + the signal's number when
a signal interrupts the start-up (see ``braid_dev.stack.stop_signals``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from braid.cli.gateway import ready_line, setup_logging

if TYPE_CHECKING:
    from braid_dev.stack.stop_signals import StopSignals


def serve_command(
    repository: Annotated[
        Path | None,
        typer.Option(help="Triton model repository with catalog.json (braid models build --out)."),
    ] = None,
    synthetic: Annotated[
        bool, typer.Option(help="Serve a small generated model pair instead (no build needed).")
    ] = False,
    routing: Annotated[
        Path | None,
        typer.Option(help="Routing table JSON (default: <state>/serve/routing.json, created)."),
    ] = None,
    host: Annotated[str, typer.Option(help="Address the gateway listens on.")] = "127.0.0.1",
    http_port: Annotated[int, typer.Option(help="Gateway REST port (0: a free one).")] = 8000,
    grpc_port: Annotated[int, typer.Option(help="Gateway gRPC port (0: a free one).")] = 8001,
    workdir: Annotated[
        Path | None, typer.Option(help="Logs and repository views (default <state>/serve).")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log each event.")] = False,
) -> None:
    """Start a tritonserver per tier (local / host) and the gateway; Ctrl-C, SIGTERM or SIGHUP
    stops everything."""
    from braid.settings import get_settings
    from braid_dev.stack.processes import owned_root
    from braid_dev.stack.stop_signals import StopRequested, stoppable_command

    setup_logging(verbose)
    if (repository is None) == (not synthetic):
        raise typer.BadParameter("give exactly one of --repository DIR or --synthetic")
    try:
        with stoppable_command(owned_root(get_settings().state), "serve") as guard:
            _serve(repository, synthetic, routing, host, http_port, grpc_port, workdir, guard)
    except StopRequested as exc:
        typer.echo(f"interrupted by {exc}: everything braid serve started is stopped")
        raise typer.Exit(exc.exit_code) from None


def _serve(
    repository: Path | None,
    synthetic: bool,
    routing: Path | None,
    host: str,
    http_port: int,
    grpc_port: int,
    workdir: Path | None,
    guard: StopSignals,
) -> None:
    from braid.api.routing import single_path_table
    from braid.dataplane.routing import write_routing_table
    from braid.dataplane.server import GatewayOptions, serve_gateway
    from braid.dataplane.service import InferenceService, ModelSource, build_service, read_catalog
    from braid.settings import get_settings
    from braid_dev.local_runtime import start_local_runtime

    workdir = workdir if workdir is not None else get_settings().state / "serve"
    workdir.mkdir(parents=True, exist_ok=True)
    if synthetic:
        from braid_dev.synthetic import build_synthetic_repository

        repository = build_synthetic_repository(workdir / "synthetic-repo").repository
    assert repository is not None
    catalog = read_catalog(repository / "catalog.json")
    routing = routing if routing is not None else workdir / "routing.json"
    if not routing.exists():
        write_routing_table(single_path_table(catalog.local_model, catalog.original_path), routing)
    typer.echo(f"starting Triton servers for {catalog.local_model} (logs under {workdir})")
    runtime = start_local_runtime(repository, catalog, workdir)
    try:
        for tier, server in runtime.servers.items():
            typer.echo(
                f"  {tier:<6} tritonserver gRPC {server.grpc_address}  ({len(server.models)} models)"
            )
        typer.echo(f"routing table: {routing} (edit it: the gateway reloads it)")
        source = ModelSource(catalog=catalog, endpoints=runtime.endpoints, routing_file=routing)

        async def build() -> InferenceService:
            return build_service([source])

        serve_gateway(
            build,
            GatewayOptions(host=host, http_port=http_port, grpc_port=grpc_port),
            on_ready=ready_line,
        )
    finally:
        # The gateway's event loop handled the stop signals and gave them back to their
        # defaults on closing: from here on they must not cut the tear-down short.
        guard.tearing_down()
        typer.echo("stopping Triton servers")
        runtime.stop()
