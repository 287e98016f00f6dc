"""``braid controller run``: the path controller, in local mode or against a cluster.

Local mode (``--routing FILE``) writes the gateway's routing table, so ``braid serve`` plus a
Prometheus scraping it is a complete, cluster-free control loop. Cluster mode
(``--policy-name``) writes the OffloadPolicy's status; the operator turns it into the routing
ConfigMap. Imports are deferred so ``braid --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

controller_app = typer.Typer(help="The path controller (CoDE cost, Prometheus-driven).")


def parse_capacity(values: list[str]) -> dict[str, float]:
    """``TIER=N`` options: concurrent executions each tier sustains."""
    out = {"local": 1.0, "host": 1.0}
    for value in values:
        tier, sep, number = value.partition("=")
        try:
            out[tier] = float(number)
        except ValueError:
            sep = ""
        if not sep or not tier or out[tier] <= 0:
            raise typer.BadParameter(f"{value!r}: expected TIER=N with N > 0")
    return out


def load_policy_spec(path: Path) -> Any:
    """An OffloadPolicy manifest (YAML or JSON) or just its spec, validated."""
    import yaml

    from braid.api.v1alpha1.offloadpolicy import OffloadPolicySpec

    doc = yaml.safe_load(path.read_text())
    if isinstance(doc, dict) and "spec" in doc:
        doc = doc["spec"]
    return OffloadPolicySpec.model_validate(doc)


@controller_app.command("run")
def run_command(
    prometheus: Annotated[
        str, typer.Option(help="Prometheus base URL, e.g. http://127.0.0.1:9090.")
    ],
    catalog: Annotated[Path, typer.Option(help="catalog.json of the local model.")],
    routing: Annotated[
        Path | None, typer.Option(help="Local mode: the gateway's routing table file to write.")
    ] = None,
    policy_file: Annotated[
        Path | None,
        typer.Option("--policy", help="OffloadPolicy manifest or spec (YAML/JSON); local mode."),
    ] = None,
    policy_name: Annotated[
        str | None, typer.Option(help="Cluster mode: the OffloadPolicy to read and update.")
    ] = None,
    namespace: Annotated[str, typer.Option(help="Cluster mode: its namespace.")] = "default",
    latency_bound_us: Annotated[
        int, typer.Option(help="L_T when no policy is given (local mode).")
    ] = 1_000_000,
    interval: Annotated[float, typer.Option(help="Seconds between decisions.")] = 1.0,
    scrape_interval: Annotated[
        str, typer.Option(help="Prometheus's scrape interval of the Triton pods (e.g. 15s).")
    ] = "15s",
    window: Annotated[
        str | None,
        typer.Option(help="PromQL irate window (default: 4 scrape intervals)."),
    ] = None,
    capacity: Annotated[
        list[str] | None, typer.Option(help="TIER=N concurrent executions (default 1). Repeatable.")
    ] = None,
    max_utilisation: Annotated[float, typer.Option(help="Split traffic beyond this ρ.")] = 0.8,
    rtt_us: Annotated[float, typer.Option(help="Round trip between tiers, µs.")] = 200.0,
    bandwidth_mbit_s: Annotated[float, typer.Option(help="Link bandwidth, Mbit/s.")] = 1000.0,
    rounds: Annotated[int, typer.Option(help="Stop after this many rounds (0: never).")] = 0,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Debug logs: every round, every write.")
    ] = False,
) -> None:
    """Decide the active paths every INTERVAL from Prometheus and write them."""
    import logging
    import signal
    import threading

    from braid.api.common import Condition, ObjectRef
    from braid.api.v1alpha1.offloadpolicy import (
        HostRef,
        OffloadPolicySpec,
        OffloadPolicyStatus,
    )
    from braid.controller.loop import DecisionSink, PathController, routing_file_sink
    from braid.dataplane.promql import PrometheusClient
    from braid.dataplane.service import read_catalog
    from braid.logs import setup_logging
    from braid.policy.cost import Network
    from braid.policy.decision import ControlSettings

    setup_logging(logging.DEBUG if verbose else logging.INFO)
    logger = logging.getLogger("braid.cli.controller")
    if (routing is None) == (policy_name is None):
        raise typer.BadParameter("give exactly one of --routing FILE or --policy-name NAME")
    cat = read_catalog(catalog)
    sinks: list[DecisionSink] = []
    generation: int | None = None
    seed: OffloadPolicyStatus | None = None
    if policy_name is not None:
        from braid.controller.policy_sink import PolicyStatusSink
        from braid.controller.status import DEGRADED, PATHS_CHOSEN
        from braid.kube.client import default_kube
        from braid.kube.policy_status import wait_for_policy
        from braid.logs import log_event

        stored = wait_for_policy(
            policy_name,
            namespace,
            on_wait=lambda: log_event(
                logger, "controller.waiting_for_policy", policy=f"{namespace}/{policy_name}"
            ),
        )
        spec = OffloadPolicySpec.model_validate(stored.get("spec") or {})
        generation = (stored.get("metadata") or {}).get("generation")
        # The controller's own conditions as stored: a restart keeps their transition times.
        seed = OffloadPolicyStatus(
            conditions=[
                Condition.model_validate(c)
                for c in (stored.get("status") or {}).get("conditions") or []
                if c.get("type") in (PATHS_CHOSEN, DEGRADED)
            ]
        )

        def follow(obj: dict[str, Any]) -> None:
            fresh = OffloadPolicySpec.model_validate(obj.get("spec") or {})
            controller.generation = (obj.get("metadata") or {}).get("generation")
            if fresh != controller.policy:
                # kubectl edit of the policy: cost, L_T, candidates take effect next round.
                controller.policy = fresh
                log_event(logger, "controller.spec_followed", policy=f"{namespace}/{policy_name}")

        sinks.append(PolicyStatusSink(policy_name, namespace, default_kube(), on_policy=follow))
    elif policy_file is not None:
        spec = load_policy_spec(policy_file)
    else:
        spec = OffloadPolicySpec(
            model_ref=ObjectRef(name=cat.local_model),
            latency_bound_microseconds=latency_bound_us,
            all_paths=True,
            # Local mode, no policy: every host of the catalog is this machine's own.
            allowed_hosts=[
                HostRef(namespace="local", model=m.name) for m in cat.models if m.role == "host"
            ],
        )
    if routing is not None:
        sinks.append(routing_file_sink(cat, spec, routing))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with PrometheusClient(prometheus) as client:
        controller = PathController(
            catalog=cat,
            policy=spec,
            prometheus=client,
            sinks=sinks,
            settings=ControlSettings(
                capacity=parse_capacity(capacity or []), max_utilisation=max_utilisation
            ),
            network=Network(rtt_us=rtt_us, bandwidth_mbit_s=bandwidth_mbit_s),
            status=seed,
            generation=generation,
        )
        from braid.controller.metrics import MetricQueries, model_namespaces, rate_window
        from braid.render.prometheus_config import duration_seconds

        try:
            window = window or rate_window(duration_seconds(scrape_interval))
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
        # In a cluster each role's pods are also told apart by namespace (tenants may name
        # their models alike); a local run's static targets carry the model name alone.
        spaces = model_namespaces(cat, spec, namespace) if policy_name is not None else None
        controller.queries = MetricQueries.for_catalog(cat, window, spaces)
        typer.echo(f"path controller for {cat.local_model}: every {interval}s (Ctrl-C stops)")
        try:
            if rounds:
                for _ in range(rounds):
                    controller.step()
                    if stop.wait(interval):
                        break
            else:
                controller.run(interval, stop)
        except KeyboardInterrupt:
            pass
    if controller.status is not None:
        typer.echo(f"active: {controller.status.active_paths}")
