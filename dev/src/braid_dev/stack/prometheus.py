"""Run Debian's ``prometheus`` on loopback with a generated, static scrape configuration.

The local stack has no service discovery, so the harness lists the servers it started as
static targets (rendered by ``braid.render.prometheus_config``) and can replace the list
later with ``reload()`` when servers come and go. Queries go through
``braid.dataplane.promql``, the same client the path controller uses.
"""

from __future__ import annotations

import functools
import logging
import shutil
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from braid.logs import log_event
from braid.render.prometheus_config import ScrapeTarget, render_prometheus_config
from braid.settings import get_settings
from braid_dev.stack.ports import free_port, pid_listens_on
from braid_dev.stack.processes import (
    ManagedProcess,
    StartupError,
    StopsOnExit,
    start_process,
    tail,
    wait_until,
)

logger = logging.getLogger(__name__)

PORT_IN_USE_MARKERS = ("address already in use",)


def prometheus_binary() -> Path:
    """The ``prometheus`` binary (Debian's package; ``hack/install-system.sh`` installs it)."""
    found = shutil.which("prometheus") or "/usr/bin/prometheus"
    path = Path(found)
    if not path.is_file():
        raise FileNotFoundError("prometheus is not installed: run hack/install-system.sh")
    return path


@dataclass
class PrometheusServer(StopsOnExit):
    """A ``prometheus`` process started by ``start_prometheus``; stop it with ``stop()``."""

    process: ManagedProcess
    host: str
    port: int
    workdir: Path
    config_path: Path
    storage_path: Path
    scrape_interval: str
    startup_seconds: float

    @property
    def url(self) -> str:
        """``http://host:port``, the base URL of the HTTP API and ``PrometheusClient``."""
        return f"http://{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.process.log_path

    def reload(self, targets: Sequence[ScrapeTarget]) -> None:
        """Replace the scrape targets (rewrites the config and asks Prometheus to reload)."""
        self.config_path.write_text(
            render_prometheus_config(targets, scrape_interval=self.scrape_interval)
        )
        response = httpx.post(f"{self.url}/-/reload", timeout=10.0)
        response.raise_for_status()
        log_event(logger, "prometheus.reloaded", port=self.port, targets=len(targets))

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (Prometheus flushes its head block), SIGKILL after ``timeout``."""
        self.process.stop(timeout=timeout)
        log_event(logger, "prometheus.stopped", port=self.port, pid=self.process.pid)


def _ours_and_ready(server: PrometheusServer) -> bool:
    """Our pid holds the port, the answering server uses our storage path, and it is ready."""
    if not pid_listens_on(server.process.pid, server.port):
        return False
    with httpx.Client(base_url=server.url, timeout=5.0) as client:
        flags = client.get("/api/v1/status/flags").json()["data"]
        if flags.get("storage.tsdb.path") != str(server.storage_path):
            return False
        return client.get("/-/ready").status_code == 200


def start_prometheus(
    targets: Sequence[ScrapeTarget],
    *,
    workdir: Path | None = None,
    host: str = "127.0.0.1",
    scrape_interval: str = "1s",
    retention: str = "2h",
    timeout: float = 60.0,
    attempts: int = 3,
    port: int | None = None,
) -> PrometheusServer:
    """Start Prometheus on a free port scraping ``targets``; return once it is ready.

    ``workdir`` holds the config, the TSDB and the log (default: a fresh directory under
    ``<state>/prometheus/``). Retried on new ports when the port turns out to be taken;
    ``port`` fixes the port of the first attempt only.
    """
    if workdir is None:
        base = get_settings().state / "prometheus"
        base.mkdir(parents=True, exist_ok=True)
        workdir = Path(tempfile.mkdtemp(prefix="prometheus-", dir=base))
    workdir.mkdir(parents=True, exist_ok=True)
    workdir = workdir.resolve()
    config_path = workdir / "prometheus.yml"
    config_path.write_text(render_prometheus_config(targets, scrape_interval=scrape_interval))
    binary = prometheus_binary()

    last_error: StartupError | None = None
    for attempt in range(1, attempts + 1):
        if attempt > 1 or port is None:
            port = free_port(host)
        # A fresh TSDB per attempt: a killed attempt may leave a lock behind.
        storage_path = workdir / f"data-{uuid.uuid4().hex[:8]}"
        argv = [
            str(binary),
            f"--config.file={config_path}",
            f"--storage.tsdb.path={storage_path}",
            f"--storage.tsdb.retention.time={retention}",
            f"--web.listen-address={host}:{port}",
            "--web.enable-lifecycle",
            "--log.level=warn",
        ]
        log_path = workdir / f"prometheus-{attempt}.log"
        started = time.monotonic()
        process = start_process(
            "prometheus", argv, log_path, cwd=workdir, pid_path=workdir / "prometheus.pid"
        )
        server = PrometheusServer(
            process=process,
            host=host,
            port=port,
            workdir=workdir,
            config_path=config_path,
            storage_path=storage_path,
            scrape_interval=scrape_interval,
            startup_seconds=0.0,
        )
        try:
            wait_until(
                functools.partial(_ours_and_ready, server),
                "prometheus to be ready",
                timeout,
                process,
            )
        except StartupError as exc:
            server.stop()
            clash = any(m in tail(log_path, 50).lower() for m in PORT_IN_USE_MARKERS)
            if clash and attempt < attempts:
                log_event(
                    logger,
                    "prometheus.port_clash",
                    level=logging.WARNING,
                    attempt=attempt,
                    port=port,
                )
                last_error = exc
                continue
            raise
        except BaseException:
            server.stop()
            raise
        server.startup_seconds = time.monotonic() - started
        log_event(
            logger,
            "prometheus.ready",
            pid=process.pid,
            port=port,
            targets=len(targets),
            seconds=f"{server.startup_seconds:.2f}",
        )
        return server
    raise last_error if last_error is not None else StartupError("prometheus never started")
