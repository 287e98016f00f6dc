"""Fault scenarios of the data plane under load: each breaks one thing and counts every request.

A scenario starts what it breaks (so the session's shared servers are never harmed), puts the
gateway over it with the synthetic provider pair (``braid_dev.synthetic``), runs a
``GatewayLoad``, injects the fault, and waits — bounded — for three things: requests served
before the fault, requests answered after it, and the system back to its state before (the
convergence). It returns a ``RequestTally``; sizes are parameters, so the tests run them small
and ``bench/reliability.py`` runs them bigger.

The control-plane scenarios (operator and API-server restarts) are in
``braid_dev.reliability.control_plane``.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from prometheus_client import CollectorRegistry

from braid.api.catalog import PathCatalog
from braid.api.routing import Endpoints, RoutingTable, single_path_table
from braid.api.v1alpha1.offloadpolicy import OffloadPolicySpec
from braid.controller.loop import PathController, routing_file_sink
from braid.controller.metrics import MetricQueries
from braid.dataplane.metrics import GatewayMetrics
from braid.dataplane.promql import PrometheusClient
from braid.dataplane.routing import read_routing_table, write_routing_table
from braid.dataplane.server import GatewayOptions, GatewayThread, running_gateway
from braid.dataplane.service import InferenceService, ModelSource, build_service
from braid.policy.decision import ControlSettings
from braid.render.prometheus_config import ScrapeTarget
from braid_dev import synthetic as syn
from braid_dev.local_runtime import make_tier_views
from braid_dev.reliability.load import REFUSED, SERVED, GatewayLoad
from braid_dev.reliability.proxy import LatencyProxy
from braid_dev.reliability.report import RequestTally
from braid_dev.stack.prometheus import PrometheusServer, start_prometheus
from braid_dev.stack.triton import TritonServer, start_triton
from braid_dev.synthetic import SyntheticModels

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


@dataclass(frozen=True)
class LoadSize:
    """How much load a scenario sends, and how long its bounded waits may last."""

    concurrency: int = 4
    batch: int = 2
    before: int = 20
    """Requests served before the fault is injected."""
    during: int = 40
    """Requests answered after the fault hit (served, most by fallback, or refused)."""
    after: int = 20
    """Requests served the normal way once the system converged."""
    hold_s: float = 0.0
    """The fault lasts at least this long (after the ``during`` answers)."""
    deadline_s: float = 10.0
    """Each request's gRPC deadline."""
    wait_s: float = 120.0
    """Bound of each wait; generous, the machine is shared."""


DEFAULT_LOAD = LoadSize()


def output_checker(
    models: SyntheticModels, x: npt.NDArray[np.float32]
) -> Callable[[str, Any], bool]:
    """Whether outputs are the in-process result of the path that served them."""
    want = {p.id: models.run_path(p.id, x) for p in models.catalog.paths}

    def check(path: str, out: Any) -> bool:
        expected = want.get(path)
        return expected is not None and bool(np.allclose(out, expected, rtol=1e-4, atol=1e-5))

    return check


@contextlib.contextmanager
def gateway_over(
    catalog: PathCatalog,
    endpoints: Endpoints,
    routing_file: Path,
    table: RoutingTable | None = None,
) -> Iterator[GatewayThread]:
    """The gateway on a thread over ``endpoints``, reading ``routing_file`` (polled quickly)."""
    if table is not None:
        write_routing_table(table, routing_file)
    metrics = GatewayMetrics(CollectorRegistry())

    async def build() -> InferenceService:
        return build_service(
            [ModelSource(catalog, endpoints, routing_file)],
            metrics=metrics,
            routing_poll_s=0.1,
            rng=random.Random(1234),
        )

    with running_gateway(build, GatewayOptions()) as thread:
        yield thread


def gateway_load(
    thread: GatewayThread, models: SyntheticModels, size: LoadSize, seed: int = 0
) -> GatewayLoad:
    """A load over ``thread``'s gateway, checking each answer against the in-process model."""
    assert thread.gateway is not None
    x = (np.random.default_rng(seed).random((size.batch, *syn.INPUT_SHAPE))).astype(np.float32)
    original = models.catalog.path(models.catalog.original_path)
    return GatewayLoad(
        address=thread.gateway.grpc_address,
        model=models.catalog.local_model,
        input_name=original.hops[0].input.name,
        output_name=original.hops[-1].output.name,
        inputs=x,
        concurrency=size.concurrency,
        deadline_s=size.deadline_s,
        checker=output_checker(models, x),
    )


