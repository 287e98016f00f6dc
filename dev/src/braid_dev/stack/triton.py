"""Run ``tritonserver`` from the nvidia-pytriton wheel on loopback, for tests and local serving.

The wheel ships a CPU-capable ``tritonserver`` (2.51) with the Python backend but not in the
layout Triton expects, so each server gets a small backend directory of symlinks into the
wheel, the venv's ``bin`` first on ``PATH`` (the Python stub runs the venv's interpreter and
site-packages: torch, numpy) and Python's ``LIBDIR`` on ``LD_LIBRARY_PATH`` (the stub links
``libpython3.11``).

Readiness is proven, not assumed: the process we started must own the three listening
sockets (a port clash only fails after the models have loaded, and until then another
process may answer on the port), answer with the server id we gave it, and return outputs
for a real inference on every model (a killed Python stub still reports "ready").
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import sys
import sysconfig
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from braid.logs import log_event
from braid.settings import get_settings
from braid_dev.stack.ports import free_ports, pid_listens_on
from braid_dev.stack.processes import (
    ManagedProcess,
    StartupError,
    StopsOnExit,
    start_process,
    tail,
    wait_until,
)

logger = logging.getLogger(__name__)

PORT_IN_USE_MARKERS = ("already in use", "Address already in use")
# The stub must match the interpreter that runs it (3.11 here, 3.12 on the GPU machines).
_STUB_PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"


class TritonProbeError(RuntimeError):
    """A running server did not answer a probe inference correctly."""


def tritonserver_home() -> Path:
    """The ``tritonserver`` tree inside the installed nvidia-pytriton wheel."""
    # Located, not imported: importing pytriton pulls in its whole client stack.
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("nvidia-pytriton is not installed in this environment")
    home = Path(next(iter(spec.submodule_search_locations))) / "tritonserver"
    if not (home / "bin" / "tritonserver").is_file():
        raise FileNotFoundError(f"no tritonserver in the nvidia-pytriton wheel at {home}")
    return home


def prepare_backend_directory(dest: Path, home: Path | None = None) -> Path:
    """Create ``dest/python/`` with the Python backend's three files linked from the wheel.

    Idempotent (stale links are replaced), so a state directory can be reused across runs.
    Returns ``dest``, the value of ``--backend-directory``.
    """
    home = home if home is not None else tritonserver_home()
    links = {
        "libtriton_python.so": home / "backends" / "python" / "libtriton_python.so",
        "triton_python_backend_utils.py": (
            home / "backends" / "python" / "triton_python_backend_utils.py"
        ),
        "triton_python_backend_stub": (
            home / "python_backend_stubs" / _STUB_PYTHON / "triton_python_backend_stub"
        ),
    }
    python_dir = dest / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    for name, target in links.items():
        if not target.exists():
            raise FileNotFoundError(f"the nvidia-pytriton wheel lacks {target}")
        link = python_dir / name
        if link.is_symlink() and os.readlink(link) == str(target):
            continue
        tmp = python_dir / f".{name}.{uuid.uuid4().hex}"
        tmp.symlink_to(target)
        tmp.replace(link)  # atomic: a concurrent starter never sees a missing link
    return dest


def triton_environment(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment ``tritonserver`` and its Python stubs need, on top of ``base``."""
    env = dict(os.environ if base is None else base)
    venv_bin = str(Path(sys.prefix) / "bin")
    env["PATH"] = os.pathsep.join([venv_bin, env.get("PATH", "")]).rstrip(os.pathsep)
    libdir = sysconfig.get_config_var("LIBDIR")
    if libdir:
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            [str(libdir), env.get("LD_LIBRARY_PATH", "")]
        ).rstrip(os.pathsep)
    # The stubs are the venv's interpreter; a PYTHONHOME/PYTHONPATH from the caller
    # would point them at another installation.
    env.pop("PYTHONHOME", None)
    return env


@dataclass(frozen=True)
class TritonPorts:
    """The three loopback ports one server listens on."""

    http: int
    grpc: int
    metrics: int


def triton_argv(
    binary: Path,
    model_repository: Path,
    backend_directory: Path,
    ports: TritonPorts,
    *,
    host: str = "127.0.0.1",
    server_id: str = "triton",
    shm_default_byte_size: int = 16 * 1024 * 1024,
    extra_args: Sequence[str] = (),
) -> list[str]:
    """The command line of one server (the recipe in DESIGN.md, plus a server id)."""
    return [
        str(binary),
        f"--model-repository={model_repository}",
        f"--backend-directory={backend_directory}",
        f"--id={server_id}",
        f"--http-port={ports.http}",
        f"--grpc-port={ports.grpc}",
        f"--metrics-port={ports.metrics}",
        f"--http-address={host}",
        f"--grpc-address={host}",
        f"--metrics-address={host}",
        "--allow-gpu-metrics=false",
        "--pinned-memory-pool-byte-size=0",
        "--strict-readiness=true",
        "--exit-timeout-secs=5",
        "--disable-auto-complete-config",
        f"--backend-config=python,shm-default-byte-size={shm_default_byte_size}",
        *extra_args,
    ]


