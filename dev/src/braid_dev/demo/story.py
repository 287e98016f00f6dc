"""``braid demo``: the whole system end to end on this machine, in one command.

The demo builds (or reuses) the models, starts the local control plane, ``helm install``s
braid from ``charts/braid`` (CRDs, RBAC, the components' Deployments on the local pool), runs
the operator and the path controller as the chart's least-privilege ServiceAccounts (see
``demo_chart``: on kwok the chart's Pods run nothing, so the processes run here), applies the
samples adapted to the build (``demo_manifests``), lets the kwok runtime start a real
tritonserver per Triton pod, starts the gateway on the operator's routing ConfigMap and
Prometheus, runs ``helm test`` (the chart's test Pod's script, run here against the gateway),
and sends labelled Fashion-MNIST test images through the gateway while the load goes
light -> heavy -> light.

The controller reads Triton's and the gateway's metrics from Prometheus, chooses paths with
CoDE's eq. 1/2 and writes ``OffloadPolicy.status.activePaths``; the operator re-renders the
routing ConfigMap from that status, the demo copies the ConfigMap to the gateway's routing
file, and the gateway reloads it: every hop of the real data path. There is one controller,
the product's: the demo only reads what it wrote (``PolicyObserver``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
import yaml

from braid.api.catalog import PathCatalog
from braid.dataplane.promql import PrometheusClient
from braid.kube.client import Kube
from braid.logs import log_event
from braid.render.prometheus_config import ScrapeTarget
from braid.render.routing import ENDPOINTS_FILE, routing_configmap_name
from braid.settings import Settings
from braid_dev.demo.chart import (
    HelmTestResult,
    account_kubeconfig,
    install_release,
    run_helm_test,
    uninstall_release,
)
from braid_dev.demo.manifests import (
    CATALOG_CONFIGMAP,
    HOST_NAMESPACE,
    LOCAL_NAMESPACE,
    POLICY_NAME,
    demo_manifests,
    load_samples,
)
from braid_dev.demo.real_stack import deploy_on_real_nodes, has_real_nodes, wait_for_routing
from braid_dev.kwok_runtime import KwokTritonRuntime
from braid_dev.stack import cluster
from braid_dev.stack.operator_process import start_operator
from braid_dev.stack.ports import free_port
from braid_dev.stack.processes import ManagedProcess, start_process, wait_until
from braid_dev.stack.prometheus import PrometheusServer, start_prometheus
from braid_dev.stack.stop_signals import shielded_teardown

logger = logging.getLogger(__name__)

CONFIGMAP_LIMIT = 1_000_000
"""A ConfigMap's data must stay under 1 MiB; leave room for the object's metadata."""
RHO_MAX = 0.95
CHART_GATEWAY_HTTP_PORT = 8000
"""The chart's ``gateway.httpPort``: the port the helm test Pod dials on the Service."""


@dataclass(frozen=True)
class DemoOptions:
    full: bool = False
    duration_s: float = 60.0
    keep: bool = False
    workdir: Path = Path("demo")
    png: Path = Path("docs/img/demo-timeline.png")
    light_rps: float = 5.0
    heavy_workers: int = 12
    namespaces: tuple[str, str] = (LOCAL_NAMESPACE, HOST_NAMESPACE)
    """The local provider's and the host's namespaces (other names need real nodes)."""


@dataclass(frozen=True)
class Sample:
    t: float
    phase: str
    path: str
    latency_ms: float
    correct: bool


@dataclass
class Decision:
    t: float
    rho: float
    path: str
    cost: float
    original_cost: float


@dataclass
class DemoState:
    """What the threads share; the live view and the summary read it."""

    started: float = field(default_factory=time.monotonic)
    phase: str = "starting"
    samples: list[Sample] = field(default_factory=list)
    errors: int = 0
    decisions: list[Decision] = field(default_factory=list)
    stages: dict[str, float] = field(default_factory=dict)
    helm_test: HelmTestResult | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, sample: Sample) -> None:
        with self.lock:
            self.samples.append(sample)

    def window(self, seconds: float) -> list[Sample]:
        now = time.monotonic() - self.started
        with self.lock:
            return [s for s in self.samples if s.t >= now - seconds]


