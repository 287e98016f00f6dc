"""``braid gateway``: the gateway alone, in front of Triton servers that already run (the form
it takes in a cluster: the chart's gateway Deployment runs this command). Imports are
deferred so ``braid --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

_ENDPOINT_HELP = (
    "Where a server role's Triton gRPC endpoint listens, ROLE=HOST:PORT (local=..., host=...),"
    " or model:NAME=HOST:PORT for one Triton model. Repeatable."
)


def setup_logging(verbose: bool) -> None:
    import logging

    from braid.logs import setup_logging

    setup_logging(logging.INFO if verbose else logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)


def parse_endpoints(values: list[str]) -> dict[str, dict[str, str]]:
    """``ROLE=ADDR`` / ``model:NAME=ADDR`` options as the ``Endpoints`` fields."""
    servers: dict[str, str] = {}
    models: dict[str, str] = {}
    for value in values:
        key, sep, address = value.partition("=")
        if not sep or not key or ":" not in address:
            raise typer.BadParameter(f"{value!r}: expected ROLE=HOST:PORT or model:NAME=HOST:PORT")
        if key.startswith("model:"):
            models[key.removeprefix("model:")] = address
        else:
            servers[key] = address
    return {"servers": servers, "models": models}


def ready_line(gateway: object) -> None:
    from braid.dataplane.server import Gateway

    assert isinstance(gateway, Gateway)
    typer.echo(
        f"gateway ready: REST {gateway.http_url}  gRPC {gateway.grpc_address}  "
        f"models {', '.join(sorted(gateway.service.executors))}  (Ctrl-C stops)"
    )


def gateway_command(
    catalog: Annotated[Path, typer.Option(help="catalog.json of the local model.")],
    endpoint: Annotated[
        list[str] | None, typer.Option("--endpoint", "-e", help=_ENDPOINT_HELP)
    ] = None,
    endpoints: Annotated[
        Path | None,
        typer.Option(
            help="endpoints.json as the operator writes it into the routing ConfigMap "
            "(--endpoint options override its entries); watched: an address it gains later "
            "(a Block Ready after the gateway started) is added, none is dropped."
        ),
    ] = None,
    routing: Annotated[
        Path | None,
        typer.Option(help="Routing table JSON, reloaded when it changes (default: original path)."),
    ] = None,
    artifacts_dir: Annotated[
        Path | None,
        typer.Option(
            help="Where the gateway's init container fetched its artifacts (a DIMEE policy's "
            "pools archive, by the plan the operator renders)."
        ),
    ] = None,
    host: Annotated[str, typer.Option(help="Address both front ends listen on.")] = "127.0.0.1",
    http_port: Annotated[int, typer.Option(help="REST port (0: a free one).")] = 8000,
    grpc_port: Annotated[int, typer.Option(help="gRPC port (0: a free one).")] = 8001,
    max_body_mib: Annotated[float, typer.Option(help="Largest request body accepted.")] = 64.0,
    coalesce: Annotated[
        bool, typer.Option(help="Share one Triton call among requests at the same hop.")
    ] = True,
    max_in_flight_per_hop: Annotated[
        int, typer.Option(help="Calls of one hop outstanding at once before requests queue.")
    ] = 1,
    fuse: Annotated[
        bool,
        typer.Option(
            help="Call consecutive hops on one server as one ensemble (a segment) when the "
            "server has it ready."
        ),
    ] = True,
    streams: Annotated[
        bool,
        typer.Option(
            help="Send hop calls as messages on a few long-lived ModelStreamInfer streams per "
            "server (cheaper than a call each); --no-streams: one unary call per hop."
        ),
    ] = True,
    pin_cpu: Annotated[
        str | None,
        typer.Option(
            help="Keep all the gateway's threads on one CPU: 'auto' (the first this process "
            "may use) or a CPU number. Pays where the pod owns its CPUs (static CPU manager "
            "policy); see braid.dataplane.cpu_pinning for what it gains and costs."
        ),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log each event.")] = False,
) -> None:
    """Run the gateway (KServe v2 over REST and gRPC) in front of running Triton servers."""
    from braid.api.routing import Endpoints
    from braid.dataplane.dimee import PoolsUnavailableError
    from braid.dataplane.executor import ExecutorOptions
    from braid.dataplane.server import GatewayOptions, serve_gateway
    from braid.dataplane.service import (
        EndpointsFile,
        InferenceService,
        ModelSource,
        build_service,
        read_catalog,
    )

    setup_logging(verbose)
    if pin_cpu is not None:
        from braid.dataplane.cpu_pinning import pin_to

        try:
            pin_to(pin_cpu)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--pin-cpu") from None
    base = (
        Endpoints() if endpoints is None else Endpoints.model_validate_json(endpoints.read_text())
    )
    flags = parse_endpoints(endpoint or [])
    overrides = Endpoints(servers=flags["servers"], models=flags["models"])
    merged = Endpoints(
        servers={**base.servers, **flags["servers"]}, models={**base.models, **flags["models"]}
    )
    if not merged.servers and not merged.models:
        raise typer.BadParameter("give --endpoints FILE or at least one --endpoint")
    source = ModelSource(
        catalog=read_catalog(catalog),
        endpoints=merged,
        routing_file=routing,
        endpoints_file=None if endpoints is None else EndpointsFile(endpoints, overrides),
        artifacts_dir=artifacts_dir,
    )

    async def build() -> InferenceService:
        return build_service(
            [source],
            streams=streams,
            options=ExecutorOptions(
                coalesce=coalesce, max_in_flight_per_hop=max_in_flight_per_hop, fuse=fuse
            ),
        )

    options = GatewayOptions(
        host=host,
        http_port=http_port,
        grpc_port=grpc_port,
        max_body_bytes=int(max_body_mib * 2**20),
    )
    try:
        serve_gateway(build, options, on_ready=ready_line)
    except PoolsUnavailableError as exc:
        # One line naming the file (the pod's log and its last state say it), not a traceback
        # through the event loop.
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
