"""The inference service both front ends call: health, metadata and inference of the models.

REST and gRPC differ only in how they decode a request and encode the answer; everything a
client can observe beyond that (which models exist, when the gateway is ready, what an error
means) is decided here and in the executors, once.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from braid import __version__
from braid.api.catalog import PathCatalog
from braid.api.routing import DimeeRouting, Endpoints, RoutingTable
from braid.dataplane.dimee import PoolsUnavailableError, SampleRouter, load_tier_router
from braid.dataplane.errors import InferenceError, Reason
from braid.dataplane.executor import ExecutorOptions, PathExecutor, executors_by_model
from braid.dataplane.metrics import GatewayMetrics, default_metrics
from braid.dataplane.pool import TritonPool
from braid.dataplane.routing import RoutingTableError, RoutingTableWatcher, read_routing_table
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


class InferenceService:
    """The models a gateway serves, each through its own path executor."""

    def __init__(
        self,
        executors: Sequence[PathExecutor],
        *,
        routing_files: dict[str, Path] | None = None,
        routing_poll_s: float = 0.5,
        metrics: GatewayMetrics | None = None,
        pool: TritonPool | None = None,
    ) -> None:
        self.executors = dict(executors_by_model(executors))
        self.pool = pool
        """The executors' channel pool, closed with the service when given."""
        self.metrics = metrics if metrics is not None else default_metrics()
        self.watchers: list[RoutingTableWatcher] = []
        for model, path in (routing_files or {}).items():
            executor = self.executor(model)
            self.watchers.append(
                RoutingTableWatcher(
                    path,
                    _applier(executor),
                    known_paths=executor.paths,
                    interval_s=routing_poll_s,
                )
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


def build_service(
    sources: Sequence[ModelSource],
    *,
    metrics: GatewayMetrics | None = None,
    channels_per_endpoint: int = 1,
    routing_poll_s: float = 0.5,
    options: ExecutorOptions | None = None,
    sample_router: SampleRouter | None = None,
    rng: random.Random | None = None,
) -> InferenceService:
    """Executors over one shared pool, one per model; call inside the loop that will serve.

    ``options``, ``sample_router`` and ``rng`` go to every ``PathExecutor``. Without a
    ``sample_router``, a model whose starting table enables DIMEE (``dimee``) gets one loaded
    from the table's pools artifact.
    """
    pool = TritonPool(channels_per_endpoint=channels_per_endpoint)
    executors = []
    files: dict[str, Path] = {}
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
            PathExecutor(
                source.catalog,
                source.endpoints,
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
    return InferenceService(
        executors, routing_files=files, routing_poll_s=routing_poll_s, metrics=metrics, pool=pool
    )
