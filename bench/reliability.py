"""Issue 10's reliability figures: every fault scenario at full size, plus the fuzz campaigns.

What runs (all real processes on loopback):

- the data-plane faults (``braid_dev.reliability.faults``) over one tritonserver per tier of the
  synthetic provider pair and the gateway: the host's tritonserver SIGKILLed and restarted
  (fallback), the local one too (no path fits: refusals), a slow host behind a latency proxy,
  Prometheus stopped under the path controller;
- the control-plane faults (``braid_dev.reliability.control_plane``) on a local cluster of this
  run's own (its own state directory, so nobody else's cluster is restarted): the operator
  SIGKILLed mid-reconcile, the kube-apiserver restarted in place;
- the fuzz campaigns (``braid_dev.reliability.fuzz_rest`` / ``fuzz_grpc``) against a gateway
  process, and the invalid-CR campaign (``braid_dev.reliability.invalid_crs``) on the cluster.

Each fault holds for a while under a heavier load than the tests use. Every request is
counted as served, refused (a prompt 4xx/503 naming its reason) or failed (a deadline, the
client's or the gateway's; a reset; a 5xx; wrong outputs); a lost request is one that failed
(``braid_dev.reliability.load``). The fuzz campaigns keep ``FUZZ_CONCURRENCY`` requests in
flight, one of them valid, so malformed and good requests share the gateway's coalesced hop
calls; each reports how many good requests failed and the gateway's RSS growth. The machine's
facts and the load average sampled through the run are read, not typed. The merged report
goes to ``results/reliability.json`` (``braid_dev.reliability.report.ReliabilityReport``); parts
not run this time (``--skip-...``) keep their figures from the previous file.

    python bench/reliability.py                 # ~45 minutes on 2 shared cores (schemathesis ~30)
    python bench/reliability.py --quick         # the tests' sizes
    python bench/reliability.py --skip-fuzz     # faults and CRs only; fuzz figures kept
"""

from __future__ import annotations

import datetime as dt
import importlib
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from braid.settings import Settings
from braid_dev import synthetic as syn
from braid_dev.benchstats import LoadSampler, machine_facts
from braid_dev.local_runtime import LocalRuntime, start_local_runtime
from braid_dev.reliability.control_plane import (
    control_plane_rig,
    restart_apiserver,
    restart_operator,
)
from braid_dev.reliability.faults import (
    LoadSize,
    kill_host_triton,
    kill_local_triton,
    slow_host,
    stop_prometheus,
)
from braid_dev.reliability.report import CrTally, FuzzTally, ReliabilityReport, RequestTally
from braid_dev.stack import cluster as devcluster
from braid_dev.stack.gateway_process import start_gateway_process
from braid_dev.synthetic import SyntheticModels, build_synthetic_repository

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "results" / "reliability.json"
console = Console()

FULL = LoadSize(
    concurrency=6,
    batch=2,
    before=100,
    during=300,
    after=100,
    hold_s=10.0,
    deadline_s=10.0,
    wait_s=240.0,
)
QUICK = LoadSize(concurrency=3, before=10, during=20, after=10, wait_s=150.0)
FUZZ_CONCURRENCY = 8
"""Requests in flight during the binary and gRPC fuzz campaigns (one of them valid)."""
FUZZ_WARMUP_CASES = 40
"""Of each kind, before the campaigns and their 'before' RSS reading."""


def _data_plane(
    models: SyntheticModels,
    runtime: LocalRuntime,
    workdir: Path,
    size: LoadSize,
    say: Callable[[str], None],
) -> list[RequestTally]:
    local = runtime.servers["local"].grpc_address
    host = runtime.servers["host"].grpc_address
    return [
        kill_host_triton(models, local, workdir / "kill", size, progress=say),
        kill_local_triton(models, host, workdir / "kill-local", size, progress=say),
        slow_host(models, local, host, workdir / "slow", size, progress=say),
        stop_prometheus(models, runtime.servers, workdir / "prometheus", size, progress=say),
    ]


def _control_plane(
    workdir: Path, size: LoadSize, say: Callable[[str], None], crs: bool
) -> tuple[list[RequestTally], CrTally | None]:
    """The control-plane faults, then (``crs``) the invalid-CR campaign on the same cluster."""
    settings = Settings(state_dir=workdir / "state")
    say("control plane: starting a cluster of this run's own")
    try:
        devcluster.up(settings, progress=say)
        with control_plane_rig(settings, workdir / "rig", progress=say) as rig:
            tallies = [
                restart_operator(rig, size, progress=say),
                restart_apiserver(rig, settings, size, progress=say),
            ]
        return tallies, _cr_campaign(settings, say) if crs else None
    finally:
        devcluster.down(settings)