Progress = Callable[[str], None]


@contextlib.contextmanager
def _stage(state: DemoState, name: str, progress: Progress) -> Iterator[None]:
    progress(name)
    started = time.monotonic()
    yield
    state.stages[name] = round(time.monotonic() - started, 1)
    log_event(logger, "demo.stage", stage=name, seconds=state.stages[name])


# -- models -----------------------------------------------------------------------------------


def build_models(options: DemoOptions) -> tuple[Path, PathCatalog, bool]:
    """The Triton repository and catalog of the chosen profile (cached by config hash)."""
    from braid.tooling.pipeline import run_pipeline

    out = options.workdir / "model-repo"
    output = run_pipeline("full" if options.full else "quick", out)
    catalog = PathCatalog.model_validate_json((out / "catalog.json").read_text())
    return out.resolve(), catalog, output.cached


# -- cluster ----------------------------------------------------------------------------------


def _kubectl_apply(access: cluster.ClusterAccess, objs: list[dict[str, Any]]) -> None:
    access.kubectl(
        "apply", "--server-side", "--force-conflicts", "-f", "-", input=yaml.safe_dump_all(objs)
    )


def wait_for_terminating_namespaces(
    access: cluster.ClusterAccess, namespaces: tuple[str, str] = (LOCAL_NAMESPACE, HOST_NAMESPACE)
) -> None:
    """A previous demo on a reused cluster deletes its namespaces without waiting for them;
    helm cannot install into a namespace that is still going away."""
    for name in namespaces:
        phase = access.kubectl(
            "get", "namespace", name, "-o", "jsonpath={.status.phase}", check=False
        ).stdout.strip()
        if phase == "Terminating":
            access.kubectl("wait", "--for=delete", f"namespace/{name}", "--timeout=180s")


def install_samples(access: cluster.ClusterAccess, repository: Path, catalog: PathCatalog) -> str:
    """Namespaces, the catalog (ConfigMap or file), Models, Links, Blocks and the policy."""
    catalog_file = repository / "catalog.json"
    size = catalog_file.stat().st_size
    in_configmap = size < CONFIGMAP_LIMIT
    objs = demo_manifests(
        catalog,
        repository,
        load_samples(),
        catalog_uri=None if in_configmap else f"file://{catalog_file}",
    )
    namespaces = [o for o in objs if o["kind"] == "Namespace"]
    _kubectl_apply(access, namespaces)
    for ns in namespaces:
        name = ns["metadata"]["name"]
        wait_until(
            lambda n=name: (  # type: ignore[misc]
                access.kubectl("get", "serviceaccount", "default", "-n", n, check=False).stdout
                != ""
            ),
            f"the default ServiceAccount in {name}",
            timeout=60,
        )
    if in_configmap:
        manifest = access.kubectl(
            "create",
            "configmap",
            CATALOG_CONFIGMAP,
            "-n",
            LOCAL_NAMESPACE,
            f"--from-file=catalog.json={catalog_file}",
            "--dry-run=client",
            "-o",
            "yaml",
        ).stdout
        access.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=manifest)
    order = ("Model", "Link", "Block", "OffloadPolicy")
    for kind in order:
        _kubectl_apply(access, [o for o in objs if o["kind"] == kind])
    where = f"ConfigMap {CATALOG_CONFIGMAP}" if in_configmap else f"file://{catalog_file}"
    log_event(logger, "demo.catalog", bytes=size, where=where)
    return f"{where} ({size / 1024:.0f} KiB)"