def _tier_server(
    models: SyntheticModels, workdir: Path, name: str, tier: str = "host"
) -> tuple[Path, TritonServer]:
    views = make_tier_views(models.repository, models.catalog, workdir / "views")
    return views[tier], start_triton(views[tier], workdir=workdir / name, name=name)


# -- 1. the host tier's tritonserver is killed mid-load ---------------------------------------


@dataclass(frozen=True)
class _KillPlan:
    """What one Triton-kill scenario breaks and what it expects meanwhile."""

    scenario: str
    description: str
    tier: str
    """The tier whose tritonserver is killed; the other one runs at ``other_address``."""
    during: str
    """``served`` (by the fallback) or ``refused`` (no path fits) while it is down."""
    seed: int = 0


def _kill_triton(
    plan: _KillPlan,
    models: SyntheticModels,
    other_address: str,
    workdir: Path,
    size: LoadSize,
    progress: Progress,
) -> RequestTally:
    """Traffic on the cross path; SIGKILL ``plan.tier``'s tritonserver, restart it on its
    ports, and count every request until the cross path serves again."""
    catalog = models.catalog
    view, victim = _tier_server(models, workdir, f"{plan.tier}-a", tier=plan.tier)
    servers = [victim]
    notes: dict[str, float | int | str] = {}
    converged = False
    try:
        addresses = {plan.tier: victim.grpc_address}
        addresses.update({t: other_address for t in ("local", "host") if t != plan.tier})
        endpoints = Endpoints(servers=addresses)
        table = single_path_table(catalog.local_model, syn.CROSS, generation=1)
        with gateway_over(catalog, endpoints, workdir / "routing.json", table) as thread:
            load = gateway_load(thread, models, size, seed=plan.seed)
            with load:
                progress(f"{plan.scenario}: load on the cross path")
                load.wait_for(
                    size.before, "requests served by the cross path", size.wait_s, path=syn.CROSS
                )
                progress(f"{plan.scenario}: SIGKILL the {plan.tier} tritonserver")
                os.killpg(victim.process.pid, signal.SIGKILL)
                killed_at = time.monotonic()
                if plan.during == "served":
                    load.wait_for(
                        size.during,
                        f"requests served with the {plan.tier} server down",
                        size.wait_s,
                        since=killed_at,
                    )
                else:
                    load.wait_for(
                        size.during,
                        f"requests refused with the {plan.tier} server down",
                        size.wait_s,
                        kind=REFUSED,
                        since=killed_at,
                    )
                hold(killed_at, size.hold_s)
                if plan.during == "served":
                    notes["served_by_fallback_while_down"] = load.count(
                        SERVED, since=killed_at, fallback=True
                    )
                else:
                    notes["refused_while_down"] = load.count(REFUSED, since=killed_at)
                progress(f"{plan.scenario}: restart the {plan.tier} server on its ports")
                restarted = start_triton(
                    view,
                    workdir=workdir / f"{plan.tier}-b",
                    name=f"{plan.tier}-b",
                    ports=victim.ports,
                )
                servers.append(restarted)
                back_at = time.monotonic()
                notes[f"{plan.tier}_down_s"] = round(back_at - killed_at, 2)
                try:
                    load.wait_for(
                        size.after,
                        "requests served by the cross path again",
                        size.wait_s,
                        since=back_at,
                        path=syn.CROSS,
                        fallback=False,
                    )
                    converged = True
                    notes["cross_again_after_s"] = round(time.monotonic() - back_at, 2)
                except TimeoutError as exc:
                    notes["error"] = str(exc)
    finally:
        for server in servers:
            server.stop()
    return load.tally(plan.scenario, plan.description, **notes, converged=converged)


def kill_host_triton(
    models: SyntheticModels,
    local_address: str,
    workdir: Path,
    size: LoadSize = DEFAULT_LOAD,
    progress: Progress = _quiet,
) -> RequestTally:
    """All traffic on the cross path; SIGKILL the host's tritonserver, then restart it.

    While the host is down every request must be served by the fallback (the original path,
    resumed after the hops it shares with the cross path); once the host is back on the same
    ports the cross path must serve again.
    """
    plan = _KillPlan(
        "kill-host-triton",
        "host tier's tritonserver SIGKILLed under load on the cross path, restarted on its ports",
        tier="host",
        during="served",
    )
    return _kill_triton(plan, models, local_address, workdir, size, progress)


