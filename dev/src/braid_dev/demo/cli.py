"""``braid demo``'s terminal side: progress lines, the live table and the summary."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from braid_dev.demo.story import DemoOptions, DemoResult, DemoState, live_table, run_demo


def _live(console: Console) -> Callable[[DemoState, Callable[[], None]], None]:
    def show(state: DemoState, traffic: Callable[[], None]) -> None:
        done = threading.Event()
        error: list[BaseException] = []

        def run() -> None:
            try:
                traffic()
            except BaseException as exc:  # re-raised in the main thread
                error.append(exc)
            finally:
                done.set()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        with Live(live_table(state), console=console, refresh_per_second=4) as live:
            while not done.wait(0.5):
                live.update(live_table(state))
            live.update(live_table(state))
        if error:
            raise error[0]

    return show


def _summary(console: Console, result: DemoResult) -> None:
    table = Table(title="summary per phase")
    for column in ("phase", "requests", "req/s", "p50 ms", "p99 ms", "accuracy"):
        table.add_column(column, justify="left" if column == "phase" else "right")
    for row in result.summary:
        table.add_row(
            row["phase"],
            str(row["requests"]),
            f"{row['rps']:.1f}",
            f"{row['p50_ms']:.1f}",
            f"{row['p99_ms']:.1f}",
            f"{100 * row['accuracy']:.1f} %",
        )
    console.print(table)
    for row in result.summary:
        paths = ", ".join(f"{p} {100 * s:.0f} %" for p, s in row["paths"].items())
        console.print(f"  {row['phase']:<12} served by {paths}", highlight=False)
    console.print(
        "active paths (braid controller): "
        + " → ".join(f"{p} @ {t:.0f}s" for t, p in result.switches),
        highlight=False,
    )
    if (test := result.state.helm_test) is not None:
        verdict = "[green]passed[/]" if test.passed else "[red]failed[/]"
        console.print(
            f"helm test {verdict}: the chart's test Pod sent an inference through the gateway"
            f" (exit codes {test.exit_codes})"
        )
    pods = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in result.pods.items())
    console.print(f"ran on {result.runs_on} ({pods})", highlight=False)
    stages = ", ".join(f"{k} {v:.1f}s" for k, v in result.state.stages.items())
    console.print(f"stages: {stages}; total {result.total_s:.0f} s", highlight=False)
    console.print(f"errors: {result.state.errors}; timeline: {result.png}", highlight=False)


def run_demo_cli(
    full: bool,
    duration: float,
    keep: bool,
    workdir: Path | None,
    png: Path,
    verbose: bool,
    namespaces: tuple[str, str] = ("provider-a", "provider-b"),
) -> None:
    """Run the demo; SIGTERM and SIGHUP stop it as Ctrl-C does (see ``stop_signals``).

    Exit status: 0 when it ran (a stop during ``--keep``'s serving is its normal end), 1
    when nothing could be served, 128 + the signal's number when a signal cut it short.
    """
    from braid.logs import setup_logging
    from braid.settings import get_settings
    from braid_dev.stack.processes import owned_root
    from braid_dev.stack.stop_signals import StopRequested, stoppable_command

    setup_logging(logging.INFO if verbose else logging.WARNING)
    console = Console()
    settings = get_settings()
    options = DemoOptions(
        full=full,
        duration_s=duration,
        keep=keep,
        workdir=workdir if workdir is not None else settings.state / "demo",
        png=png,
        namespaces=namespaces,
    )
    profile = "full" if full else "quick"
    messages = {
        "models": f"building or reusing the models ({profile} profile; cached by config hash)",
        "cluster": (
            "starting the local control plane (etcd, kube-apiserver, scheduler, kwok) and its"
            " real node (kubelet, containerd, runc, CNI, kube-proxy, CoreDNS)"
        ),
        "real deploy": (
            "real node: braid's images imported, S3 store + Prometheus (Kubernetes SD),"
            " helm install charts/braid, samples on the real pool, Triton pods fetching"
            " their repository, then helm test's Pod"
        ),
        "helm install": f"helm install braid charts/braid (CRDs, RBAC, components) into {namespaces[0]}",
        "operator": "starting the operator as the release's ServiceAccount",
        "samples": "applying the samples (Models, Blocks, Links, OffloadPolicy) + catalog",
        "triton": "kwok runtime: a tritonserver per Triton pod; waiting for the routing ConfigMap",
        "gateway": "starting the gateway on the routing ConfigMap, and Prometheus",
        "helm test": "helm test: the chart's test Pod sends an inference through the gateway",
        "traffic": f"traffic: light → heavy → light over {duration:.0f} s",
        "teardown": "stopping everything",
    }
    started = time.monotonic()

    def progress(stage: str) -> None:
        console.print(
            f"[dim]{time.monotonic() - started:6.1f}s[/dim] {messages.get(stage, stage)}",
            highlight=False,
        )

    def wait_forever(addresses: dict[str, str]) -> None:
        for name, value in addresses.items():
            console.print(f"  {name:<13} {value}", highlight=False)
        console.print("the stack keeps serving; Ctrl-C (or SIGTERM, SIGHUP) stops it")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            return

    try:
        with stoppable_command(owned_root(settings.state), "demo"):
            result = run_demo(options, settings, progress, _live(console), wait_forever)
    except KeyboardInterrupt as exc:
        console.print("[yellow]interrupted[/yellow]: everything the demo started is stopped")
        raise typer.Exit(exc.exit_code if isinstance(exc, StopRequested) else 130) from None
    _summary(console, result)
    if result.state.errors and not result.state.samples:
        raise typer.Exit(1)