def wait_for_kwok_routing(
    kube: Kube, catalog: PathCatalog, runtime: KwokTritonRuntime, timeout: float
) -> tuple[dict[str, Any], list[str]]:
    """The routing ConfigMap once every hop of its routable paths has a loopback address (a
    tritonserver the kwok runtime started here)."""

    def runtime_ok() -> None:
        if runtime.failures:
            raise RuntimeError(f"the kwok runtime could not start Triton: {runtime.failures}")

    return wait_for_routing(
        kube,
        catalog,
        LOCAL_NAMESPACE,
        timeout,
        reachable=lambda address: address.startswith("127.0.0.1:"),
        check=runtime_ok,
    )


# -- the controller ----------------------------------------------------------------------------


class PolicyObserver:
    """Reads what the real controller decided (OffloadPolicy.status) for the live view."""

    def __init__(
        self,
        kube: Kube,
        prometheus: PrometheusClient,
        catalog: PathCatalog,
        state: DemoState,
        local_selector: str = 'tier="local"',
        namespace: str = LOCAL_NAMESPACE,
    ) -> None:
        self.local_selector = local_selector
        self.namespace = namespace
        self.kube = kube
        self.prometheus = prometheus
        self.catalog = catalog
        self.state = state

    def step(self) -> None:
        busy = self.prometheus.query_value(
            f"sum(rate(nv_inference_compute_infer_duration_us{{{self.local_selector}}}[4s])) / 1e6"
        )
        policy = self.kube.get("braid.dev/v1alpha1", "OffloadPolicy", POLICY_NAME, self.namespace)
        status = (policy or {}).get("status") or {}
        active = status.get("activePaths") or []
        path = (
            " + ".join(
                f"{a['id']} {100 * float(a['weight']):.0f}%" if len(active) > 1 else str(a["id"])
                for a in active
            )
            or self.catalog.original_path
        )
        costs = {c["id"]: float(c["cost"]) for c in status.get("costs") or [] if "cost" in c}
        decision = Decision(
            time.monotonic() - self.state.started,
            min(RHO_MAX, busy or 0.0),
            path,
            float(status.get("cost") or math.nan),
            costs.get(self.catalog.original_path, math.nan),
        )
        with self.state.lock:
            self.state.decisions.append(decision)

    def run(self, stop: threading.Event, interval: float = 1.0) -> None:
        while not stop.is_set():
            try:
                self.step()
            except Exception as exc:  # one failed poll must not end the loop
                log_event(logger, "demo.observer_failed", level=logging.WARNING, error=exc)
            stop.wait(interval)


def start_controller(
    workdir: Path, prometheus_url: str, catalog_file: Path, kubeconfig: Path
) -> ManagedProcess:
    """``braid controller run`` in cluster mode: it writes OffloadPolicy.status."""
    return start_process(
        "braid-controller",
        [
            sys.executable,
            "-m",
            "braid.cli",
            "controller",
            "run",
            f"--prometheus={prometheus_url}",
            f"--catalog={catalog_file}",
            f"--policy-name={POLICY_NAME}",
            f"--namespace={LOCAL_NAMESPACE}",
            # Every server of the demo shares this machine's cores.
            f"--capacity=local={os.cpu_count() or 1}",
            f"--capacity=host={os.cpu_count() or 1}",
            "--interval=1",
            "--scrape-interval=1s",
        ],
        log_path=workdir / "controller.log",
        env={"KUBECONFIG": str(kubeconfig), "PYTHONUNBUFFERED": "1"},
        pid_path=workdir / "controller.pid",
    )


def sync_routing(kube: Kube, routing_file: Path, stop: threading.Event) -> None:
    """Copy ``routing.json`` from the operator's ConfigMap to the gateway's file on change."""
    name = routing_configmap_name(POLICY_NAME)
    while not stop.is_set():
        with contextlib.suppress(Exception):
            cm = kube.get("v1", "ConfigMap", name, LOCAL_NAMESPACE)
            text = ((cm or {}).get("data") or {}).get("routing.json")
            if text and (not routing_file.exists() or routing_file.read_text() != text):
                tmp = routing_file.with_suffix(".tmp")
                tmp.write_text(text)
                tmp.replace(routing_file)
                log_event(logger, "demo.routing_synced", file=routing_file)
        stop.wait(0.5)