# -- 1b. the local tier's tritonserver is killed: no path fits ---------------------------------


def kill_local_triton(
    models: SyntheticModels,
    host_address: str,
    workdir: Path,
    size: LoadSize = DEFAULT_LOAD,
    progress: Progress = _quiet,
) -> RequestTally:
    """Traffic on the cross path; SIGKILL the *local* tritonserver, then restart it.

    Every path starts on the local server and the fallback runs there, so while it is down no
    path fits: each request must get a clear refusal naming why (503, ``upstream_unavailable``
    or ``not_ready``), not a hang or a bare 500. Once the server is back, requests are served.
    """
    plan = _KillPlan(
        "kill-local-triton",
        "local tier's tritonserver SIGKILLed under load (no path fits), restarted on its ports",
        tier="local",
        during="refused",
        seed=5,
    )
    return _kill_triton(plan, models, host_address, workdir, size, progress)


# -- 2. the host is slow ------------------------------------------------------------------------


def slow_host(
    models: SyntheticModels,
    local_address: str,
    host_address: str,
    workdir: Path,
    size: LoadSize = DEFAULT_LOAD,
    *,
    delay_s: float = 0.3,
    latency_bound_us: int = 150_000,
    progress: Progress = _quiet,
) -> RequestTally:
    """Traffic on the cross path through a proxy that then adds ``delay_s`` per host call.

    The cross path's three host hops then take far longer than the latency bound L_T: the
    gateway must notice and serve by the fallback instead of making every request wait; once
    the delay is gone the cross path must serve again.
    """
    catalog = models.catalog
    notes: dict[str, float | int | str] = {"delay_s": delay_s, "latency_bound_us": latency_bound_us}
    converged = False
    with LatencyProxy(host_address) as proxy:
        endpoints = Endpoints(servers={"local": local_address, "host": proxy.address})
        table = single_path_table(catalog.local_model, syn.CROSS, generation=1).model_copy(
            update={"latency_bound_us": latency_bound_us}
        )
        with gateway_over(catalog, endpoints, workdir / "routing.json", table) as thread:
            load = gateway_load(thread, models, size, seed=1)
            with load:
                progress("slow-host: load on the cross path")
                load.wait_for(
                    size.before, "requests served by the cross path", size.wait_s, path=syn.CROSS
                )
                progress(f"slow-host: the host answers {delay_s * 1e3:.0f} ms later")
                proxy.delay_s = delay_s
                slowed_at = time.monotonic()
                load.wait_for(
                    size.during,
                    "requests served by the fallback while slow",
                    size.wait_s,
                    since=slowed_at,
                    fallback=True,
                )
                hold(slowed_at, size.hold_s)
                notes["served_while_slow"] = load.count(SERVED, since=slowed_at)
                progress("slow-host: the host is fast again")
                proxy.delay_s = 0.0
                fast_at = time.monotonic()
                try:
                    load.wait_for(
                        size.after,
                        "requests served by the cross path again",
                        size.wait_s,
                        since=fast_at,
                        path=syn.CROSS,
                        fallback=False,
                    )
                    converged = True
                    notes["cross_again_after_s"] = round(time.monotonic() - fast_at, 2)
                except TimeoutError as exc:
                    notes["error"] = str(exc)
    return load.tally(
        "slow-host",
        f"a proxy adds {delay_s * 1e3:.0f} ms to each host call under load on the cross path "
        f"(L_T {latency_bound_us / 1e3:.0f} ms), then stops",
        **notes,
        converged=converged,
    )


# -- 5. Prometheus stops --------------------------------------------------------------------------


def controller_policy() -> OffloadPolicySpec:
    """Idle, the original path wins; what matters here is that decisions can be made at all."""
    from braid.api.common import ObjectRef
    from braid.api.v1alpha1.offloadpolicy import CostCoefficients, HostRef, Hysteresis

    return OffloadPolicySpec(
        model_ref=ObjectRef(name=syn.LOCAL),
        cost=CostCoefficients(c_local=1e-3, c_host=1e-3),
        latency_bound_microseconds=5_000_000,
        candidate_paths=[syn.CROSS],
        allowed_hosts=[HostRef(namespace="local", model=syn.HOST)],
        hysteresis=Hysteresis(cost_margin=0.1, min_dwell_seconds=0),
    )