def _fuzz(
    models: SyntheticModels,
    runtime: LocalRuntime,
    workdir: Path,
    cases: int,
    say: Callable[[str], None],
) -> list[FuzzTally]:
    """The other helper's campaigns, against a gateway process of their own (its pid for leaks)."""
    try:
        fuzz_rest = importlib.import_module("braid_dev.reliability.fuzz_rest")
        fuzz_grpc = importlib.import_module("braid_dev.reliability.fuzz_grpc")
    except ImportError as exc:
        say(f"fuzz: campaigns not available ({exc})")
        return []
    catalog_file = models.catalog_path
    gateway = start_gateway_process(
        catalog_file,
        {tier: s.grpc_address for tier, s in runtime.servers.items()},
        workdir / "fuzz-routing.json",
    )
    tallies: list[FuzzTally] = []
    try:
        base = f"http://{gateway.http_address}"
        pid = gateway.process.pid
        # First-use allocations (grpc's and the allocator's buffers for the largest messages)
        # are not a leak: warm up as the tests do, so RSS growth measures what stays.
        say(f"fuzz: warm-up, {FUZZ_WARMUP_CASES} binary and gRPC cases")
        fuzz_rest.run_binary_tensor_fuzz(
            base, syn.LOCAL, FUZZ_WARMUP_CASES, seed=99, concurrency=FUZZ_CONCURRENCY
        )
        fuzz_grpc.run_grpc_fuzz(
            gateway.grpc_address,
            syn.LOCAL,
            FUZZ_WARMUP_CASES,
            seed=99,
            concurrency=FUZZ_CONCURRENCY,
        )
        say(f"fuzz: schemathesis, {cases} cases")
        tallies.append(fuzz_rest.run_schemathesis(base, cases, pid=pid))
        say(f"fuzz: malformed binary tensors, {cases // 2} cases")
        tallies.append(
            fuzz_rest.run_binary_tensor_fuzz(
                base, syn.LOCAL, cases // 2, pid=pid, concurrency=FUZZ_CONCURRENCY
            )
        )
        say(f"fuzz: malformed gRPC messages, {cases // 2} cases")
        tallies.append(
            fuzz_grpc.run_grpc_fuzz(
                gateway.grpc_address,
                syn.LOCAL,
                cases // 2,
                pid=pid,
                concurrency=FUZZ_CONCURRENCY,
            )
        )
    finally:
        gateway.stop()
    return tallies


def _cr_campaign(settings: Settings, say: Callable[[str], None]) -> CrTally | None:
    """``braid_dev.reliability.invalid_crs.run_invalid_cr_campaign`` on the running cluster."""
    try:
        module = importlib.import_module("braid_dev.reliability.invalid_crs")
    except ImportError as exc:
        say(f"crs: campaign not available ({exc}); keeping the previous figures")
        return None
    say("crs: invalid custom resources, as strict server-side dry-runs")
    result: CrTally = module.run_invalid_cr_campaign(settings)
    return result


def _cr_campaign_alone(workdir: Path, say: Callable[[str], None]) -> CrTally | None:
    """The CR campaign on a cluster of its own (when the control-plane faults are skipped)."""
    settings = Settings(state_dir=workdir / "state")
    try:
        devcluster.up(settings, progress=say)
        return _cr_campaign(settings, say)
    finally:
        devcluster.down(settings)


def _previous(out: Path) -> dict[str, Any]:
    try:
        return dict(ReliabilityReport.model_validate_json(out.read_text()).model_dump())
    except (OSError, ValueError):
        return {}


def _summary(report: ReliabilityReport) -> Table:
    table = Table(title="reliability")
    columns = ("scenario", "sent", "served", "fallback", "refused", "failed", "converged")
    for col in columns:
        table.add_column(col, justify="right" if col not in ("scenario", "converged") else "left")
    for s in report.scenarios:
        table.add_row(
            s.scenario,
            str(s.sent),
            str(s.served),
            str(s.served_by_fallback),
            str(s.refused),
            str(s.lost) if s.unaccounted == 0 else f"{s.failed} (+{s.unaccounted} unseen)",
            "yes" if s.converged else "NO",
        )
    for f in report.fuzz:
        table.add_row(
            f"fuzz:{f.campaign}",
            str(f.cases),
            f"good {f.good_sent}",
            "",
            "",
            f"5xx {f.status_5xx}, good {f.good_failed}, RSS +{f.rss_growth_mib} MiB",
            "",
        )
    return table


