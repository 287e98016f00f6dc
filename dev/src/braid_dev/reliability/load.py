"""A bounded load generator over the gateway that sorts every answer into a ``RequestTally``.

The fault scenarios run it on a thread of its own (its own event loop, gRPC aio clients) while
the calling thread breaks things, so the load never stops because the fault injection blocks.
Every request has a deadline (the gRPC deadline the gateway turns into each hop's time left),
and every outcome is recorded with when it finished, so a scenario can ask what happened
before, during and after its fault.

What counts as what, decided here once:

- **served**: outputs came back (and, when a checker is given, they are the right ones for
  the path the gateway says served them); ``braid_fallback`` in the response parameters
  marks a fallback.
- **refused**: the gateway answered *promptly* with an error that names its reason (every
  ``braid.dataplane.errors.Reason`` value starts the message) and a 4xx-like status or
  UNAVAILABLE (503): the client learns at once that it should go elsewhere or retry. Prompt
  means within ``PROMPT_SHARE`` of the request's deadline.
- **failed**: everything else: a deadline (the client's own, or the gateway's DEADLINE_EXCEEDED
  (504): either way the client waited it out), a reset or refused connection, an INTERNAL or
  upstream error (5xx), a CANCELLED the client did not ask for, a refusal that only came
  after most of the deadline, an answer with wrong outputs. A *lost* request is one that
  failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import tritonclient.grpc.aio as grpcaio
from tritonclient.utils import InferenceServerException

from braid.dataplane.errors import Reason
from braid_dev.reliability.report import RequestTally

SERVED = "served"
REFUSED = "refused"
FAILED = "failed"

PROMPT_SHARE = 0.5
"""A refusal that took longer than this share of the request's deadline is a failure: the
client spent most of its time budget before it learned anything."""

_REASONS = tuple(r.value for r in Reason)
_FAILING_REASONS = (
    Reason.INTERNAL.value,
    Reason.UPSTREAM_ERROR.value,
    Reason.DEADLINE.value,
    Reason.CANCELLED.value,
)
_REFUSING_CODES = {
    "StatusCode.INVALID_ARGUMENT",
    "StatusCode.NOT_FOUND",
    "StatusCode.RESOURCE_EXHAUSTED",
    "StatusCode.UNIMPLEMENTED",
    "StatusCode.UNAVAILABLE",
}

Checker = Callable[[str, npt.NDArray[Any]], bool]
"""``(path that served it, outputs) -> whether they are right``."""


@dataclass(frozen=True)
class Outcome:
    """One request: when it finished, how, and what served or refused it."""

    sent_at: float
    done_at: float
    kind: str
    path: str | None = None
    fallback: str | None = None
    detail: str = ""
    """The refusal's reason, or why the request failed."""
    message: str = ""
    """What the gateway said, for a failure (the tally's ``first_failure``)."""


def classify_error(
    status: str | None, message: str, waited_s: float = 0.0, deadline_s: float = float("inf")
) -> tuple[str, str]:
    """``(kind, detail)`` for a gRPC error the client received after ``waited_s``."""
    text = (message or "").strip()
    reason = next((r for r in _REASONS if text.startswith(f"{r}:")), None)
    if reason is None:
        # No reason: the client's own deadline, a reset, a refused connection.
        return FAILED, f"{status or 'no status'}: {text[:120]}"
    if reason in _FAILING_REASONS or status not in _REFUSING_CODES:
        return FAILED, f"{status}: {reason}"
    if waited_s > PROMPT_SHARE * deadline_s:
        return FAILED, f"slow_refusal: {reason}"
    return REFUSED, reason


