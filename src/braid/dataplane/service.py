"""The inference service both front ends call: health, metadata and inference of the models.

REST and gRPC differ only in how they decode a request and encode the answer; everything a
client can observe beyond that (which models exist, when the gateway is ready, what an error
means) is decided here and in the executors, once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from braid import __version__
from braid.api.catalog import PathCatalog
from braid.api.routing import DimeeRouting, Endpoints, RoutingTable
from braid.dataplane.dimee import PoolsUnavailableError, SampleRouter, load_tier_router
from braid.dataplane.errors import InferenceError, Reason
from braid.dataplane.executor import ExecutorOptions, PathExecutor, executors_by_model
from braid.dataplane.metrics import GatewayMetrics, default_metrics
from braid.dataplane.pool import TritonPool
from braid.dataplane.routing import (
    FileWatcher,
    RoutingTableError,
    RoutingTableWatcher,
    grown_endpoints,
    read_endpoints,
    read_routing_table,
)
from braid.dataplane.tensors import InferRequest, InferResponse, ModelSignature
from braid.logs import log_event

logger = logging.getLogger(__name__)

SERVER_NAME = "braid-gateway"
EXTENSIONS = ("binary_tensor_data", "model_configuration", "braid_paths")
"""KServe v2 extensions the gateway speaks; ``braid_paths`` is the ``braid_path`` parameter."""
_UNKNOWN_MODEL_LABEL = "_unknown"


def _applier(executor: PathExecutor) -> Callable[[RoutingTable], None]:
    """The watcher's callback: an unusable table is logged and the current one stays."""

    def apply(table: RoutingTable) -> None:
        try:
            executor.update_table(table)
        except RoutingTableError as exc:
            log_event(
                logger, "routing.rejected", level=logging.WARNING, model=executor.model, error=exc
            )

    return apply


@dataclass(frozen=True)
class EndpointsFile:
    """Where a model's endpoints are published, and the command line's overrides of them."""

    path: Path
    overrides: Endpoints = field(default_factory=Endpoints)