def _meta(
    previous: dict[str, Any],
    size: LoadSize,
    faults: bool,
    fuzz: bool,
    crs: bool,
    load: dict[str, Any],
) -> dict[str, float | int | str]:
    """What this run measured, when, on what machine under what load; parts not run keep
    the previous run's entries."""
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    meta = {k: v for k, v in previous.items() if k.split("_")[0] in ("faults", "fuzz", "crs")}
    machine = machine_facts()
    meta |= {
        f"machine_{key}": value if isinstance(value, int | float | str) else str(value)
        for key, value in machine.items()
        if value is not None
    }
    meta |= {
        ("" if key.startswith("load_") else "load_") + key: (
            str(value).lower()
            if isinstance(value, bool)
            else value
            if isinstance(value, int | float | str)
            else str(value)  # uptime's [1, 5, 15]-minute readings: meta holds scalars
        )
        for key, value in load.items()
        if key != "every_s"
    }
    meta["size"] = "quick" if size == QUICK else "full"
    if faults:
        meta["faults_at"] = now
        meta["faults_load"] = (
            f"{size.concurrency} clients x batch {size.batch}, deadline {size.deadline_s:g} s, "
            f"each fault held >= {size.hold_s:g} s"
        )
    if fuzz:
        meta["fuzz_at"] = now
        meta["fuzz_concurrency"] = FUZZ_CONCURRENCY
        meta["fuzz_warmup_cases"] = FUZZ_WARMUP_CASES
    if crs:
        meta["crs_at"] = now
    return meta


def main(
    out: Annotated[Path, typer.Option(help="Where the report goes.")] = OUT,
    quick: Annotated[bool, typer.Option(help="The tests' sizes (a smoke run).")] = False,
    skip_data_plane: Annotated[bool, typer.Option()] = False,
    skip_control_plane: Annotated[bool, typer.Option()] = False,
    skip_fuzz: Annotated[bool, typer.Option()] = False,
    skip_crs: Annotated[bool, typer.Option()] = False,
    fuzz_cases: Annotated[
        int, typer.Option(help="schemathesis cases (half as many of each other kind).")
    ] = 10_000,
) -> None:
    size = QUICK if quick else FULL
    previous = _previous(out)
    scenarios: list[RequestTally] = []
    fuzz: list[FuzzTally] = []
    crs: CrTally | None = None
    sampler = LoadSampler(every_s=15.0)
    with (
        sampler,
        tempfile.TemporaryDirectory(prefix="braid-reliability-") as tmp,
        Progress(
            SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console
        ) as bar,
    ):
        workdir = Path(tmp)
        task = bar.add_task("starting", total=None)

        def say(text: str) -> None:
            bar.update(task, description=text)
            bar.console.log(text)

        if not (skip_data_plane and skip_fuzz):
            say("building the synthetic provider pair and its tritonservers")
            models = build_synthetic_repository(workdir / "repo")
            with start_local_runtime(
                models.repository, models.catalog, workdir / "runtime"
            ) as runtime:
                if not skip_data_plane:
                    scenarios += _data_plane(models, runtime, workdir, size, say)
                if not skip_fuzz:
                    fuzz = _fuzz(models, runtime, workdir, 200 if quick else fuzz_cases, say)
        if not skip_control_plane:
            faults, crs = _control_plane(workdir / "control", size, say, crs=not skip_crs)
            scenarios += faults
        elif not skip_crs:
            crs = _cr_campaign_alone(workdir / "crs", say)
        say("done")

    kept_scenarios = [
        RequestTally.model_validate(s)
        for s in previous.get("scenarios", [])
        if s["scenario"] not in {t.scenario for t in scenarios}
    ]
    report = ReliabilityReport(
        scenarios=[*scenarios, *kept_scenarios],
        fuzz=fuzz or [FuzzTally.model_validate(f) for f in previous.get("fuzz", [])],
        crs=crs or (CrTally.model_validate(previous["crs"]) if previous.get("crs") else None),
        meta=_meta(
            previous.get("meta") or {},
            size,
            bool(scenarios),
            bool(fuzz),
            crs is not None,
            sampler.summary(),
        ),
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report.model_dump_json(indent=2) + "\n")
    console.print(_summary(report))
    console.print(
        f"requests_sent {report.requests_sent}  served {report.requests_served}  "
        f"refused {report.requests_refused}  lost (failed) {report.requests_lost}  "
        f"fuzz_cases {report.fuzz_cases}  fuzz_5xx {report.fuzz_5xx}  "
        f"invalid_crs {report.invalid_crs_tried}/{report.invalid_crs_admitted} admitted  "
        f"hostile_crs {report.hostile_crs_tried}/{report.hostile_crs_admitted} admitted -> {out}"
    )


if __name__ == "__main__":
    typer.run(main)