# -- gateway and load -------------------------------------------------------------------------


def start_gateway(
    workdir: Path, catalog_file: Path, endpoints: Path, routing: Path
) -> tuple[ManagedProcess, str, str]:
    http_port, grpc_port = free_port(), free_port()
    process = start_process(
        "braid-gateway",
        [
            sys.executable,
            "-m",
            "braid.cli",
            "gateway",
            f"--catalog={catalog_file}",
            f"--endpoints={endpoints}",
            f"--routing={routing}",
            f"--http-port={http_port}",
            f"--grpc-port={grpc_port}",
        ],
        log_path=workdir / "gateway.log",
        pid_path=workdir / "gateway.pid",
    )
    url = f"http://127.0.0.1:{http_port}"
    wait_until(
        lambda: httpx.get(f"{url}/v2/health/ready", timeout=1.0).status_code == 200,
        "the gateway",
        timeout=90,
        process=process,
    )
    return process, url, f"127.0.0.1:{grpc_port}"


def fashion_mnist_test(n: int = 2000) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    from braid.tooling.data import load_fashion_mnist

    test = load_fashion_mnist().test.head(n)
    return test.images.numpy(), test.labels.numpy()


class LoadGenerator:
    """Workers sending labelled test images to the gateway over gRPC (tritonclient)."""

    def __init__(self, address: str, model: str, state: DemoState) -> None:
        self.address = address
        self.model = model
        self.state = state
        self.images, self.labels = fashion_mnist_test()
        self.counter = 0
        self.lock = threading.Lock()

    def _next(self) -> int:
        with self.lock:
            self.counter += 1
            return self.counter % len(self.labels)

    def worker(self, stop: threading.Event, rate: float | None) -> None:
        import tritonclient.grpc as grpcclient

        client = grpcclient.InferenceServerClient(self.address)
        try:
            while not stop.is_set():
                i = self._next()
                start = time.monotonic()
                tensor = grpcclient.InferInput("INPUT__0", [1, 1, 28, 28], "FP32")
                tensor.set_data_from_numpy(self.images[i : i + 1])
                try:
                    result = client.infer(self.model, [tensor], client_timeout=10.0)
                except Exception:
                    with self.state.lock:
                        self.state.errors += 1
                    stop.wait(0.2)
                    continue
                latency = time.monotonic() - start
                params = result.get_response().parameters
                path = params["braid_path"].string_param if "braid_path" in params else "?"
                logits = result.as_numpy("OUTPUT__0")
                self.state.add(
                    Sample(
                        t=time.monotonic() - self.state.started,
                        phase=self.state.phase,
                        path=path,
                        latency_ms=latency * 1e3,
                        correct=int(np.argmax(logits)) == int(self.labels[i]),
                    )
                )
                if rate is not None:
                    stop.wait(max(0.0, 1.0 / rate - latency))
        finally:
            client.close()

    def phase(self, name: str, seconds: float, workers: int, rate: float | None) -> None:
        self.state.phase = name
        stop = threading.Event()
        threads = [
            threading.Thread(target=self.worker, args=(stop, rate), daemon=True)
            for _ in range(workers)
        ]
        for t in threads:
            t.start()
        try:
            stop.wait(seconds)
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=15)


# -- views ------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    return float(np.percentile(np.asarray(values), q))


@dataclass(frozen=True)
class PathRow:
    path: str
    requests: int
    share: float
    p50_ms: float
    p99_ms: float
    accuracy: float


def path_rows(samples: list[Sample]) -> list[PathRow]:
    """Per path served: requests, share, latency p50 / p99 and accuracy."""
    by_path: dict[str, list[Sample]] = {}
    for s in samples:
        by_path.setdefault(s.path, []).append(s)
    total = max(1, len(samples))
    rows = [
        PathRow(
            path,
            len(group),
            len(group) / total,
            percentile([s.latency_ms for s in group], 50),
            percentile([s.latency_ms for s in group], 99),
            sum(s.correct for s in group) / len(group),
        )
        for path, group in by_path.items()
    ]
    return sorted(rows, key=lambda r: -r.requests)