class InferenceService:
    """The models a gateway serves, each through its own path executor.

    A model's executor is compiled against its endpoints; when its ``endpoints_files`` entry
    publishes an address it did not know (a host Block Ready after the gateway started),
    a new executor is compiled against the grown endpoints and swapped in (requests in
    flight finish on the old one), and the routing file is read again, since a table naming
    a path that was not servable before may be good now.
    """

    def __init__(
        self,
        executors: Sequence[PathExecutor],
        *,
        routing_files: dict[str, Path] | None = None,
        endpoints_files: dict[str, EndpointsFile] | None = None,
        routing_poll_s: float = 0.5,
        metrics: GatewayMetrics | None = None,
        pool: TritonPool | None = None,
    ) -> None:
        self.executors = dict(executors_by_model(executors))
        self.pool = pool
        """The executors' channel pool, closed with the service when given."""
        self.metrics = metrics if metrics is not None else default_metrics()
        self.routing_watchers: dict[str, RoutingTableWatcher] = {}
        for model, path in (routing_files or {}).items():
            executor = self.executor(model)
            self.routing_watchers[model] = RoutingTableWatcher(
                path, _applier(executor), known_paths=executor.paths, interval_s=routing_poll_s
            )
        self.endpoints_watchers: dict[str, FileWatcher[Endpoints]] = {}
        for model, published in (endpoints_files or {}).items():
            self.executor(model)
            self.endpoints_watchers[model] = FileWatcher(
                published.path,
                read_endpoints,
                self._endpoints_applier(model, published.overrides),
                refused=(ValueError, OSError),
                what="endpoints",
                interval_s=routing_poll_s,
            )
        self._swaps: set[asyncio.Task[None]] = set()

    @property
    def watchers(self) -> list[FileWatcher[Any]]:
        return [*self.routing_watchers.values(), *self.endpoints_watchers.values()]

    def _endpoints_applier(self, model: str, overrides: Endpoints) -> Callable[[Endpoints], None]:
        def apply(published: Endpoints) -> None:
            current = self.executors[model]
            grown = grown_endpoints(current.endpoints, published, overrides)
            if grown == current.endpoints:
                return
            task = asyncio.get_running_loop().create_task(self._swap(current, grown))
            self._swaps.add(task)
            task.add_done_callback(self._swaps.discard)

        return apply

    async def _swap(self, old: PathExecutor, endpoints: Endpoints) -> None:
        """Compile ``old``'s model against ``endpoints``, start it, and serve with it."""
        new = PathExecutor(
            old.catalog,
            endpoints,
            old.pool,
            old.table,
            options=old.options,
            metrics=self.metrics,
            sample_router=old.sample_router,
            rng=old.rng,
        )
        await new.start()
        if self.executors.get(old.model) is not old:  # a newer swap won
            await new.close()
            return
        self.executors[old.model] = new
        watcher = self.routing_watchers.get(old.model)
        if watcher is not None:
            watcher.on_change = _applier(new)
            watcher.known_paths = frozenset(new.paths)
            watcher.recheck()
        await old.close()
        log_event(
            logger,
            "endpoints.applied",
            model=old.model,
            paths=len(new.paths),
            added=",".join(sorted(set(new.paths) - set(old.paths))) or "-",
        )

    def executor(self, model: str, version: str = "") -> PathExecutor:
        """The executor of ``model``; every model has one version, ``1``."""
        executor = self.executors.get(model)
        if executor is None:
            raise InferenceError(
                Reason.UNKNOWN_MODEL,
                f"unknown model {model!r} (served: {', '.join(sorted(self.executors))})",
            )
        if version not in ("", "1"):
            raise InferenceError(
                Reason.UNKNOWN_MODEL, f"model {model!r} has no version {version!r} (only 1)"
            )
        return executor

    def signature(self, model: str, version: str = "") -> ModelSignature:
        return self.executor(model, version).signature()

    @property
    def live(self) -> bool:
        return True

    @property
    def ready(self) -> bool:
        """Ready when every model can be served (its fallback path's models answer)."""
        return all(e.ready for e in self.executors.values())

    def model_ready(self, model: str, version: str = "") -> bool:
        return self.executor(model, version).ready

    def server_metadata(self) -> dict[str, object]:
        return {"name": SERVER_NAME, "version": __version__, "extensions": list(EXTENSIONS)}

    async def infer(self, request: InferRequest) -> InferResponse:
        """The executor's answer; its ``InferenceError`` goes to the front end, which answers
        the client and calls ``record_error``."""
        try:
            return await self.executor(request.model, request.version).infer(request)
        except asyncio.CancelledError:
            self._count_error(request.model, Reason.CANCELLED)
            raise

    def record_error(self, model: str, error: InferenceError) -> None:
        """Count an error a front end answers with: every failed request passes here once,
        whether decoding, lookup or the executor raised it."""
        self._count_error(model, error.reason)

    def _count_error(self, model: str, reason: Reason) -> None:
        label = model if model in self.executors else _UNKNOWN_MODEL_LABEL
        self.metrics.errors.labels(label, reason.value).inc()

    async def start(self) -> None:
        for executor in self.executors.values():
            await executor.start()
        for watcher in self.watchers:
            watcher.check()
            watcher.start()

    async def close(self) -> None:
        for watcher in self.watchers:
            await watcher.stop()
        for task in list(self._swaps):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for executor in self.executors.values():
            await executor.close()
        if self.pool is not None:
            await self.pool.close()


@dataclass(frozen=True)
class ModelSource:
    """What the gateway needs to serve one local model."""

    catalog: PathCatalog
    endpoints: Endpoints
    routing_file: Path | None = None
    """Watched for new tables; read once at start when it exists."""
    endpoints_file: EndpointsFile | None = None
    """Watched for addresses ``endpoints`` lacks (``InferenceService``)."""
    table: RoutingTable | None = None
    """The table to start with when there is no file (default: all on the original path)."""
    artifacts_dir: Path | None = None
    """Where the gateway's init container put fetched artifacts (a DIMEE pools archive)."""