def stop_prometheus(
    models: SyntheticModels,
    servers: dict[str, TritonServer],
    workdir: Path,
    size: LoadSize = DEFAULT_LOAD,
    progress: Progress = _quiet,
) -> RequestTally:
    """The path controller decides from Prometheus; stop Prometheus under load, then restart it.

    Without metrics the controller must say it is degraded and keep its last decision (the
    routing table stays as it is), the gateway must keep serving; once Prometheus is back on
    its port the controller must decide again.
    """
    catalog = models.catalog
    routing = workdir / "routing.json"
    targets = [
        ScrapeTarget(s.metrics_address, "triton", {"tier": tier}) for tier, s in servers.items()
    ]
    notes: dict[str, float | int | str] = {}
    converged = False
    prometheus: PrometheusServer | None = start_prometheus(
        targets, workdir=workdir / "prometheus", scrape_interval="1s"
    )
    assert prometheus is not None
    port = prometheus.port
    endpoints = Endpoints(servers={tier: s.grpc_address for tier, s in servers.items()})
    table = single_path_table(catalog.local_model, catalog.original_path)
    try:
        with (
            gateway_over(catalog, endpoints, routing, table) as thread,
            PrometheusClient(prometheus.url, timeout=2.0) as prom,
        ):
            spec = controller_policy()
            controller = PathController(
                catalog=catalog,
                policy=spec,
                prometheus=prom,
                sinks=[routing_file_sink(catalog, spec, routing)],
                queries=MetricQueries(model=catalog.local_model, window="3s"),
                settings=ControlSettings(capacity={"local": 1.0, "host": 1.0}),
            )
            load = gateway_load(thread, models, size, seed=2)
            with load:
                progress("stop-prometheus: waiting for the controller to decide from metrics")
                _step_until(
                    controller, lambda d: not d.degraded, size.wait_s, "a decision from Prometheus"
                )
                load.wait_for(size.before, "requests served", size.wait_s)
                # What the routing holds when Prometheus goes away: whichever path the
                # measured load made cheapest, the original or not, is what must be kept.
                before = read_routing_table(routing)
                generation = before.generation
                notes["decided_path"] = ",".join(sorted(p.id for p in before.paths if p.weight > 0))
                progress("stop-prometheus: stop Prometheus")
                prometheus.stop()
                prometheus = None
                stopped_at = time.monotonic()
                degraded = _step_until(
                    controller,
                    lambda d: d.degraded,
                    size.wait_s,
                    "a degraded decision without Prometheus",
                )
                notes["degraded_reason"] = degraded.reason[:160]
                notes["kept_path"] = ",".join(sorted(p.id for p in degraded.active))
                load.wait_for(
                    size.during, "requests served without Prometheus", size.wait_s, since=stopped_at
                )
                hold(stopped_at, size.hold_s)
                notes["routing_unchanged_while_down"] = int(
                    read_routing_table(routing).generation == generation
                )
                progress("stop-prometheus: restart Prometheus on its port")
                prometheus = start_prometheus(
                    targets, workdir=workdir / "prometheus-2", scrape_interval="1s", port=port
                )
                back_at = time.monotonic()
                try:
                    _step_until(
                        controller,
                        lambda d: not d.degraded,
                        size.wait_s,
                        "a decision from Prometheus again",
                    )
                    load.wait_for(size.after, "requests served after", size.wait_s, since=back_at)
                    converged = bool(notes["routing_unchanged_while_down"])
                    notes["deciding_again_after_s"] = round(time.monotonic() - back_at, 2)
                except TimeoutError as exc:
                    notes["error"] = str(exc)
    finally:
        if prometheus is not None:
            prometheus.stop()
    return load.tally(
        "stop-prometheus",
        "Prometheus stopped under load while the path controller decides from it, restarted",
        **notes,
        converged=converged,
    )


def hold(since: float, hold_s: float) -> None:
    """Keep a fault in place until ``hold_s`` after ``since`` (the load goes on meanwhile)."""
    left = since + hold_s - time.monotonic()
    if left > 0:
        time.sleep(left)


def _step_until(
    controller: PathController, done: Callable[[Any], bool], timeout_s: float, what: str
) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        decision = controller.step()
        if done(decision):
            return decision
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} within {timeout_s:.0f} s: {decision.reason}")
        time.sleep(0.5)