@dataclass
class GatewayLoad:
    """``concurrency`` clients sending ``inputs`` to ``model`` at ``address`` until stopped.

    ``max_requests`` bounds the run (the load stops by itself there); ``stop()`` ends it
    sooner. Use as a context manager or ``start()``/``stop()``.
    """

    address: str
    model: str
    input_name: str
    output_name: str
    inputs: npt.NDArray[np.float32]
    concurrency: int = 4
    deadline_s: float = 10.0
    max_requests: int = 100_000
    checker: Checker | None = None
    pause_s: float = 0.0
    """Between one client's requests: keeps a contended machine responsive."""
    backoff_s: float = 0.05
    """After an answer that was not served, as a client retrying would: refusals come back
    in microseconds, and a loop of them would only burn the CPU the recovery needs."""
    outcomes: list[Outcome] = field(default_factory=list)
    _thread: threading.Thread | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _sent: int = 0
    _error: BaseException | None = None

    # -- control, from any thread ----------------------------------------------------------

    def start(self) -> GatewayLoad:
        self._thread = threading.Thread(target=self._main, name="braid-load", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.deadline_s + 30)
        if self._error is not None:
            raise RuntimeError(f"the load generator failed: {self._error!r}") from self._error

    def __enter__(self) -> GatewayLoad:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def done(self) -> bool:
        return self._thread is not None and not self._thread.is_alive()

    def snapshot(self) -> list[Outcome]:
        with self._lock:
            return list(self.outcomes)

    def count(
        self,
        kind: str | None = None,
        *,
        since: float | None = None,
        path: str | None = None,
        fallback: bool | None = None,
    ) -> int:
        """Outcomes of ``kind`` finished after ``since`` (monotonic), served by ``path``."""
        n = 0
        for o in self.snapshot():
            if kind is not None and o.kind != kind:
                continue
            if since is not None and o.done_at < since:
                continue
            if path is not None and o.path != path:
                continue
            if fallback is not None and (o.fallback is not None) != fallback:
                continue
            n += 1
        return n

    def wait_for(
        self,
        n: int,
        what: str,
        timeout_s: float,
        *,
        kind: str | None = SERVED,
        since: float | None = None,
        path: str | None = None,
        fallback: bool | None = None,
    ) -> None:
        """Block until ``n`` such outcomes exist; ``TimeoutError`` naming ``what`` otherwise."""
        deadline = time.monotonic() + timeout_s
        while self.count(kind, since=since, path=path, fallback=fallback) < n:
            if self._error is not None:
                raise RuntimeError(f"the load generator failed: {self._error!r}")
            if self.done:
                raise TimeoutError(f"the load ended (max_requests) before {what}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {what} within {timeout_s:.0f} s")
            time.sleep(0.05)

    def tally(
        self,
        scenario: str,
        description: str = "",
        *,
        converged: bool = False,
        **notes: float | int | str,
    ) -> RequestTally:
        """The run so far as a ``RequestTally`` (call after ``stop()`` for the final one)."""
        outcomes = self.snapshot()
        with self._lock:
            sent = self._sent
        details = Counter(f"{o.kind}_{o.detail}" for o in outcomes if o.kind != SERVED and o.detail)
        fallbacks = Counter(f"fallback_{o.fallback}" for o in outcomes if o.fallback)
        served_by = Counter(f"served_by_{o.path}" for o in outcomes if o.kind == SERVED)
        # The counts name a failure's kind; a failing test should also say what it was.
        first = next((o for o in outcomes if o.kind == FAILED and o.message), None)
        if first is not None:
            notes = {"first_failure": first.message[:300], **notes}
        return RequestTally(
            scenario=scenario,
            description=description,
            sent=sent,
            served=sum(1 for o in outcomes if o.kind == SERVED),
            served_by_fallback=sum(1 for o in outcomes if o.kind == SERVED and o.fallback),
            refused=sum(1 for o in outcomes if o.kind == REFUSED),
            failed=sum(1 for o in outcomes if o.kind == FAILED),
            converged=converged,
            notes={**dict(details), **dict(fallbacks), **dict(served_by), **notes},
        )

    # -- the load, on its own loop ---------------------------------------------------------

    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as exc:  # reported by stop()
            self._error = exc

    def _take(self) -> bool:
        with self._lock:
            if self._stop.is_set() or self._sent >= self.max_requests:
                return False
            self._sent += 1
            return True

    def _record(self, outcome: Outcome) -> None:
        with self._lock:
            self.outcomes.append(outcome)

    async def _client(self) -> None:
        client = grpcaio.InferenceServerClient(self.address)
        tensor = grpcaio.InferInput(self.input_name, list(self.inputs.shape), "FP32")
        tensor.set_data_from_numpy(self.inputs)
        wanted = [grpcaio.InferRequestedOutput(self.output_name)]
        try:
            while self._take():
                served = await self._one(client, tensor, wanted)
                pause = self.pause_s if served else max(self.pause_s, self.backoff_s)
                if pause:
                    await asyncio.sleep(pause)
        finally:
            with contextlib.suppress(Exception):
                await client.close()

    async def _one(
        self,
        client: grpcaio.InferenceServerClient,
        tensor: grpcaio.InferInput,
        wanted: Sequence[grpcaio.InferRequestedOutput],
    ) -> bool:
        """One request, recorded; whether it was served."""
        sent_at = time.monotonic()
        try:
            result = await client.infer(
                self.model, [tensor], outputs=list(wanted), client_timeout=self.deadline_s
            )
        except InferenceServerException as exc:
            done_at = time.monotonic()
            kind, detail = classify_error(
                exc.status(), exc.message(), done_at - sent_at, self.deadline_s
            )
            message = exc.message() if kind == FAILED else ""
            self._record(Outcome(sent_at, done_at, kind, detail=detail, message=message or ""))
            return False
        except Exception as exc:  # a reset or anything else the client raised: no answer
            self._record(
                Outcome(
                    sent_at, time.monotonic(), FAILED, detail=type(exc).__name__, message=str(exc)
                )
            )
            return False
        params = {
            k: getattr(v, v.WhichOneof("parameter_choice"))
            for k, v in result.get_response().parameters.items()
        }
        path = str(params.get("braid_path", ""))
        fallback = params.get("braid_fallback")
        outputs = result.as_numpy(self.output_name)
        if outputs is None or (self.checker is not None and not self.checker(path, outputs)):
            self._record(Outcome(sent_at, time.monotonic(), FAILED, path, detail="wrong_outputs"))
            return False
        self._record(
            Outcome(
                sent_at,
                time.monotonic(),
                SERVED,
                path,
                str(fallback) if fallback is not None else None,
            )
        )
        return True

    async def _run(self) -> None:
        async with asyncio.TaskGroup() as tasks:
            for _ in range(self.concurrency):
                tasks.create_task(self._client())
