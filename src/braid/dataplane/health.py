"""Which of an executor's servers can be called: probed once a second, not per request.

A probe asks every address the compiled paths call for its ready models (one
``RepositoryIndex``), opens the address's circuit in the pool when every model needed there
is ready and closes it otherwise, and tells the planner, whose segments depend on what is
ready. Requests only read the result (``TritonPool.available``), so a dead host costs a
request nothing but the fallback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import grpc
from tritonclient.grpc import service_pb2

from braid.dataplane.compiler import CompiledCatalog, CompiledPath, SegmentPlanner
from braid.dataplane.pool import TritonPool
from braid.logs import log_event

logger = logging.getLogger(__name__)

RENEW_ON = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
"""Probe failures that say the channel, not the server's answer, is what failed: a probe is
a 1-s RepositoryIndex, so a channel still connecting to a pod IP that no longer exists (its
TCP connect unanswered) times out rather than failing fast."""


class ReadinessMonitor:
    """Probes the servers of one compiled catalog, now (``probe``) or every ``interval_s``."""

    def __init__(
        self,
        compiled: CompiledCatalog,
        planner: SegmentPlanner,
        pool: TritonPool,
        *,
        interval_s: float = 1.0,
    ) -> None:
        self.compiled = compiled
        self.planner = planner
        self.pool = pool
        self.interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    def serves(self, path: CompiledPath) -> bool:
        """Whether every model of ``path`` answered ready at the last probe."""
        return all(hop.model in self.planner.ready_models(hop.address) for hop in path.hops)

    async def probe(self) -> None:
        """Ask every endpoint which models are ready; open or close its circuit accordingly."""
        needed = self.compiled.addresses()

        async def one(address: str, models: set[str]) -> None:
            try:
                response = await self.pool.stub(address).RepositoryIndex(
                    service_pb2.RepositoryIndexRequest(ready=True), timeout=1.0
                )
            except grpc.aio.AioRpcError as exc:
                self.planner.set_down(address)
                self.pool.mark_down(address, f"probe: {exc.code().name}")
                if exc.code() in RENEW_ON:
                    # Unreachable (no address, refused) or stuck connecting (an address
                    # resolved before its pod was replaced): fresh channels resolve and
                    # connect at once instead of after gRPC's backoff (``TritonPool.renew``).
                    self.pool.renew(address)
                return
            ready = frozenset(m.name for m in response.models if m.state == "READY")
            self.planner.set_ready(address, ready)
            if models <= ready:
                self.pool.mark_up(address)
            else:
                self.pool.mark_down(address, f"probe: not ready: {sorted(models - ready)}")

        await asyncio.gather(*(one(a, m) for a, m in needed.items()))

    async def _probe_forever(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.probe()
            except Exception as exc:  # the monitor must outlive any one bad probe
                log_event(logger, "executor.probe_failed", level=logging.WARNING, error=exc)

    def start(self) -> None:
        """Keep probing, on the running loop, until ``close``."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._probe_forever())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
