"""Stand in for the kubelet on kwok nodes: one real tritonserver per Triton Deployment.

Pods on kwok nodes run no containers, so for the demo and the e2e tests this runtime watches
the Deployments the operator renders and, for each one whose pods are Running, starts a real
``tritonserver`` on loopback with the same model repository and the same ``--load-model``
list. It then publishes the address on the Block (annotation ``braid.dev/endpoint``), which is
what the operator gives the gateway instead of the Service's cluster DNS name.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from braid.api.common import API_VERSION
from braid.kube.client import Kube
from braid.kube.reconcile import ENDPOINT_ANNOTATION
from braid.logs import log_event
from braid.render.block import MANAGED_BY, POOL_LABEL
from braid_dev.stack.processes import StartupError
from braid_dev.stack.triton import TritonServer, start_triton

logger = logging.getLogger(__name__)
FIELD_MANAGER = "braid-kwok-runtime"

Key = tuple[str, str]
"""(namespace, Block name)"""


def desired_servers(
    deployments: list[dict[str, Any]], real_pools: frozenset[str] = frozenset()
) -> dict[Key, tuple[str, ...]]:
    """Which Blocks need a server, and the models each loads, from their Deployments.

    A Deployment counts once at least one of its pods is ready (kwok made it Running): that
    is when a kubelet would have started the container. Deployments pinned to a pool of
    real nodes (``real_pools``) are the kubelet's own, not this runtime's.
    """
    out: dict[Key, tuple[str, ...]] = {}
    for dep in deployments:
        meta = dep["metadata"]
        block = (meta.get("labels") or {}).get("braid.dev/block")
        if not block or not int((dep.get("status") or {}).get("readyReplicas") or 0):
            continue
        selector = dep["spec"]["template"]["spec"].get("nodeSelector") or {}
        if selector.get(POOL_LABEL) in real_pools:
            continue  # a real node's kubelet runs these pods in containers
        args = dep["spec"]["template"]["spec"]["containers"][0].get("args") or []
        models = tuple(a.split("=", 1)[1] for a in args if a.startswith("--load-model="))
        out[(meta["namespace"], block)] = models
    return out


@dataclass
class KwokTritonRuntime:
    """Keeps one tritonserver per ready Triton Deployment, restarted when its models change."""

    kube: Kube
    repository: Path
    workdir: Path
    servers: dict[Key, tuple[tuple[str, ...], TritonServer]] = field(default_factory=dict)
    failures: dict[Key, str] = field(default_factory=dict)
    parallel_starts: int = 4
    host: str = "127.0.0.1"
    """Where the servers listen: loopback, or a real node's bridge address when pods in
    containers (a gateway pod) must reach them."""
    real_pools: frozenset[str] = frozenset()
    """Pools of real nodes: their Triton pods run in containers, not here."""

    def sync(self) -> None:
        """One pass: start what is missing, restart what changed, stop what is gone."""
        deployments = self.kube.list(
            "apps/v1", "Deployment", label_selector=f"app.kubernetes.io/managed-by={MANAGED_BY}"
        )
        wanted = desired_servers(deployments, self.real_pools)
        for key in [k for k in self.servers if k not in wanted]:
            self._stop(key)
        to_start: dict[Key, tuple[str, ...]] = {}
        for key, models in wanted.items():
            current = self.servers.get(key)
            if current is not None and current[0] == models:
                continue
            if current is not None:
                self._stop(key)
            to_start[key] = models
        # In parallel, as pods on different nodes would start: each server spends most of its
        # start-up loading models one by one, waiting on its own Python backend stubs.
        with ThreadPoolExecutor(max_workers=self.parallel_starts) as pool:
            launched = list(pool.map(self._launch, to_start, to_start.values()))
        for key, server in zip(to_start, launched, strict=True):
            if server is None:
                continue
            self.servers[key] = (to_start[key], server)
            self._publish(key, server.grpc_address)
            log_event(
                logger,
                "kwok_runtime.started",
                block=key[1],
                namespace=key[0],
                grpc=server.grpc_address,
            )

    def _launch(self, key: Key, models: tuple[str, ...]) -> TritonServer | None:
        """Start one server; a failure is recorded, as a pod that never gets ready would be."""
        namespace, block = key
        missing = [m for m in models if not (self.repository / m).is_dir()]
        if missing:
            self.failures[key] = f"models not in {self.repository}: {missing}"
            return None
        try:
            server = start_triton(
                self.repository,
                workdir=self.workdir / f"{namespace}.{block}",
                name=f"{namespace}.{block}",
                host=self.host,
                probe_models=models,
                extra_args=[
                    "--model-control-mode=explicit",
                    *(f"--load-model={m}" for m in models),
                ],
            )
        except StartupError as exc:
            self.failures[key] = str(exc)
            log_event(
                logger, "kwok_runtime.start_failed", level=logging.WARNING, block=block, error=exc
            )
            return None
        self.failures.pop(key, None)
        return server

    def _stop(self, key: Key) -> None:
        _, server = self.servers.pop(key)
        server.stop()
        self._publish(key, None)

    def _publish(self, key: Key, address: str | None) -> None:
        namespace, block = key
        with contextlib.suppress(Exception):  # the Block may be gone already
            self.kube.patch(
                API_VERSION,
                "Block",
                block,
                namespace,
                {"metadata": {"annotations": {ENDPOINT_ANNOTATION: address}}},
            )

    def addresses(self) -> Mapping[Key, str]:
        return {k: s.grpc_address for k, (_, s) in self.servers.items()}

    def serving(self) -> set[tuple[str, str]]:
        """(gRPC address, model) of every model a running server has loaded."""
        return {(s.grpc_address, m) for models, s in list(self.servers.values()) for m in models}

    def run(self, stop: threading.Event, interval: float = 1.0) -> None:
        """Sync until ``stop`` is set, then stop every server."""
        try:
            while not stop.is_set():
                try:
                    self.sync()
                except Exception as exc:  # a failed pass must not end the runtime
                    log_event(logger, "kwok_runtime.sync_failed", level=logging.WARNING, error=exc)
                stop.wait(interval)
        finally:
            self.close()

    def close(self) -> None:
        for key in list(self.servers):
            self._stop(key)
