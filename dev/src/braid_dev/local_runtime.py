"""The local runtime behind ``braid serve``: one tritonserver per tier, then the gateway.

Without a cluster, the pods the operator would create are stood in for by local processes:
the catalog's ``server`` field says which Triton models run on the local provider's server and
which on the host's, and each gets a repository *view* — a directory of symlinks to the model
directories of one exported repository — so the two servers load disjoint model sets from a
single build without copying weights. Each server gets its own ports; the gateway reaches
them through an ``Endpoints`` map, as it reaches Services in a cluster.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from braid.api.catalog import PathCatalog
from braid.api.routing import Endpoints
from braid.logs import log_event
from braid.render.segments import SEGMENT_MARK, catalog_segments, render_segment_config
from braid_dev.stack.triton import TritonServer, start_triton

logger = logging.getLogger(__name__)


def tier_models(catalog: PathCatalog) -> dict[str, set[str]]:
    """Triton models per server role: every hop where it runs, plus all local blocks."""
    tiers: dict[str, set[str]] = {}
    for path in catalog.paths:
        for hop in path.hops:
            tiers.setdefault(hop.server, set()).add(hop.triton_model)
    for model in catalog.models:
        if model.role == "local":
            tiers.setdefault("local", set()).update(b.triton_model for b in model.blocks)
    return tiers


_MAX_BATCH_RE = re.compile(r"^max_batch_size:\s*(\d+)", re.MULTILINE)


def max_batch_size_of(config: Path) -> int:
    """A model's ``max_batch_size`` as its ``config.pbtxt`` states it (0 when it does not)."""
    found = _MAX_BATCH_RE.search(config.read_text())
    return int(found.group(1)) if found else 0


def make_tier_views(
    repository: Path, catalog: PathCatalog, dest: Path, *, segments: bool = True
) -> dict[str, Path]:
    """One directory per tier under ``dest`` with a symlink per model; returns tier -> view.

    With ``segments``, each view also gets the ensembles of its fusable runs of hops
    (``braid.render.segments``), so the gateway can call such a run in one go; a run whose
    blocks do not batch alike is left out (an ensemble batches as all its steps do).
    Rebuilt from scratch each time (stale links of an earlier catalog would make a server load
    models nobody calls). Raises ``FileNotFoundError`` naming models the repository lacks.
    """
    repository = repository.resolve()
    views: dict[str, Path] = {}
    fused = catalog_segments(catalog) if segments else []
    for tier, models in sorted(tier_models(catalog).items()):
        missing = sorted(m for m in models if not (repository / m / "config.pbtxt").is_file())
        if missing:
            raise FileNotFoundError(f"the repository {repository} lacks models {missing}")
        view = dest / tier
        view.mkdir(parents=True, exist_ok=True)
        for entry in view.iterdir():
            if entry.is_symlink():
                entry.unlink()
            elif SEGMENT_MARK in entry.name:
                shutil.rmtree(entry)
        for model in sorted(models):
            os.symlink(repository / model, view / model, target_is_directory=True)
        for segment in (s for s in fused if s.server == tier):
            limits = {max_batch_size_of(repository / m / "config.pbtxt") for m in segment.models}
            if len(limits) != 1 or 0 in limits:
                continue
            (view / segment.name / "1").mkdir(parents=True)
            (view / segment.name / "config.pbtxt").write_text(
                render_segment_config(segment, limits.pop())
            )
        views[tier] = view
    return views


@dataclass
class LocalRuntime:
    """The Triton servers of one catalog, by tier; ``stop()`` ends them all."""

    servers: dict[str, TritonServer] = field(default_factory=dict)

    @property
    def endpoints(self) -> Endpoints:
        return Endpoints(servers={tier: s.grpc_address for tier, s in self.servers.items()})

    def stop(self) -> None:
        """Stop every server at once (each may take its exit timeout to drain)."""
        if not self.servers:
            return
        with ThreadPoolExecutor(max_workers=len(self.servers)) as pool:
            list(pool.map(lambda server: server.stop(), self.servers.values()))

    def __enter__(self) -> LocalRuntime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_local_runtime(
    repository: Path, catalog: PathCatalog, workdir: Path, *, timeout: float = 300.0
) -> LocalRuntime:
    """Start one tritonserver per tier of ``catalog`` (in parallel); ready when this returns.

    If one server fails to start, those already started are stopped before the error
    propagates, so nothing is left running.
    """
    views = make_tier_views(repository, catalog, workdir / "views")
    runtime = LocalRuntime()

    def start(tier: str) -> TritonServer:
        return start_triton(
            views[tier], workdir=workdir / f"triton-{tier}", name=tier, timeout=timeout
        )

    pool = ThreadPoolExecutor(max_workers=len(views))
    futures = {tier: pool.submit(start, tier) for tier in views}
    errors: list[BaseException] = []
    try:
        for tier, future in futures.items():
            try:
                runtime.servers[tier] = future.result()
            except Exception as exc:
                errors.append(exc)
    except BaseException:
        # Ctrl-C while waiting: let the starts finish, then stop whatever came up.
        pool.shutdown(wait=True)
        for tier, future in futures.items():
            if future.done() and future.exception() is None:
                runtime.servers[tier] = future.result()
        runtime.stop()
        raise
    pool.shutdown(wait=True)
    if errors:
        runtime.stop()
        raise errors[0]
    for tier, server in runtime.servers.items():
        log_event(
            logger,
            "runtime.tier_ready",
            tier=tier,
            grpc=server.grpc_address,
            http=server.http_address,
            models=len(server.models),
        )
    return runtime