def live_table(state: DemoState, window_s: float = 5.0) -> Any:
    from rich.table import Table

    samples = state.window(window_s)
    decision = state.decisions[-1] if state.decisions else None
    title = (
        f"phase [bold]{state.phase}[/bold] · {len(samples) / window_s:.0f} req/s · "
        f"errors {state.errors}"
    )
    if decision is not None:
        title += (
            f" · local utilisation {decision.rho:.2f} · active {decision.path} "
            f"F={decision.cost:.2f} (original {decision.original_cost:.2f})"
        )
    table = Table(title=title, caption=f"last {window_s:.0f} s at the gateway")
    for column in ("path", "req/s", "share", "p50 ms", "p99 ms", "accuracy"):
        table.add_column(column, justify="left" if column == "path" else "right")
    for row in path_rows(samples):
        table.add_row(
            row.path,
            f"{row.requests / window_s:.1f}",
            f"{100 * row.share:.0f} %",
            f"{row.p50_ms:.1f}",
            f"{row.p99_ms:.1f}",
            f"{100 * row.accuracy:.1f} %",
        )
    return table


def plot_timeline(state: DemoState, png: Path) -> Path:
    """Requests per path, latency and accuracy over time, with the phases shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = state.samples
    png.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(3, 1, figsize=(10, 8), sharex=True)
    if samples:
        end = int(max(s.t for s in samples)) + 1
        start = int(min(s.t for s in samples))
        bins = list(range(start, end + 1))
        paths = sorted({s.path for s in samples})
        counts = {p: [0] * (len(bins) - 1) for p in paths}
        lat: list[list[float]] = [[] for _ in range(len(bins) - 1)]
        correct: list[list[bool]] = [[] for _ in range(len(bins) - 1)]
        for s in samples:
            k = min(int(s.t) - start, len(bins) - 2)
            counts[s.path][k] += 1
            lat[k].append(s.latency_ms)
            correct[k].append(s.correct)
        x = bins[:-1]
        axes[0].stackplot(x, [counts[p] for p in paths], labels=paths, step="post")
        axes[0].set_ylabel("requests / s")
        axes[0].legend(loc="upper left", fontsize=7)
        axes[1].plot(x, [percentile(v, 50) for v in lat], label="p50")
        axes[1].plot(x, [percentile(v, 99) for v in lat], label="p99")
        axes[1].set_ylabel("latency ms")
        axes[1].set_yscale("log")
        axes[1].legend(loc="upper left", fontsize=7)
        axes[2].plot(x, [100 * sum(v) / len(v) if v else math.nan for v in correct])
        axes[2].set_ylabel("accuracy % (per s)")
        if state.decisions:
            ax = axes[2].twinx()
            ax.plot([d.t for d in state.decisions], [d.rho for d in state.decisions], "k:")
            ax.set_ylabel("local utilisation")
        for i, (lo, hi) in enumerate(phase_spans(samples)):
            for ax in axes:
                ax.axvspan(lo, hi, alpha=0.08, color="red" if i % 2 else "green")
    axes[2].set_xlabel("seconds since traffic started")
    fig.suptitle("braid demo: paths served as load goes light → heavy → light")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png


def phase_spans(samples: list[Sample]) -> list[tuple[float, float]]:
    """Consecutive (start, end) spans of the phases, in order."""
    spans: list[tuple[float, float]] = []
    last = None
    for s in sorted(samples, key=lambda s: s.t):
        if s.phase != last:
            spans.append((s.t, s.t))
            last = s.phase
        else:
            spans[-1] = (spans[-1][0], s.t)
    return spans


def summary_rows(state: DemoState) -> list[dict[str, Any]]:
    """Per phase (in order): requests, rate, latency, accuracy and the path that served most."""
    out: list[dict[str, Any]] = []
    samples = sorted(state.samples, key=lambda s: s.t)
    groups: list[list[Sample]] = []
    for s in samples:
        if not groups or groups[-1][0].phase != s.phase:
            groups.append([])
        groups[-1].append(s)
    for group in groups:
        span = max(1e-9, group[-1].t - group[0].t)
        rows = path_rows(group)
        out.append(
            {
                "phase": group[0].phase,
                "requests": len(group),
                "rps": len(group) / span,
                "p50_ms": percentile([s.latency_ms for s in group], 50),
                "p99_ms": percentile([s.latency_ms for s in group], 99),
                "accuracy": sum(s.correct for s in group) / len(group),
                "paths": {r.path: round(r.share, 3) for r in rows},
            }
        )
    return out


# -- the whole run ----------------------------------------------------------------------------


@dataclass
class DemoResult:
    state: DemoState
    profile: str
    models_cached: bool
    catalog_where: str
    servable: list[str]
    png: Path | None
    summary: list[dict[str, Any]]
    switches: list[tuple[float, str]]
    total_s: float
    runs_on: str = ""
    pods: dict[str, int] = field(default_factory=dict)


@dataclass
class Served:
    """What the demo talks to once braid serves: where the gateway and Prometheus answer, the
    paths it can route, and how it was deployed."""

    gateway_url: str
    gateway_grpc: str
    prometheus_url: str
    local_selector: str
    """PromQL label selector of the local provider's Triton series (the live view's load)."""
    servable: list[str]
    catalog_where: str
    helm_test: HelmTestResult
    runs_on: str
    pods: dict[str, int] = field(default_factory=dict)


def _serve_with_processes(
    stack: contextlib.ExitStack,
    state: DemoState,
    progress: Progress,
    access: cluster.ClusterAccess,
    settings: Settings,
    reused: bool,
    repository: Path,
    catalog: PathCatalog,
    workdir: Path,
) -> Served:
    """kwok nodes only: the chart's Pods run nothing, so the operator, controller, gateway and
    Prometheus run here as processes (as the chart's ServiceAccounts) and the kwok runtime
    starts a tritonserver per Triton pod."""
    with _stage(state, "helm install", progress):
        wait_for_terminating_namespaces(access)
        release = install_release(
            settings.bin_dir,
            access,
            catalog,
            LOCAL_NAMESPACE,
            POLICY_NAME,
            watched=[LOCAL_NAMESPACE, HOST_NAMESPACE],
        )
        if reused:
            stack.callback(uninstall_release, settings.bin_dir, access, release)
    with _stage(state, "operator", progress):
        operator = start_operator(
            access,
            workdir / "operator",
            namespaces=[LOCAL_NAMESPACE, HOST_NAMESPACE],
            account=(release.namespace, release.account("operator")),
        )
        stack.callback(operator.stop)
    with _stage(state, "samples", progress):
        where = install_samples(access, repository, catalog)
    # The admin kubeconfig of this cluster (the operator has its own, least-privileged).
    kube = Kube.from_kubeconfig(access.kubeconfig)
    runtime = KwokTritonRuntime(kube, repository, workdir / "runtime")
    runtime_stop = threading.Event()
    runtime_thread = threading.Thread(target=runtime.run, args=(runtime_stop,), daemon=True)
    runtime_thread.start()

    def stop_runtime() -> None:
        runtime_stop.set()
        runtime_thread.join(timeout=120)

    stack.callback(stop_runtime)
    with _stage(state, "triton", progress):
        cm, servable = wait_for_kwok_routing(kube, catalog, runtime, timeout=300)
    with _stage(state, "gateway", progress):
        endpoints = workdir / "endpoints.json"
        endpoints.write_text(cm["data"][ENDPOINTS_FILE])
        routing = workdir / "routing.json"
        routing.write_text(cm["data"]["routing.json"])
        sync_stop = threading.Event()
        sync = threading.Thread(target=sync_routing, args=(kube, routing, sync_stop), daemon=True)
        sync.start()
        stack.callback(sync_stop.set)
        gateway, gateway_url, gateway_grpc = start_gateway(
            workdir, repository / "catalog.json", endpoints, routing
        )
        stack.callback(gateway.stop)
        # The labels the chart's PodMonitor relabels from pod labels, so the controller
        # runs the same queries here as in a cluster.
        model_of = {
            LOCAL_NAMESPACE: catalog.local_model,
            HOST_NAMESPACE: next(m.name for m in catalog.models if m.role == "host"),
        }
        targets = [
            ScrapeTarget(
                server.metrics_address,
                "triton",
                {"namespace": ns, "braid_block": block, "braid_model": model_of[ns]},
            )
            for (ns, block), (_, server) in runtime.servers.items()
        ]
        targets.append(ScrapeTarget(gateway_url.removeprefix("http://"), "gateway"))
        prometheus: PrometheusServer = start_prometheus(
            targets, workdir=workdir / "prometheus", scrape_interval="1s"
        )
        stack.callback(prometheus.stop)
    with _stage(state, "helm test", progress):
        helm_test = run_helm_test(
            settings.bin_dir,
            access,
            release,
            gateway_url,
            CHART_GATEWAY_HTTP_PORT,
            workdir / "test-pods",
        )
    controller_process = start_controller(
        workdir,
        prometheus.url,
        repository / "catalog.json",
        account_kubeconfig(access, release, "controller", workdir / "accounts"),
    )
    stack.callback(controller_process.stop)
    return Served(
        gateway_url=gateway_url,
        gateway_grpc=gateway_grpc,
        prometheus_url=prometheus.url,
        local_selector='tier="local"',
        servable=servable,
        catalog_where=where,
        helm_test=helm_test,
        runs_on="kwok nodes; braid's components and tritonservers as processes here",
        pods={"triton_pods_kwok_played": len(runtime.servers)},
    )


def _serve_on_real_nodes(
    stack: contextlib.ExitStack,
    state: DemoState,
    progress: Progress,
    access: cluster.ClusterAccess,
    settings: Settings,
    repository: Path,
    catalog: PathCatalog,
    workdir: Path,
    namespaces: tuple[str, str],
) -> Served:
    """Real nodes: braid through its chart, every component and Triton pod in a container."""
    local_ns = namespaces[0]
    with _stage(state, "real deploy", progress):
        wait_for_terminating_namespaces(access, namespaces)
        real = deploy_on_real_nodes(
            stack, access, settings, repository, catalog, workdir, namespaces
        )
    state.stages.update({f"real deploy: {k}": v for k, v in real.stages.items()})
    return Served(
        gateway_url=real.gateway_url,
        gateway_grpc=real.gateway_grpc,
        prometheus_url=real.prometheus_url,
        local_selector=f'namespace="{local_ns}"',
        servable=real.servable,
        catalog_where=f"ConfigMap {CATALOG_CONFIGMAP}",
        helm_test=real.helm_test,
        runs_on="real nodes: the chart's pods and every Triton pod in containers",
        pods=real.in_containers,
    )


def run_demo(
    options: DemoOptions,
    settings: Settings,
    progress: Progress,
    live: Callable[[DemoState, Callable[[], None]], None],
    wait_forever: Callable[[dict[str, str]], None] | None = None,
) -> DemoResult:
    """Run every step; ``live(state, traffic)`` runs ``traffic`` while showing the state.

    On a cluster with real nodes braid runs through its chart in containers; on kwok nodes
    only, its components run here as processes. Everything started here is stopped on the way
    out, also on Ctrl-C, SIGTERM, SIGHUP and errors; a cluster that was already running is
    left running (only the demo's namespaces are deleted).
    """
    state = DemoState()
    workdir = options.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    # shielded_teardown exits first: the stack's callbacks run shielded from stop signals.
    with contextlib.ExitStack() as stack, shielded_teardown():
        with _stage(state, "models", progress):
            repository, catalog, cached = build_models(options)
        with _stage(state, "cluster", progress):
            up = cluster.up(settings)
            access = cluster.access(settings)
        if up.already_running:
            stack.callback(_delete_namespaces, access, options.namespaces)
        else:
            stack.callback(cluster.down, settings)
        if has_real_nodes(access):
            served = _serve_on_real_nodes(
                stack, state, progress, access, settings, repository, catalog, workdir,
                options.namespaces,
            )  # fmt: skip
        elif options.namespaces != (LOCAL_NAMESPACE, HOST_NAMESPACE):
            raise ValueError(
                f"namespaces {options.namespaces}: a kwok-only demo serves the samples'"
                f" {LOCAL_NAMESPACE} and {HOST_NAMESPACE} only"
            )
        else:
            served = _serve_with_processes(
                stack, state, progress, access, settings, up.already_running, repository,
                catalog, workdir,
            )  # fmt: skip
        state.helm_test = served.helm_test
        phase_s = options.duration_s / 3
        promql = PrometheusClient(served.prometheus_url)
        stack.callback(promql.close)
        kube = Kube.from_kubeconfig(access.kubeconfig)
        loop = PolicyObserver(
            kube, promql, catalog, state, served.local_selector, options.namespaces[0]
        )
        controller_stop = threading.Event()
        controller_thread = threading.Thread(target=loop.run, args=(controller_stop,), daemon=True)
        controller_thread.start()
        stack.callback(controller_stop.set)
        generator = LoadGenerator(served.gateway_grpc, catalog.local_model, state)
        state.stages["ready_total"] = round(time.monotonic() - t0, 1)

        def traffic() -> None:
            with state.lock:
                state.started = time.monotonic()
                state.decisions.clear()
            generator.phase("light", phase_s, 1, options.light_rps)
            generator.phase("heavy", phase_s, options.heavy_workers, None)
            generator.phase("light again", phase_s, 1, options.light_rps)
            state.phase = "done"
            controller_stop.set()

        progress("traffic")
        live(state, traffic)
        png = plot_timeline(state, options.png)
        switches: list[tuple[float, str]] = []
        for d in state.decisions:
            if not switches or switches[-1][1] != d.path:
                switches.append((round(d.t, 1), d.path))
        result = DemoResult(
            state=state,
            profile="full" if options.full else "quick",
            models_cached=cached,
            catalog_where=served.catalog_where,
            servable=served.servable,
            png=png,
            summary=summary_rows(state),
            switches=switches,
            total_s=round(time.monotonic() - t0, 1),
            runs_on=served.runs_on,
            pods=served.pods,
        )
        (workdir / "summary.json").write_text(
            json.dumps(
                {
                    "profile": result.profile,
                    "runs_on": served.runs_on,
                    "pods": served.pods,
                    "stages_s": state.stages,
                    "phases": result.summary,
                    "switches": switches,
                    "returned_to_original": bool(switches)
                    and switches[-1][1] == catalog.original_path,
                    "errors": state.errors,
                    "servable_paths": served.servable,
                    "helm_test": {
                        "passed": served.helm_test.passed,
                        "exit_codes": served.helm_test.exit_codes,
                    },
                },
                indent=2,
                default=str,
            )
        )
        if options.keep and wait_forever is not None:
            wait_forever(
                {
                    "gateway REST": served.gateway_url,
                    "gateway gRPC": served.gateway_grpc,
                    "Prometheus": served.prometheus_url,
                    "KUBECONFIG": str(access.kubeconfig),
                }
            )
        progress("teardown")
    result.total_s = round(time.monotonic() - t0, 1)
    return result


def _delete_namespaces(access: cluster.ClusterAccess, namespaces: tuple[str, str]) -> None:
    access.kubectl("delete", "namespace", *namespaces, "--wait=false", "--ignore-not-found")
