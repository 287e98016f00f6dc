"""The local control plane: etcd, kube-apiserver, controller-manager, scheduler and kwok nodes
run as processes on this machine (no container engine needed), wired like a kubeadm cluster.

``up`` is idempotent: a healthy cluster is reported, not restarted; anything else (a crashed
run's processes, pid files, etcd data, a half-written kubeconfig) is cleared first and the
cluster starts from an empty etcd, so every ``up`` gives the same cluster. The PKI is kept
across runs while it still matches, so kubeconfigs handed out earlier keep working.

The API server is spoken to with ``httpx`` (client certificate, our CA): this package may not
import the ``kubernetes`` client, and spawning kubectl for every poll would cost more CPU
than the polls themselves on a 2-core machine.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import functools
import json
import logging
import os
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import yaml

from braid.logs import log_event
from braid.settings import Settings
from braid_dev.stack import cluster_render as render
from braid_dev.stack import node_render, services, services_render
from braid_dev.stack import nodes as real_nodes
from braid_dev.stack.pki import ensure_pki
from braid_dev.stack.ports import free_port
from braid_dev.stack.processes import (
    ManagedProcess,
    StartupError,
    pid_alive,
    start_process,
    wait_until,
)

logger = logging.getLogger(__name__)

SERVER_BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
KUBECTL = "kubectl"
BUILD_HINT = "build them with `make install-binaries` (or `bash hack/cluster/build-binaries.sh`)"

Progress = Callable[[str], None]


class ClusterError(RuntimeError):
    """The control plane could not be started, checked or stopped; the message says why."""


# ---------------------------------------------------------------------------------------------
# Persistent state


@dataclass
class ClusterState:
    """What a successful ``up`` recorded in ``cluster.json``."""

    ports: render.Ports
    pids: dict[str, int]
    started_at: str
    up_seconds: float
    phases: dict[str, float]
    versions: dict[str, str]
    advertise_address: str
    #: Names of the real nodes (kubelet + containerd) in the local pool.
    real_nodes: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        data = dict(self.__dict__)
        data["ports"] = self.ports.as_dict()
        return json.dumps(data, indent=2)

    @classmethod
    def from_json(cls, text: str) -> ClusterState:
        data = json.loads(text)
        data["ports"] = render.Ports(**data["ports"])
        return cls(**data)


def read_state(layout: render.Layout) -> ClusterState | None:
    """The recorded state, or None when there is none or it is unreadable (half-written)."""
    try:
        return ClusterState.from_json(layout.state_file.read_text())
    except (OSError, ValueError, TypeError, KeyError):
        return None


def _write_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


@contextlib.contextmanager
def _locked(layout: render.Layout) -> Iterator[None]:
    """Serialise ``up`` and ``down`` (a test fixture and a person may race)."""
    layout.root.mkdir(parents=True, exist_ok=True)
    with layout.lock_file.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def layout_for(settings: Settings) -> render.Layout:
    return render.Layout(settings.state / "cluster")


# ---------------------------------------------------------------------------------------------
# Binaries


def find_binaries(bin_dir: Path) -> dict[str, Path]:
    """The server binaries, or a ClusterError naming every missing one and how to build it."""
    found = {name: bin_dir / name for name in SERVER_BINARIES}
    missing = [name for name, path in found.items() if not os.access(path, os.X_OK)]
    if missing:
        raise ClusterError(
            f"control-plane binaries missing from {bin_dir}: {', '.join(missing)}; {BUILD_HINT}"
        )
    return found


def find_kubectl(bin_dir: Path) -> Path:
    """kubectl matching the API server (built next to it), else whatever is on PATH.

    The machine's own kubectl may be older than the API server (v1.32 from the Cloud SDK
    against v1.34 here); the skew policy allows that, but the built one is preferred.
    """
    built = bin_dir / KUBECTL
    if os.access(built, os.X_OK):
        return built
    on_path = shutil.which(KUBECTL)
    if on_path:
        log_event(logger, "kubectl.fallback", level=logging.WARNING, path=on_path, wanted=built)
        return Path(on_path)
    raise ClusterError(f"kubectl not found in {bin_dir} nor on PATH; {BUILD_HINT}")


def binary_versions(bin_dir: Path, names: Sequence[str]) -> dict[str, str]:
    """Versions from the cache's ``NAME -> NAME-VERSION`` symlinks (no process started)."""
    versions: dict[str, str] = {}
    for name in names:
        target = (bin_dir / name).resolve().name
        versions[name] = target[len(name) + 1 :] if target.startswith(name + "-") else "unknown"
    return versions