def probe_inputs(metadata: Mapping[str, Any]) -> list[dict[str, Any]]:
    """JSON inputs of zeros for a model's metadata, variable dims set to 1.

    A probe only has to prove the model runs, so zeros do; the JSON protocol keeps it free
    of client libraries and covers every datatype (BYTES as empty strings).
    """
    inputs = []
    for tensor in metadata["inputs"]:
        shape = [1 if int(d) < 0 else int(d) for d in tensor["shape"]]
        count = 1
        for d in shape:
            count *= d
        datatype = tensor["datatype"]
        if datatype == "BYTES":
            zero: object = ""
        elif datatype == "BOOL":
            zero = False
        else:
            zero = 0
        inputs.append(
            {"name": tensor["name"], "datatype": datatype, "shape": shape, "data": [zero] * count}
        )
    return inputs


def probe_model(client: httpx.Client, model: str) -> None:
    """One inference on zeros; raises ``TritonProbeError`` unless every output comes back."""
    meta = client.get(f"/v2/models/{model}")
    if meta.status_code != 200:
        raise TritonProbeError(f"{model}: metadata HTTP {meta.status_code}: {meta.text[:200]}")
    metadata = meta.json()
    response = client.post(f"/v2/models/{model}/infer", json={"inputs": probe_inputs(metadata)})
    if response.status_code != 200:
        raise TritonProbeError(f"{model}: infer HTTP {response.status_code}: {response.text[:300]}")
    got = {out["name"] for out in response.json().get("outputs", [])}
    want = {out["name"] for out in metadata.get("outputs", [])}
    if not want <= got:
        raise TritonProbeError(f"{model}: outputs {sorted(want - got)} missing from the response")


def ready_models(client: httpx.Client) -> list[str]:
    """Names of the models the repository index reports READY."""
    response = client.post("/v2/repository/index", json={})
    response.raise_for_status()
    return sorted({m["name"] for m in response.json() if m.get("state") == "READY"})


