"""Cluster mode's sink: the decision into the OffloadPolicy's status and Events.

The status is written only when ``StatusGate`` says so (a change, at most every
``min_interval_s`` unless traffic moves, at least every ``refresh_s``); each change of the
active path becomes an Event, so ``kubectl describe offloadpolicy`` tells the story. Between
writes the policy is read every ``spec_poll_s`` so spec edits still take effect.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from braid.api.v1alpha1.offloadpolicy import OffloadPolicyStatus
from braid.controller.status import PathChange, StatusGate, path_change
from braid.kube.client import Kube
from braid.kube.policy_status import read_policy, record_policy_event, write_policy_status
from braid.logs import log_event
from braid.policy.decision import Decision

logger = logging.getLogger(__name__)

PATH_CHANGED = "PathChanged"


@dataclass
class PolicyStatusSink:
    """Writes one OffloadPolicy's status on change; counts its writes (the bench reads them)."""

    name: str
    namespace: str
    kube: Kube
    on_policy: Callable[[dict[str, Any]], None] = lambda _obj: None
    """Called with the object each time it is read: the controller follows its spec."""
    gate: StatusGate = field(default_factory=StatusGate)
    spec_poll_s: float = 5.0
    clock: Callable[[], float] = time.time
    status_writes: int = 0
    event_writes: int = 0
    _last: OffloadPolicyStatus | None = None
    _last_at: float | None = None
    _read_at: float | None = None
    _primary: str | None = None
    _object: dict[str, Any] | None = None
    _pending: list[PathChange] = field(default_factory=list)

    def __call__(self, decision: Decision, status: OffloadPolicyStatus) -> None:
        now = self.clock()
        named = {self._primary, decision.primary} - {None}
        costs = {p: a for p in named if p is not None and (a := decision.assessment(p))}
        change = path_change(self._primary, decision, costs)
        self._primary = decision.primary
        if change is not None:
            # Kept until it is written: a failed round must not lose the story of a switch.
            self._pending.append(change)
        if self.gate.due(status, self._last, self._last_at, now):
            obj = write_policy_status(self.name, self.namespace, status, self.kube)
            self.status_writes += 1
            self._last, self._last_at = status, now
            self._seen(obj, now)
            log_event(logger, "controller.status_written", logging.DEBUG, policy=self.name)
        elif self._read_at is None or now - self._read_at >= self.spec_poll_s:
            self._seen(read_policy(self.name, self.namespace, self.kube), now)
        while self._pending and self._object:
            record_policy_event(self._object, PATH_CHANGED, self._pending[0].message, self.kube)
            self._pending.pop(0)
            self.event_writes += 1

    def _seen(self, obj: dict[str, Any], now: float) -> None:
        self._read_at = now
        if obj:
            self._object = obj
            self.on_policy(obj)