# ---------------------------------------------------------------------------------------------
# Processes: ours are the component binaries whose command line names this cluster's root.


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _is_ours(pid: int, layout: render.Layout, component: str | None = None) -> bool:
    """Whether ``pid`` is a control-plane process of this cluster (guards against pid reuse)."""
    argv = _cmdline(pid)
    if not argv:
        return False
    name = Path(argv[0]).name
    if name not in SERVER_BINARIES or (component is not None and name != component):
        return False
    root = str(layout.root)
    return any(root in arg for arg in argv[1:])


def find_cluster_processes(layout: render.Layout) -> dict[int, str]:
    """Every live process of this cluster, pid files or not (a crash may have lost them)."""
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        if pid != os.getpid() and _is_ours(pid, layout):
            found[pid] = Path(_cmdline(pid)[0]).name
    return found


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _recorded_pids(layout: render.Layout) -> dict[str, int]:
    pids: dict[str, int] = {}
    for component in render.COMPONENTS:
        try:
            pids[component] = int(layout.pid_file(component).read_text().strip())
        except (OSError, ValueError):
            continue
    return pids


def _terminate(pid: int, timeout: float = 10.0) -> None:
    """TERM then KILL ``pid`` (its whole group when it leads one, as ours do)."""
    try:
        group = os.getpgid(pid)
    except ProcessLookupError:
        return

    def send(sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if group == pid:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)

    for sig in (15, 9):  # SIGTERM, SIGKILL
        send(sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            if not pid_alive(pid) or _zombie(pid):
                return
            time.sleep(0.05)


def _zombie(pid: int) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return False
    return bool(fields) and fields[0] == "Z"


def _stop_all(layout: render.Layout, bin_dir: Path) -> list[str]:
    """Stop this cluster's processes in reverse start order; returns what was running.

    Real nodes go first: their tear-down needs nothing from the control plane, and a
    kubelet left without its API server would only log errors meanwhile.
    """
    real = services.teardown(layout.root, bin_dir)
    real += real_nodes.teardown_all(layout.root)
    for name in services.BINARIES:
        layout.pid_file(name).unlink(missing_ok=True)
    for pid_file in layout.run.glob(
        f"{node_render.real_node_name(real_nodes.REAL_TIER, 0)[:-1]}*.pid"
    ):
        pid_file.unlink(missing_ok=True)
    by_pid: dict[int, str] = {}
    for component, pid in _recorded_pids(layout).items():
        if _is_ours(pid, layout, component):
            by_pid[pid] = component
    by_pid.update(find_cluster_processes(layout))
    order = {name: i for i, name in enumerate(render.COMPONENTS)}
    stopped: list[str] = []
    for pid, component in sorted(by_pid.items(), key=lambda kv: -order.get(kv[1], 0)):
        _terminate(pid)
        stopped.append(component)
        log_event(logger, "cluster.component_stopped", component=component, pid=pid)
    for component in render.COMPONENTS:
        layout.pid_file(component).unlink(missing_ok=True)
    return real + stopped


def _clear_run_state(layout: render.Layout) -> None:
    """Forget the last run: etcd data, the state file and kubeconfigs (PKI and logs stay)."""
    shutil.rmtree(layout.etcd_data, ignore_errors=True)
    layout.state_file.unlink(missing_ok=True)
    layout.admin_kubeconfig.unlink(missing_ok=True)
    shutil.rmtree(layout.component_kubeconfig("x").parent, ignore_errors=True)


def rss_bytes(pid: int) -> int | None:
    """Resident memory of ``pid`` from /proc (None when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


# ---------------------------------------------------------------------------------------------
# Ports and addresses


def _port_free(port: int) -> bool:
    """Whether a server could bind ``127.0.0.1:port`` now (SO_REUSEADDR, as Go servers do)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((render.LOOPBACK, port))
        except OSError:
            return False
    return True


def choose_ports(settings: Settings, previous: render.Ports | None) -> render.Ports:
    """Ports from the environment, else the previous run's (stable kubeconfig), else free.

    A port set in the environment that is taken is an error (the person asked for it); a
    previous port that is taken is silently replaced.
    """
    chosen: dict[str, int] = {}
    for name in ("etcd", "etcd_peer", "apiserver", "controller_manager", "scheduler"):
        override = int(getattr(settings, f"cluster_{name}_port"))
        if override:
            if override in chosen.values() or not _port_free(override):
                env = f"BRAID_CLUSTER_{name.upper()}_PORT"
                raise ClusterError(f"port {override} ({env}) is already in use on 127.0.0.1")
            chosen[name] = override
            continue
        candidate = getattr(previous, name) if previous is not None else 0
        while not candidate or candidate in chosen.values() or not _port_free(candidate):
            candidate = free_port()
        chosen[name] = candidate
    return render.Ports(**chosen)


def host_address() -> str:
    """This host's primary IPv4 address (no packet is sent), or loopback when it has none."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(("10.255.255.255", 1))
            address: str = sock.getsockname()[0]
        except OSError:
            return render.LOOPBACK
    return address if not address.startswith("127.") else render.LOOPBACK


# ---------------------------------------------------------------------------------------------
# Talking to the servers


def _tls_context(layout: render.Layout, client: str = "admin") -> ssl.SSLContext:
    pki = layout.pki
    context = ssl.create_default_context(cafile=str(pki.ca_cert))
    context.load_cert_chain(str(pki.cert(client)), str(pki.key(client)))
    return context


class ApiClient:
    """Just enough of the Kubernetes API for bootstrapping and health checks."""

    def __init__(self, layout: render.Layout, ports: render.Ports, timeout: float = 5.0) -> None:
        self._http = httpx.Client(
            base_url=render.apiserver_url(ports),
            verify=_tls_context(layout),
            timeout=timeout,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def get(self, path: str) -> httpx.Response:
        return self._http.get(path)

    def get_json(self, path: str) -> Any:
        response = self._http.get(path)
        response.raise_for_status()
        return response.json()

    def ready(self) -> bool:
        return self._http.get("/readyz").status_code == 200

    def create(self, obj: dict[str, Any]) -> bool:
        """Create ``obj``; True if created, False if it already existed (idempotent)."""
        response = self._http.post(_collection_path(obj), json=obj)
        if response.status_code == 409:
            return False
        if response.status_code >= 300:
            raise ClusterError(
                f"creating {obj['kind']} {obj['metadata']['name']} failed: "
                f"HTTP {response.status_code} {response.text[:500]}"
            )
        return True


def _collection_path(obj: dict[str, Any]) -> str:
    """The collection URL for the cluster-scoped kinds bootstrapping creates."""
    plural = {
        "Node": "nodes",
        "ClusterRole": "clusterroles",
        "ClusterRoleBinding": "clusterrolebindings",
        "Service": "services",
        "EndpointSlice": "endpointslices",
    }
    kind = obj["kind"]
    if kind not in plural:
        raise ValueError(f"bootstrap does not create {kind}")
    api_version: str = obj["apiVersion"]
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    namespace = obj["metadata"].get("namespace")
    if namespace:
        prefix = f"{prefix}/namespaces/{namespace}"
    return f"{prefix}/{plural[kind]}"


def _https_ok(layout: render.Layout, url: str) -> bool:
    try:
        return httpx.get(url, verify=_tls_context(layout), timeout=3.0).status_code == 200
    except httpx.HTTPError:
        return False


def _etcd_healthy(layout: render.Layout, ports: render.Ports) -> bool:
    url = f"https://{render.LOOPBACK}:{ports.etcd}/health"
    try:
        response = httpx.get(url, verify=_tls_context(layout, "apiserver-etcd-client"), timeout=3.0)
    except httpx.HTTPError:
        return False
    return response.status_code == 200 and response.json().get("health") == "true"


def _component_health_url(component: str, ports: render.Ports) -> str | None:
    port = {
        "kube-apiserver": ports.apiserver,
        "kube-controller-manager": ports.controller_manager,
        "kube-scheduler": ports.scheduler,
    }.get(component)
    if port is None:
        return None
    path = "/readyz" if component == "kube-apiserver" else "/healthz"
    return f"https://{render.LOOPBACK}:{port}{path}"


def schedulable_nodes(api: ApiClient, selector: str) -> list[str]:
    """Names of the nodes matching ``selector`` that are Ready and not tainted not-ready."""
    data = api.get_json(f"/api/v1/nodes?labelSelector={quote(selector)}")
    names: list[str] = []
    for node in data.get("items", []):
        conditions = node.get("status", {}).get("conditions", [])
        ready = any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
        taints = node.get("spec", {}).get("taints", []) or []
        not_ready = any(t["key"].startswith("node.kubernetes.io/") for t in taints)
        if ready and not not_ready:
            names.append(node["metadata"]["name"])
    return sorted(names)


# ---------------------------------------------------------------------------------------------
# up / down / status


@dataclass
class UpResult:
    state: ClusterState
    kubeconfig: Path
    kubectl: Path | None
    already_running: bool


@dataclass
class ComponentStatus:
    name: str
    pid: int | None
    running: bool
    healthy: bool | None
    rss_bytes: int | None
    port: int | None
    log: Path


@dataclass
class ClusterStatus:
    root: Path
    state: ClusterState | None
    components: list[ComponentStatus]
    nodes_ready: list[str] | None
    kubeconfig: Path | None
    #: Processes of this cluster that no pid file accounts for (pid -> component).
    strays: dict[int, str] = field(default_factory=dict)

    @property
    def running(self) -> bool:
        """All components up and healthy."""
        return self.state is not None and all(
            c.running and c.healthy is not False for c in self.components
        )

    @property
    def stopped(self) -> bool:
        return not any(c.running for c in self.components) and not self.strays

    @property
    def total_rss_bytes(self) -> int:
        return sum(c.rss_bytes or 0 for c in self.components)


def _ports_of(state: ClusterState | None, component: str) -> int | None:
    if state is None:
        return None
    ports = state.ports
    return {
        "etcd": ports.etcd,
        "kube-apiserver": ports.apiserver,
        "kube-controller-manager": ports.controller_manager,
        "kube-scheduler": ports.scheduler,
    }.get(component)


def status(settings: Settings) -> ClusterStatus:
    """What is running, healthy, and how much memory it holds; never starts or stops."""
    layout = layout_for(settings)
    state = read_state(layout)
    recorded = _recorded_pids(layout)
    components: list[ComponentStatus] = []
    for component in render.COMPONENTS:
        pid = recorded.get(component)
        running = pid is not None and _is_ours(pid, layout, component)
        healthy: bool | None = None
        if running and state is not None:
            if component == "etcd":
                healthy = _etcd_healthy(layout, state.ports)
            else:
                url = _component_health_url(component, state.ports)
                healthy = _https_ok(layout, url) if url else None
        components.append(
            ComponentStatus(
                name=component,
                pid=pid if running else None,
                running=running,
                healthy=healthy,
                rss_bytes=rss_bytes(pid) if running and pid is not None else None,
                port=_ports_of(state, component),
                log=layout.log(component),
            )
        )
    for node in state.real_nodes if state is not None else []:
        node_layout = node_render.NodeLayout(real_nodes.nodes_root(layout.root) / node)
        for role in ("containerd", "kubelet"):
            component = f"{node}-{role}"
            pid = _read_pid(layout.pid_file(component))
            running = pid is not None and real_nodes.is_node_process(pid, node_layout, role)
            components.append(
                ComponentStatus(
                    name=component,
                    pid=pid if running else None,
                    running=running,
                    healthy=real_nodes.kubelet_healthy(node_layout)
                    if running and role == "kubelet"
                    else None,
                    rss_bytes=rss_bytes(pid) if running and pid is not None else None,
                    port=None,
                    log=layout.log(component),
                )
            )
    if state is not None and state.real_nodes:
        running_services = {name: pid for pid, name in services.processes(layout.root).items()}
        for name in services.started(layout.root):
            pid = running_services.get(name)
            components.append(
                ComponentStatus(
                    name=name,
                    pid=pid,
                    running=pid is not None,
                    healthy=None,
                    rss_bytes=rss_bytes(pid) if pid is not None else None,
                    port=None,
                    log=layout.log(name),
                )
            )
    known = {c.pid for c in components if c.pid is not None}
    strays = {pid: name for pid, name in find_cluster_processes(layout).items() if pid not in known}
    nodes: list[str] | None = None
    apiserver = components[1]
    if state is not None and apiserver.healthy:
        try:
            with ApiClient(layout, state.ports) as api:
                key, value = render.KWOK_NODE_LABEL
                nodes = schedulable_nodes(api, f"{key}={value}")
        except (httpx.HTTPError, ClusterError):
            nodes = None
    kubeconfig = layout.admin_kubeconfig if layout.admin_kubeconfig.exists() else None
    return ClusterStatus(layout.root, state, components, nodes, kubeconfig, strays)


def _healthy(settings: Settings, layout: render.Layout) -> ClusterState | None:
    """The recorded state when every component is running and answering, else None."""
    current = status(settings)
    if current.running and current.state is not None and not current.strays:
        return current.state
    return None


def down(settings: Settings) -> list[str]:
    """Stop every process of the cluster and forget its run state; returns what was stopped.

    Stopping a cluster that is not running is not an error: the result is just empty.
    """
    layout = layout_for(settings)
    if not layout.root.exists():
        return []
    with _locked(layout):
        stopped = _stop_all(layout, settings.bin_dir)
        _clear_run_state(layout)
    log_event(logger, "cluster.down", root=layout.root, stopped=",".join(stopped) or "-")
    return stopped


def up(settings: Settings, progress: Progress | None = None) -> UpResult:
    """Start the control plane (or report the one already running) and wait until pods can
    be scheduled on its kwok nodes."""
    layout = layout_for(settings)
    say = progress or (lambda _msg: None)
    binaries = find_binaries(settings.bin_dir)
    node_tools: real_nodes.NodeTools | None = None
    if settings.cluster_real_nodes:
        try:
            node_tools = real_nodes.find_tools(settings.bin_dir)
        except real_nodes.NodeError as exc:
            raise ClusterError(
                f"{exc}; or set BRAID_CLUSTER_REAL_NODES=0 for kwok nodes only"
            ) from exc
    kubectl: Path | None
    try:
        kubectl = find_kubectl(settings.bin_dir)
    except ClusterError:
        kubectl = None
    with _locked(layout):
        running = _healthy(settings, layout)
        if running is not None:
            log_event(logger, "cluster.already_running", root=layout.root)
            return UpResult(running, layout.admin_kubeconfig, kubectl, already_running=True)
        stale = _stop_all(layout, settings.bin_dir)
        if stale:
            log_event(logger, "cluster.stale_cleaned", stopped=",".join(stale))
        _clear_run_state(layout)
        state = _start(settings, layout, binaries, node_tools, _previous_ports(layout), say)
        return UpResult(state, layout.admin_kubeconfig, kubectl, already_running=False)


def _previous_ports(layout: render.Layout) -> render.Ports | None:
    try:
        return render.Ports(**json.loads(layout.ports_file.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _kubeconfig(layout: render.Layout, ports: render.Ports, cert: str, user: str) -> str:
    """A kubeconfig for one of the PKI's client certificates (a kubelet's, kube-proxy's...)."""
    pair = layout.pki.read(cert)
    ca = layout.pki.ca_cert.read_bytes()
    server = render.apiserver_url(ports)
    config = render.render_kubeconfig(server, ca, pair.cert_pem, pair.key_pem, user)
    return yaml.safe_dump(config)


def _write_config(layout: render.Layout, ports: render.Ports) -> None:
    """Kubeconfigs for the admin and each component, and kwok's configuration file."""
    pki = layout.pki
    ca = pki.ca_cert.read_bytes()
    server = render.apiserver_url(ports)
    for component, cert in (
        ("kube-controller-manager", "kube-controller-manager"),
        ("kube-scheduler", "kube-scheduler"),
        ("kwok", "kwok"),
    ):
        pair = pki.read(cert)
        config = render.render_kubeconfig(server, ca, pair.cert_pem, pair.key_pem, component)
        _write_atomic(layout.component_kubeconfig(component), yaml.safe_dump(config), 0o600)
    _write_atomic(layout.kwok_config, yaml.safe_dump(render.render_kwok_config()))
    admin = pki.read("admin")
    config = render.render_kubeconfig(server, ca, admin.cert_pem, admin.key_pem, "braid-admin")
    # Written last: its presence is what tells a person the cluster is theirs to use.
    _write_atomic(layout.admin_kubeconfig, yaml.safe_dump(config), 0o600)


def _start(
    settings: Settings,
    layout: render.Layout,
    binaries: dict[str, Path],
    node_tools: real_nodes.NodeTools | None,
    previous_ports: render.Ports | None,
    say: Progress,
) -> ClusterState:
    started = time.monotonic()
    real_names = (
        [
            node_render.real_node_name(real_nodes.REAL_TIER, i)
            for i in range(settings.cluster_real_nodes)
        ]
        if node_tools is not None
        else []
    )
    deadline = started + settings.cluster_start_timeout
    phases: dict[str, float] = {}
    procs: dict[str, ManagedProcess] = {}

    def remaining() -> float:
        return max(1.0, deadline - time.monotonic())

    def mark(phase: str, since: float) -> float:
        now = time.monotonic()
        phases[phase] = round(now - since, 3)
        return now

    def launch(component: str, argv: list[str]) -> ManagedProcess:
        proc = start_process(
            component,
            argv,
            layout.log(component),
            env=render.GO_RUNTIME_ENV,
            pid_path=layout.pid_file(component),
            # The cluster outlives the command that started it; ``down`` stops it.
            owned=False,
        )
        procs[component] = proc
        return proc

    def wait(check: Callable[[], bool], what: str, proc: ManagedProcess | None = None) -> None:
        wait_until(
            check,
            what,
            remaining(),
            list(procs.values()) if proc is None else [proc],
            interval=0.25,
            ignore=(httpx.HTTPError, OSError, ValueError, KeyError),
            tail_lines=15,
        )

    try:
        t = time.monotonic()
        say("issuing certificates")
        ensure_pki(
            layout.pki.root,
            [
                *render.cert_specs(),
                *node_render.node_cert_specs(real_names),
                *services_render.service_cert_specs(),
            ],
        )
        ports = choose_ports(settings, previous_ports)
        _write_atomic(layout.ports_file, json.dumps(ports.as_dict()))
        advertise = settings.cluster_advertise_address or host_address()
        _write_config(layout, ports)
        for component in render.COMPONENTS:
            layout.log(component).unlink(missing_ok=True)
        t = mark("pki_and_config", t)

        say("starting etcd")
        etcd = launch("etcd", render.etcd_argv(binaries["etcd"], layout, ports))
        wait(lambda: _etcd_healthy(layout, ports), "etcd to report healthy", etcd)
        t = mark("etcd", t)

        say("starting kube-apiserver")
        apiserver = launch(
            "kube-apiserver",
            render.apiserver_argv(
                binaries["kube-apiserver"],
                layout,
                ports,
                advertise,
                pods_reach_it=settings.cluster_real_nodes > 0,
            ),
        )
        with ApiClient(layout, ports) as api:
            wait(api.ready, "kube-apiserver /readyz", apiserver)
            t = mark("kube-apiserver", t)

            say("creating kwok RBAC and the node pools")
            for obj in [*render.render_kwok_rbac(), *render.render_pool_nodes()]:
                api.create(obj)

            say("starting controller-manager, scheduler and kwok")
            launch(
                "kube-controller-manager",
                render.controller_manager_argv(binaries["kube-controller-manager"], layout, ports),
            )
            launch(
                "kube-scheduler",
                render.scheduler_argv(binaries["kube-scheduler"], layout, ports),
            )
            launch("kwok", render.kwok_argv(binaries["kwok"], layout))
            for component in ("kube-controller-manager", "kube-scheduler"):
                url = _component_health_url(component, ports)
                assert url is not None
                wait(functools.partial(_https_ok, layout, url), f"{component} /healthz")
            t = mark("controllers", t)

            say("waiting for the kwok nodes to become Ready")
            expected = sorted(n["metadata"]["name"] for n in render.render_pool_nodes())
            key, value = render.KWOK_NODE_LABEL
            wait(
                lambda: schedulable_nodes(api, f"{key}={value}") == expected,
                f"{len(expected)} kwok nodes Ready and untainted",
            )
            t = mark("nodes_ready", t)
            # Pods need their namespace's default ServiceAccount (admission refuses them
            # before the service-account controller has made it).
            wait(
                lambda: (
                    api.get("/api/v1/namespaces/default/serviceaccounts/default").status_code == 200
                ),
                "the default ServiceAccount",
            )
            t = mark("default_serviceaccount", t)
            if node_tools is not None:
                say(f"starting {len(real_names)} real node(s): containerd, images, kubelet")
                started_nodes = [
                    real_nodes.start_node(
                        layout,
                        index,
                        node_tools,
                        settings.cache,
                        _kubeconfig(
                            layout,
                            ports,
                            node_render.kubelet_cert_name(name),
                            f"system:node:{name}",
                        ),
                        launch,
                        remaining(),
                        cluster_dns=[services_render.CLUSTER_DNS_IP],
                    )
                    for index, name in enumerate(real_names)
                ]
                t = mark("real_nodes_started", t)
                say("waiting for the real nodes to become Ready")
                real_key, real_value = node_render.REAL_NODE_LABEL
                wait(
                    lambda: schedulable_nodes(api, f"{real_key}={real_value}") == real_names,
                    f"{len(real_names)} real nodes Ready",
                )
                t = mark("real_nodes_ready", t)
                say("starting CoreDNS and kube-proxy")
                dns_ip = started_nodes[0].net.node_ip
                for obj in services_render.render_dns_objects(dns_ip):
                    api.create(obj)
                services.start(
                    layout,
                    lambda cert, user: _kubeconfig(layout, ports, cert, user),
                    settings.bin_dir,
                    dns_ip,
                    real_names[0],
                    launch,
                    remaining(),
                )
                t = mark("coredns_and_kube_proxy", t)
    except BaseException as exc:
        for proc in reversed(list(procs.values())):
            with contextlib.suppress(Exception):
                proc.stop(timeout=5.0)
        with contextlib.suppress(Exception):
            real_nodes.teardown_all(layout.root)
        _clear_run_state(layout)
        if isinstance(exc, real_nodes.NodeError):
            raise ClusterError(f"cluster up failed: {exc}") from exc
        if isinstance(exc, StartupError | ClusterError):
            raise ClusterError(f"cluster up failed: {exc}") from exc
        if isinstance(exc, httpx.HTTPError | OSError):
            raise ClusterError(f"cluster up failed: {exc!r}") from exc
        raise

    total = round(time.monotonic() - started, 3)
    state = ClusterState(
        ports=ports,
        pids={name: proc.pid for name, proc in procs.items()},
        started_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        up_seconds=total,
        phases=phases,
        versions=binary_versions(
            settings.bin_dir, [*SERVER_BINARIES, *(["kubelet"] if real_names else [])]
        ),
        advertise_address=advertise,
        real_nodes=real_names,
    )
    _write_atomic(layout.state_file, state.to_json())
    phase_text = ",".join(f"{k}:{v}" for k, v in phases.items())
    log_event(
        logger,
        "cluster.up",
        seconds=total,
        apiserver=render.apiserver_url(ports),
        phases=phase_text,
    )
    return state


def restart_apiserver(
    settings: Settings, down_s: float = 0.0, timeout: float = 120.0
) -> tuple[float, float]:
    """Stop the running cluster's kube-apiserver and start it again in place (fault tests).

    Same binary, flags, port, certificates and etcd, so every client's kubeconfig stays valid:
    what clients see is an API server that went away for a while. ``down_s`` keeps it down
    that long. Returns ``(stopped_at, ready_at)`` (``time.monotonic()``); the new pid is
    recorded in the cluster's state, so ``status`` and ``down`` know it.
    """
    layout = layout_for(settings)
    binaries = find_binaries(settings.bin_dir)
    component = "kube-apiserver"
    with _locked(layout):
        state = read_state(layout)
        if state is None:
            raise ClusterError("the local cluster is not running; nothing to restart")
        pid = state.pids.get(component)
        if pid is not None and _is_ours(pid, layout, component):
            _terminate(pid)
        stopped_at = time.monotonic()
        log_event(logger, "cluster.component_stopped", component=component, pid=pid)
        if down_s > 0:
            time.sleep(down_s)
        argv = render.apiserver_argv(
            binaries[component],
            layout,
            state.ports,
            state.advertise_address,
            pods_reach_it=bool(state.real_nodes),
        )
        proc = start_process(
            component,
            argv,
            layout.log(component),
            env=render.GO_RUNTIME_ENV,
            pid_path=layout.pid_file(component),
            # The cluster outlives the command that started it; ``down`` stops it.
            owned=False,
        )
        with ApiClient(layout, state.ports) as api:
            wait_until(
                api.ready,
                "kube-apiserver /readyz after a restart",
                timeout,
                [proc],
                interval=0.25,
                ignore=(httpx.HTTPError, OSError, ValueError, KeyError),
                tail_lines=15,
            )
        ready_at = time.monotonic()
        state.pids[component] = proc.pid
        _write_atomic(layout.state_file, state.to_json())
    log_event(
        logger,
        "cluster.apiserver_restarted",
        pid=proc.pid,
        down_seconds=round(ready_at - stopped_at, 3),
    )
    return stopped_at, ready_at


# ---------------------------------------------------------------------------------------------
# Access for tests and tools


@dataclass(frozen=True)
class ClusterAccess:
    """How to reach a running cluster: its admin kubeconfig and a kubectl to go with it."""

    kubeconfig: Path
    server: str
    ca_cert: Path
    kubectl_path: Path

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        timeout: float = 60.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this cluster; on failure the error carries stderr."""
        argv = [str(self.kubectl_path), f"--kubeconfig={self.kubeconfig}", *args]
        result = subprocess.run(
            argv, input=input, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and result.returncode != 0:
            raise ClusterError(
                f"kubectl {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}"
            )
        return result

    def kubectl_json(self, *args: str, timeout: float = 60.0) -> Any:
        return json.loads(self.kubectl(*args, "-o", "json", timeout=timeout).stdout)


def access(settings: Settings) -> ClusterAccess:
    """Access to the running cluster, or a ClusterError when there is none."""
    layout = layout_for(settings)
    state = read_state(layout)
    if state is None or not layout.admin_kubeconfig.exists():
        raise ClusterError("the local cluster is not running; start it with `braid dev cluster up`")
    return ClusterAccess(
        kubeconfig=layout.admin_kubeconfig,
        server=render.apiserver_url(state.ports),
        ca_cert=layout.pki.ca_cert,
        kubectl_path=find_kubectl(settings.bin_dir),
    )
