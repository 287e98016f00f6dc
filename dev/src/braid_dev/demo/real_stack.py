"""The demo's stack on real nodes: braid through its chart, every pod in a container.

When the local cluster has real nodes (the default: ``BRAID_CLUSTER_REAL_NODES=1``), the demo
deploys as a platform engineer would (``braid_dev.real_deploy``): braid's images imported
into the node, ``helm install`` of ``charts/braid`` whose operator, controller and gateway run
as pods, the model repository fetched by every Triton pod's init container from an S3 store,
a stock Prometheus that finds the Triton pods through Kubernetes service discovery and the
chart's relabeling, and ``helm test``'s Pod run as a pod. The demo then only sends traffic to
the gateway pod's address and reads the policy's status.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from braid.api.catalog import PathCatalog
from braid.kube.client import Kube, transient
from braid.render.routing import ENDPOINTS_FILE, routing_configmap_name
from braid.settings import Settings
from braid_dev import real_deploy
from braid_dev.demo.chart import HelmTestResult
from braid_dev.demo.manifests import HOST_NAMESPACE, LOCAL_NAMESPACE, POLICY_NAME
from braid_dev.stack import cluster
from braid_dev.stack import prometheus_sd as sd
from braid_dev.stack.artifact_servers import start_s3_store
from braid_dev.stack.operator_process import REPO_ROOT, install_crds

GATEWAY_HTTP_PORT = 8000
GATEWAY_GRPC_PORT = 8001
"""The chart's default ``gateway.httpPort`` / ``gateway.grpcPort``."""


@dataclass
class RealStack:
    """What the demo talks to once braid runs on the real nodes."""

    gateway_url: str
    gateway_grpc: str
    prometheus_url: str
    servable: list[str]
    helm_test: HelmTestResult
    stages: dict[str, float] = field(default_factory=dict)
    in_containers: dict[str, int] = field(default_factory=dict)


def has_real_nodes(access: cluster.ClusterAccess) -> bool:
    """Whether the cluster has a Ready real node (kubelet + containerd) to deploy onto."""
    with contextlib.suppress(cluster.ClusterError, StopIteration, KeyError):
        real_deploy.node_ip(access)
        return True
    return False


def servable_paths(
    catalog: PathCatalog, endpoints_json: str, reachable: Callable[[str], bool] = bool
) -> list[str]:
    """The catalog's paths whose every hop's address in the routing ConfigMap is
    ``reachable`` (pure; by default: has one)."""
    models = json.loads(endpoints_json)["models"]
    return [
        p.id
        for p in catalog.paths
        if all(reachable(str(models.get(h.triton_model) or "")) for h in p.hops)
    ]


def wait_for_routing(
    kube: Kube,
    catalog: PathCatalog,
    namespace: str,
    timeout: float,
    reachable: Callable[[str], bool] = bool,
    check: Callable[[], None] = lambda: None,
) -> tuple[dict[str, Any], list[str]]:
    """The routing ConfigMap and its servable paths, once the operator routes every candidate
    path of the policy to ``reachable`` addresses; ``check`` raises what makes waiting moot."""
    deadline = time.monotonic() + timeout
    last = "no routing ConfigMap yet"
    while time.monotonic() < deadline:
        check()
        try:
            cm = kube.get("v1", "ConfigMap", routing_configmap_name(POLICY_NAME), namespace)
            policy = kube.get("braid.dev/v1alpha1", "OffloadPolicy", POLICY_NAME, namespace)
        except Exception as exc:
            if not transient(exc):
                raise
            # A CI run met a 504 here while a dozen tritonservers started on 2 cores.
            last = f"the API server answered {getattr(exc, 'status', exc)}; asking again"
            time.sleep(1.0)
            continue
        if cm is not None and policy is not None:
            servable = servable_paths(catalog, cm["data"][ENDPOINTS_FILE], reachable)
            count = int((policy.get("status") or {}).get("candidatePaths") or 0)
            if servable and len(servable) >= count:
                return cm, servable
            last = f"{len(servable)}/{count} candidate paths served on every hop"
        time.sleep(1.0)
    raise TimeoutError(f"routing not ready after {timeout:.0f} s: {last}")