@dataclass
class TritonServer(StopsOnExit):
    """A ``tritonserver`` process started by ``start_triton``; stop it with ``stop()``."""

    process: ManagedProcess
    model_repository: Path
    workdir: Path
    host: str
    ports: TritonPorts
    server_id: str
    models: tuple[str, ...]
    startup_seconds: float

    @property
    def http_url(self) -> str:
        """``http://host:port`` (KServe v2 REST; httpx base URL)."""
        return f"http://{self.host}:{self.ports.http}"

    @property
    def http_address(self) -> str:
        """``host:port`` of the REST endpoint, the form ``tritonclient.http`` expects."""
        return f"{self.host}:{self.ports.http}"

    @property
    def grpc_address(self) -> str:
        """``host:port`` of the gRPC endpoint, the form ``tritonclient.grpc`` expects."""
        return f"{self.host}:{self.ports.grpc}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.ports.metrics}/metrics"

    @property
    def metrics_address(self) -> str:
        """``host:port`` of the metrics endpoint, a Prometheus scrape target."""
        return f"{self.host}:{self.ports.metrics}"

    @property
    def log_path(self) -> Path:
        return self.process.log_path

    def owns_ports(self) -> bool:
        """Whether this process holds all three listening sockets."""
        pid = self.process.pid
        return all(
            pid_listens_on(pid, p) for p in (self.ports.http, self.ports.grpc, self.ports.metrics)
        )

    def probe(self, models: Sequence[str] | None = None, timeout: float = 10.0) -> bool:
        """Health by inference: alive, ours, and every model (default: all) answers."""
        if not self.process.alive():
            return False
        try:
            with httpx.Client(base_url=self.http_url, timeout=timeout) as client:
                _check_identity(client, self.server_id)
                for model in models if models is not None else self.models:
                    probe_model(client, model)
        except (httpx.HTTPError, TritonProbeError, ValueError, KeyError) as exc:
            log_event(logger, "triton.probe.failed", level=logging.WARNING, error=exc)
            return False
        return True

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the process group (server and its Python stubs), SIGKILL after ``timeout``."""
        # Also when the server has died: its Python stubs share the process group and may
        # have outlived it.
        self.process.stop(timeout=timeout)
        log_event(logger, "triton.stopped", id=self.server_id, pid=self.process.pid)


def _check_identity(client: httpx.Client, server_id: str) -> None:
    response = client.get("/v2")
    response.raise_for_status()
    name = response.json().get("name")
    if name != server_id:
        raise TritonProbeError(f"server at {client.base_url} is {name!r}, not {server_id!r}")


def _wait_ready(server: TritonServer, probe_models: Sequence[str] | None, timeout: float) -> None:
    """Block until ``server`` is ours and answers; fills in ``server.models``."""

    def ready() -> bool:
        if not server.owns_ports():
            return False
        with httpx.Client(base_url=server.http_url, timeout=10.0) as client:
            _check_identity(client, server.server_id)
            if client.get("/v2/health/ready").status_code != 200:
                return False
            models = list(probe_models) if probe_models is not None else ready_models(client)
            for model in models:
                probe_model(client, model)
        server.models = tuple(models)
        return True

    wait_until(
        ready, f"tritonserver {server.server_id} to answer inferences", timeout, server.process
    )


def start_triton(
    model_repository: Path,
    *,
    workdir: Path | None = None,
    name: str = "triton",
    host: str = "127.0.0.1",
    probe_models: Sequence[str] | None = None,
    timeout: float = 180.0,
    attempts: int = 3,
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    ports: TritonPorts | None = None,
) -> TritonServer:
    """Start a server on free ports and return once every model answers an inference.

    ``workdir`` holds the backend directory, the log and the pid file (default: a fresh
    directory under ``<state>/triton/``); it is left in place after ``stop()`` so the log
    can be read. ``probe_models`` narrows the readiness probe (default: every model the
    repository index reports READY). When the ports turn out to be taken the server is
    started again on new ones, up to ``attempts`` times; ``ports`` fixes the ports of the
    first attempt only (a fixed port that is taken still falls back to free ones).
    """
    model_repository = model_repository.resolve()
    if not model_repository.is_dir():
        raise FileNotFoundError(f"model repository {model_repository} does not exist")
    if workdir is None:
        base = get_settings().state / "triton"
        base.mkdir(parents=True, exist_ok=True)
        workdir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=base))
    workdir.mkdir(parents=True, exist_ok=True)
    home = tritonserver_home()
    backend_dir = prepare_backend_directory(workdir / "backends", home)
    full_env = triton_environment(env)

    last_error: StartupError | None = None
    for attempt in range(1, attempts + 1):
        if attempt > 1 or ports is None:
            http, grpc, metrics = free_ports(3, host)
            ports = TritonPorts(http=http, grpc=grpc, metrics=metrics)
        server_id = f"braid-{name}-{uuid.uuid4().hex[:8]}"
        argv = triton_argv(
            home / "bin" / "tritonserver",
            model_repository,
            backend_dir,
            ports,
            host=host,
            server_id=server_id,
            extra_args=extra_args,
        )
        log_path = workdir / f"tritonserver-{attempt}.log"
        started = time.monotonic()
        process = start_process(
            f"tritonserver[{name}]",
            argv,
            log_path,
            env=full_env,
            cwd=workdir,
            pid_path=workdir / "tritonserver.pid",
        )
        server = TritonServer(
            process=process,
            model_repository=model_repository,
            workdir=workdir,
            host=host,
            ports=ports,
            server_id=server_id,
            models=(),
            startup_seconds=0.0,
        )
        try:
            _wait_ready(server, probe_models, timeout)
        except StartupError as exc:
            server.stop()
            log_text = tail(log_path, 200)
            if any(marker in log_text for marker in PORT_IN_USE_MARKERS) and attempt < attempts:
                log_event(
                    logger,
                    "triton.port_clash",
                    level=logging.WARNING,
                    attempt=attempt,
                    http=ports.http,
                    grpc=ports.grpc,
                    metrics=ports.metrics,
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
            "triton.ready",
            id=server_id,
            pid=process.pid,
            http=ports.http,
            grpc=ports.grpc,
            metrics=ports.metrics,
            models=",".join(server.models),
            seconds=f"{server.startup_seconds:.2f}",
        )
        return server
    raise last_error if last_error is not None else StartupError("tritonserver never started")


@contextlib.contextmanager
def running_triton(model_repository: Path, **kwargs: Any) -> Iterator[TritonServer]:
    """``start_triton`` as a context manager that always stops what it started."""
    server = start_triton(model_repository, **kwargs)
    try:
        yield server
    finally:
        server.stop()