def read_catalog(path: Path) -> PathCatalog:
    """A ``catalog.json`` as written by ``braid models build`` (no torch import needed)."""
    return PathCatalog.model_validate_json(path.read_text())


def dimee_pools_path(dimee: DimeeRouting, artifacts_dir: Path | None) -> Path:
    """Where the pools document is: a fetched one lies under the artifacts directory, and a
    gateway without one refuses to start rather than route without DIMEE."""
    if not dimee.fetched:
        return Path(dimee.pools)
    if artifacts_dir is None:
        raise PoolsUnavailableError(
            f"{dimee.pools}: the routing table's DIMEE pools are a fetched artifact, but the "
            "gateway has no --artifacts-dir to find them in"
        )
    return artifacts_dir / dimee.pools


def _executor_or_original(
    source: ModelSource,
    pool: TritonPool,
    table: RoutingTable | None,
    **kwargs: Any,
) -> PathExecutor:
    """The executor with ``table``, or, when the table names a path these endpoints cannot
    serve yet (the controller chose a host whose Block is not published now: it restarts),
    with all traffic on the original path until the endpoints file grows and the table is
    read again. A table that is wrong in any other way stops the gateway as before."""
    try:
        return PathExecutor(source.catalog, source.endpoints, pool, table, **kwargs)
    except RoutingTableError as exc:
        if table is None or source.endpoints_file is None:
            raise
        executor = PathExecutor(source.catalog, source.endpoints, pool, None, **kwargs)
        if table.unknown_paths(executor.paths) and not table.unknown_paths(
            p.id for p in source.catalog.paths
        ):
            log_event(
                logger,
                "routing.deferred",
                level=logging.WARNING,
                model=executor.model,
                error=exc,
            )
            return executor
        raise


def build_service(
    sources: Sequence[ModelSource],
    *,
    metrics: GatewayMetrics | None = None,
    channels_per_endpoint: int = 1,
    streams: bool = True,
    routing_poll_s: float = 0.5,
    options: ExecutorOptions | None = None,
    sample_router: SampleRouter | None = None,
    rng: random.Random | None = None,
) -> InferenceService:
    """Executors over one shared pool, one per model; call inside the loop that will serve.

    ``streams`` picks the pool's hop transport (``TritonPool``). ``options``,
    ``sample_router`` and ``rng`` go to every ``PathExecutor``. Without a
    ``sample_router``, a model whose starting table enables DIMEE (``dimee``) gets one loaded
    from the table's pools artifact.
    """
    pool = TritonPool(channels_per_endpoint=channels_per_endpoint, streams=streams)
    executors = []
    files: dict[str, Path] = {}
    published: dict[str, EndpointsFile] = {}
    for source in sources:
        table = source.table
        if source.routing_file is not None and source.routing_file.exists():
            table = read_routing_table(source.routing_file)
        router = sample_router
        if router is None and table is not None and table.dimee is not None:
            router = load_tier_router(
                dimee_pools_path(table.dimee, source.artifacts_dir),
                table.dimee.mode,
                table.dimee.prior_count,
            )
        executors.append(
            _executor_or_original(
                source,
                pool,
                table,
                options=options,
                metrics=metrics,
                sample_router=router,
                rng=rng,
            )
        )
        if source.routing_file is not None:
            files[source.catalog.local_model] = source.routing_file
        if source.endpoints_file is not None:
            published[source.catalog.local_model] = source.endpoints_file
    return InferenceService(
        executors,
        routing_files=files,
        endpoints_files=published,
        routing_poll_s=routing_poll_s,
        metrics=metrics,
        pool=pool,
    )
