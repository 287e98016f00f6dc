"""The path controller's loop: gather metrics, decide, write — nothing else.

The decision is ``braid.policy.decision.choose_paths``; this module only owns the clock, the
Prometheus client and where decisions go. Two sinks: in local mode the gateway's routing file
(``write_routing_table``, atomic; the gateway reloads it), in a cluster the OffloadPolicy's
status (``braid.kube.policy_status``; the operator renders the routing ConfigMap from it).
Either way a sink is a callable, so the loop is the same and tests pass their own.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from braid.api.catalog import PathCatalog
from braid.api.routing import routing_table_from_policy
from braid.api.v1alpha1.offloadpolicy import OffloadPolicySpec, OffloadPolicyStatus
from braid.controller.metrics import MetricQueries, describe, gather_metrics
from braid.controller.status import policy_status, sig
from braid.dataplane.promql import PrometheusClient
from braid.dataplane.routing import write_routing_table
from braid.logs import log_event
from braid.policy.cost import Network
from braid.policy.decision import ControlSettings, Decision, PolicyState, choose_paths

logger = logging.getLogger(__name__)

DecisionSink = Callable[[Decision, OffloadPolicyStatus], None]
"""Where a decision goes: called with the decision and the status that explains it."""


def routing_file_sink(catalog: PathCatalog, policy: OffloadPolicySpec, path: Path) -> DecisionSink:
    """Local mode: write the gateway's routing table when the active split changes."""
    last: list[tuple[tuple[str, float], ...]] = []

    def write(decision: Decision, status: OffloadPolicyStatus) -> None:
        key = tuple((p.id, p.weight) for p in decision.active)
        if last and last[0] == key:
            return
        table = routing_table_from_policy(
            policy,
            status,
            model=catalog.local_model,
            original_path=catalog.original_path,
            generation=decision.state.generation,
        )
        write_routing_table(table, path)
        last[:] = [key]

    return write


@dataclass
class PathController:
    """One model's controller: ``step()`` is one round; ``run()`` repeats it until stopped."""

    catalog: PathCatalog
    policy: OffloadPolicySpec
    prometheus: PrometheusClient
    sinks: list[DecisionSink]
    queries: MetricQueries | None = None
    settings: ControlSettings = field(default_factory=ControlSettings)
    network: Network = field(default_factory=Network)
    clock: Callable[[], float] = time.time
    state: PolicyState = field(default_factory=PolicyState)
    status: OffloadPolicyStatus | None = None
    generation: int | None = None
    """The policy's ``metadata.generation`` whose spec ``policy`` is (cluster mode)."""

    def __post_init__(self) -> None:
        if self.queries is None:
            self.queries = MetricQueries(model=self.catalog.local_model)

    def step(self) -> Decision:
        assert self.queries is not None
        now = self.clock()
        metrics = gather_metrics(self.prometheus, self.queries, now, self.network)
        before = self.state.primary
        decision = choose_paths(self.catalog, metrics, self.policy, self.state, self.settings)
        self.state = decision.state
        self.status = policy_status(decision, self.status, now=now, generation=self.generation)

        def f(path: str | None) -> str:
            found = decision.assessment(path or "")
            cost = found.cost if found is not None else None
            return str(sig(cost)) if cost is not None else "n/a"

        # One INFO line per decision that changed something; the rounds that hold are DEBUG.
        log_event(
            logger,
            "controller.decision",
            logging.INFO if decision.changed else logging.DEBUG,
            changed=decision.changed,
            old=before or "-",
            new=decision.primary,
            old_cost=f(before),
            new_cost=f(decision.primary),
            active=",".join(f"{p.id}={p.weight}" for p in decision.active),
            code=decision.code,
            degraded=decision.degraded,
            reason=decision.reason,
            **(describe(metrics) if metrics else {}),
        )
        for sink in self.sinks:
            try:
                sink(decision, self.status)
            except Exception as exc:  # a failed write must not stop the loop; retried next round
                log_event(logger, "controller.write_failed", logging.WARNING, error=repr(exc))
        return decision

    def run(self, interval_s: float, stop: threading.Event) -> None:
        """Decide every ``interval_s`` until ``stop`` is set (rounds never overlap)."""
        while not stop.is_set():
            started = time.monotonic()
            self.step()
            stop.wait(max(0.0, interval_s - (time.monotonic() - started)))


@dataclass
class ControllerThread:
    """A controller on a background thread (benchmarks and tests); ``stop()`` joins it."""

    controller: PathController
    interval_s: float = 1.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> ControllerThread:
        self._thread = threading.Thread(
            target=self.controller.run, args=(self.interval_s, self._stop), daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def __enter__(self) -> ControllerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