def helm_test_in_a_pod(release: real_deploy.RealRelease) -> HelmTestResult:
    """``helm test``: the chart's test Pod runs on the real node. Its containers' exit codes
    are read while it exists (helm deletes a pod that succeeded)."""
    codes: dict[str, int] = {}
    stop = threading.Event()
    name = f"{real_deploy.RELEASE}-test-inference"

    def watch() -> None:
        while not stop.is_set():
            got = release.access.kubectl(
                "get", "pod", name, "-n", release.local_namespace, "-o", "json", check=False
            )
            if got.returncode == 0:
                pod = json.loads(got.stdout)
                for status in pod.get("status", {}).get("containerStatuses") or []:
                    done = status.get("state", {}).get("terminated")
                    if done is not None:
                        codes[status["name"]] = done["exitCode"]
            stop.wait(0.3)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        done = release.helm(
            "test", real_deploy.RELEASE, "--namespace", release.local_namespace, "--timeout=3m",
            check=False,
        )  # fmt: skip
    finally:
        stop.set()
        watcher.join(timeout=30)
    phases = dict(re.findall(r"TEST SUITE:\s+(\S+)(?:.|\n)*?Phase:\s+(\w+)", done.stdout))
    passed = done.returncode == 0 and bool(phases) and set(phases.values()) == {"Succeeded"}
    return HelmTestResult(passed, done.stdout + done.stderr, list(codes.values()))


def count_in_containers(release: real_deploy.RealRelease) -> dict[str, int]:
    """Triton pods and chart pods of the release that run under containerd, and Triton pods
    kwok plays (a pool with no real node)."""
    triton = [p for ns in release.namespaces for p in release.pods(ns, "braid.dev/block")]
    chart = [p for c in real_deploy.CHART_COMPONENTS for p in release.chart_pods(c)]
    return {
        "triton_pods_in_containers": sum(real_deploy.runs_in_container(p) for p in triton),
        "triton_pods_kwok_played": sum(not real_deploy.runs_in_container(p) for p in triton),
        "chart_pods_in_containers": sum(real_deploy.runs_in_container(p) for p in chart),
    }


def deploy_on_real_nodes(
    stack: contextlib.ExitStack,
    access: cluster.ClusterAccess,
    settings: Settings,
    repository: Path,
    catalog: PathCatalog,
    workdir: Path,
    namespaces: tuple[str, str] = (LOCAL_NAMESPACE, HOST_NAMESPACE),
) -> RealStack:
    """braid on the real nodes for the demo, in ``namespaces`` (the local provider's, the
    host's); ``stack`` tears it all down again."""
    host = real_deploy.node_ip(access)
    store = start_s3_store(workdir / "store", workdir / "versitygw", settings.bin_dir, host=host)
    stack.callback(store.stop)
    prometheus = sd.start_sd_prometheus(
        settings.bin_dir / "prometheus-sd",
        access.kubeconfig,
        list(namespaces),
        workdir / "prometheus",
        host=host,
        wait_for_target=False,
    )
    stack.callback(prometheus.stop)
    install_crds(access)
    # Every server of the demo shares this machine's cores.
    cpus = os.cpu_count() or 1
    release = stack.enter_context(
        real_deploy.deployed(
            access,
            settings,
            REPO_ROOT,
            workdir / "real",
            store,
            repository,
            extra_values=[
                f"controller.prometheusUrl={prometheus.url}",
                # The controller's rate windows follow the scrape interval (4 scrapes).
                "serviceMonitor.interval=1s",
                f"controller.capacity={{local={cpus},host={cpus}}}",
            ],
            namespaces=namespaces,
        )
    )
    kube = Kube.from_kubeconfig(access.kubeconfig)
    _, servable = wait_for_routing(kube, catalog, namespaces[0], timeout=300)
    (gateway,) = release.chart_pods("gateway")
    ip = gateway["status"]["podIP"]
    url = f"http://{ip}:{GATEWAY_HTTP_PORT}"
    # The host reaches pod IPs through the node's bridge, as a node-local client would.
    ready = httpx.get(f"{url}/v2/health/ready", timeout=10)
    if ready.status_code != 200:
        raise real_deploy.DeployError(f"the gateway pod {ip} is not ready: {ready.text}")
    return RealStack(
        gateway_url=url,
        gateway_grpc=f"{ip}:{GATEWAY_GRPC_PORT}",
        prometheus_url=prometheus.url,
        servable=servable,
        helm_test=helm_test_in_a_pod(release),
        stages=dict(release.stage_seconds),
        in_containers=count_in_containers(release),
    )
