"""braid through its chart onto the real node: the operator, controller and gateway run as the
chart's pods in containers from braid's own images, the local Block's Triton pod fetches its
repository from an S3 store in an init container and serves it from the runtime image behind
real probes, ``helm test``'s Pod runs as a pod, and an inference goes through the gateway.
The GPU pools have no real node here, so their Blocks stay kwok-played (a tritonserver per
pod on this machine, listening on the node's bridge so the gateway pod reaches it)."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from braid.render.routing import ENDPOINTS_FILE, routing_configmap_name
from braid_dev import real_deploy
from braid_dev.demo.manifests import POLICY_NAME
from braid_dev.stack import cluster as devcluster
from braid_dev.stack import node_render as nr
from braid_dev.stack import nodes
from braid_dev.stack import prometheus_sd as sd
from braid_dev.stack.artifact_servers import S3Store
from braid_dev.stack.images import REGISTRY
from tests.e2e.conftest import E2ECluster
from tests.e2e.helpers import wait_for

pytestmark = pytest.mark.e2e

REAL_TIERS = {nodes.REAL_TIER}
RELEASE = real_deploy.RELEASE
CHART_COMPONENTS = real_deploy.CHART_COMPONENTS
HOST_BLOCK = real_deploy.HOST_BLOCK
# isolated-*: the session's process-run operator leaves these to the chart's.
LOCAL_NAMESPACE, HOST_NAMESPACE = NAMESPACES = ("isolated-real-a", "isolated-real-b")
RealRelease = real_deploy.RealRelease


@pytest.fixture(scope="module")
def prometheus(
    cluster: E2ECluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[sd.SdPrometheus]:
    """A stock Prometheus with Kubernetes service discovery and the chart's relabeling, on
    the real node's bridge so the chart's controller pod can query it."""
    try:
        server = sd.start_sd_prometheus(
            cluster.settings.bin_dir / "prometheus-sd",
            cluster.access.kubeconfig,
            [LOCAL_NAMESPACE, HOST_NAMESPACE],
            tmp_path_factory.mktemp("prometheus"),
            host=real_deploy.node_ip(cluster.access),
            wait_for_target=False,
        )
    except FileNotFoundError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def release(
    crds: E2ECluster,
    store: S3Store,
    prometheus: sd.SdPrometheus,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RealRelease]:
    from braid.tooling.pipeline import run_pipeline

    repository = tmp_path_factory.mktemp("build") / "model-repo"
    run_pipeline("quick", repository)
    try:
        with real_deploy.deployed(
            crds.access,
            crds.settings,
            Path(__file__).resolve().parents[2],
            tmp_path_factory.mktemp("real"),
            store,
            repository,
            # The controller reads the Prometheus above; rate windows of 4 of its scrapes.
            extra_values=[
                f"controller.prometheusUrl={prometheus.url}",
                "serviceMonitor.interval=1s",
                # Every event in the gateway's log, which a failure here quotes.
                "gateway.verbose=true",
            ],
            namespaces=NAMESPACES,
        ) as installed:
            yield installed
    except real_deploy.DeployError as exc:
        pytest.fail(str(exc), pytrace=False)


def test_chart_pods_run_in_containers_on_the_real_node(release: RealRelease) -> None:
    node = nr.real_node_name(nodes.REAL_TIER, 0)
    for component in CHART_COMPONENTS:
        (pod,) = release.chart_pods(component)
        assert real_deploy.pod_ready(pod), (component, pod["status"])
        assert real_deploy.runs_in_container(pod, node), (component, pod["status"])
        image = pod["status"]["containerStatuses"][0]["image"]
        assert image == release.images.reference(component)


def test_the_local_block_fetches_and_serves_in_a_container(
    release: RealRelease, cluster: E2ECluster
) -> None:
    node = nr.real_node_name(nodes.REAL_TIER, 0)

    def ready_pods() -> list[dict[str, Any]] | None:
        pods = release.pods(LOCAL_NAMESPACE, "braid.dev/block=fmnist-head")
        return pods if pods and all(real_deploy.pod_ready(p) for p in pods) else None

    (pod,) = wait_for(ready_pods, "the local Block's Triton pod Ready", timeout=300)
    assert real_deploy.runs_in_container(pod, node)
    assert pod["status"]["containerStatuses"][0]["image"] == release.images.reference(
        "triton-runtime"
    )
    (fetch,) = pod["status"]["initContainerStatuses"]
    assert fetch["state"]["terminated"]["exitCode"] == 0
    block = cluster.kubectl_json("get", "block", "fmnist-head", "-n", LOCAL_NAMESPACE)
    conditions = {c["type"]: c for c in block["status"]["conditions"]}
    assert conditions["Ready"]["status"] == "True", conditions

    # Every Block runs in a container: kwok plays no Triton pod of this release.
    def all_in_containers() -> list[dict[str, Any]] | None:
        pods = [p for ns in NAMESPACES for p in release.pods(ns, "braid.dev/block")]
        return (
            pods
            if all(
                real_deploy.runs_in_container(p, node) and real_deploy.pod_ready(p) for p in pods
            )
            else None
        )

    pods = wait_for(all_in_containers, "every Triton pod Ready in a container", timeout=300)
    assert {p["metadata"]["labels"]["braid.dev/block"] for p in pods} == {
        "fmnist-head",
        *real_deploy.MOVED_BLOCKS,
    }


def test_an_inference_goes_through_the_gateway_pod(release: RealRelease) -> None:
    (pod,) = release.chart_pods("gateway")
    first = release.catalog.path(release.catalog.original_path).hops[0].input
    shape = [1, *first.shape]
    count = 1
    for d in shape:
        count *= d
    body = {"inputs": [{"name": first.name, "datatype": first.datatype, "shape": shape,
                        "data": [0.0] * count}]}  # fmt: skip
    url = f"http://{pod['status']['podIP']}:8000/v2/models/{release.catalog.local_model}/infer"

    def answered() -> dict[str, Any] | None:
        try:
            response = httpx.post(url, json=body, timeout=10)
        except httpx.HTTPError:
            return None
        return response.json() if response.status_code == 200 else None

    answer = wait_for(answered, "an inference through the gateway pod", timeout=180)
    (output,) = answer["outputs"]
    assert output["shape"][0] == 1
    assert len(output["data"]) == 10


def test_helm_test_runs_its_pod_on_the_real_node(release: RealRelease) -> None:
    done = release.helm("test", RELEASE, "--namespace", LOCAL_NAMESPACE, "--timeout=3m")
    suites = dict(re.findall(r"TEST SUITE:\s+(\S+)(?:.|\n)*?Phase:\s+(\w+)", done.stdout))
    assert suites[f"{RELEASE}-test-inference"] == "Succeeded", done.stdout


def _pinned_request(release: RealRelease, path: str) -> tuple[str, dict[str, Any]]:
    first = release.catalog.path(release.catalog.original_path).hops[0].input
    shape = [1, *first.shape]
    count = 1
    for d in shape:
        count *= d
    body = {
        "inputs": [
            {"name": first.name, "datatype": first.datatype, "shape": shape, "data": [0.0] * count}
        ],
        "parameters": {"braid_path": path},
    }
    (gateway,) = release.chart_pods("gateway")
    url = f"http://{gateway['status']['podIP']}:8000/v2/models/{release.catalog.local_model}/infer"
    return url, body


def _host_pod(release: RealRelease) -> dict[str, Any]:
    (pod,) = release.pods(HOST_NAMESPACE, f"braid.dev/block={HOST_BLOCK}")
    return pod


def _what_happened(
    release: RealRelease, cluster: E2ECluster, answers: list[tuple[int, str, str]]
) -> str:
    """Why the cross path was not served: the answers by (status, path, fallback reason),
    the host pod's state, and the gateway's last log lines."""
    (gateway,) = release.chart_pods("gateway")
    logs = cluster.kubectl(
        "logs", gateway["metadata"]["name"], "-n", LOCAL_NAMESPACE, "--tail=60", check=False
    )
    host = _host_pod(release)
    # More than one ReplicaSet: the host's pod was replaced after the gateway first resolved it.
    replica_sets = cluster.kubectl(
        "get", "rs", "-n", HOST_NAMESPACE, "-l", f"braid.dev/block={HOST_BLOCK}", "-o", "name",
        check=False,
    )  # fmt: skip
    return (
        f"answers: {Counter(answers).most_common()}\n"
        f"host pod {host['metadata']['name']} ({host['metadata']['creationTimestamp']}): "
        f"{host['status'].get('podIP')} {host['status'].get('conditions')}\n"
        f"host ReplicaSets: {replica_sets.split()}\n"
        f"gateway pod {gateway['metadata']['name']} ({gateway['metadata']['creationTimestamp']})"
        f" log:\n{logs}"
    )


def test_a_crashed_host_triton_restarts_while_the_gateway_falls_back(
    release: RealRelease, cluster: E2ECluster
) -> None:
    """SIGKILL the host's tritonserver in its container: the kubelet restarts it, requests
    pinned to a cross path through it fall back to the local original path meanwhile, and
    none is lost; once it is back they cross again."""
    cross = next(p.id for p in release.catalog.paths if p.kind.startswith("cross"))
    url, body = _pinned_request(release, cross)
    pod = wait_for(
        lambda: p if real_deploy.pod_ready(p := _host_pod(release)) else None,  # type: ignore[misc]
        "the host Block's Triton pod Ready on the real node",
        timeout=300,
    )
    assert real_deploy.runs_in_container(pod, nr.real_node_name(nodes.REAL_TIER, 0))
    restarts = pod["status"]["containerStatuses"][0]["restartCount"]
    container = pod["status"]["containerStatuses"][0]["containerID"].removeprefix("containerd://")
    answers: list[tuple[int, str, str]] = []
    stop = threading.Event()

    def send() -> None:
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                try:
                    r = client.post(url, json=body)
                    answers.append(
                        (
                            r.status_code,
                            r.headers.get("braid-path", ""),
                            r.headers.get("braid-fallback", ""),
                        )
                    )
                except httpx.HTTPError as exc:
                    answers.append((0, "", type(exc).__name__))
                stop.wait(0.05)

    def served_by_cross(since: int, what: str, timeout: float) -> None:
        try:
            wait_for(
                lambda: any(a[1] == cross and not a[2] for a in answers[since:]), what, timeout
            )
        except pytest.fail.Exception as exc:
            pytest.fail(f"{exc}\n{_what_happened(release, cluster, answers[since:])}")

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        served_by_cross(0, "a request served by the cross path", 120)
        before = len(answers)
        tools = nodes.find_tools(cluster.settings.bin_dir)
        (layout,) = nodes.node_layouts(devcluster.layout_for(cluster.settings).root)
        subprocess.run(
            nr.ctr_argv(tools.ctr, layout, "task", "kill", "--signal", "SIGKILL", container),
            check=True,
            capture_output=True,
            timeout=30,
        )

        def restarted() -> bool:
            p = _host_pod(release)
            return p["status"]["containerStatuses"][0][
                "restartCount"
            ] > restarts and real_deploy.pod_ready(p)

        wait_for(restarted, "the kubelet to restart the host's Triton container", timeout=300)
        after_restart = len(answers)
        served_by_cross(after_restart, "the cross path serving again after the restart", 180)
    finally:
        stop.set()
        sender.join(timeout=60)
    during = answers[before:after_restart]
    assert all(status == 200 for status, _, _ in answers), [a for a in answers if a[0] != 200]
    assert any(fallback for _, _, fallback in during), "no request fell back while it was down"
    assert {path for _, path, fallback in during if fallback} == {release.catalog.original_path}


def _set_host_replicas(cluster: E2ECluster, replicas: int) -> None:
    cluster.kubectl(
        "patch", "block", HOST_BLOCK, "-n", HOST_NAMESPACE, "--type=merge",
        "-p", json.dumps({"spec": {"replicas": replicas}}),
    )  # fmt: skip


def test_a_gateway_started_before_its_host_was_ready_crosses_once_it_is(
    release: RealRelease, cluster: E2ECluster
) -> None:
    """The operator publishes a Block's address only while it has a ready pod. A gateway
    (re)started while the host has none starts without the cross paths, and must take them
    up when the host is published, without a restart."""
    cross = next(p.id for p in release.catalog.paths if p.kind.startswith("cross"))
    (old,) = release.chart_pods("gateway")

    def host_published() -> bool:
        configmap = cluster.kubectl_json(
            "get", "configmap", routing_configmap_name(POLICY_NAME), "-n", LOCAL_NAMESPACE
        )
        return HOST_NAMESPACE in configmap["data"][ENDPOINTS_FILE]

    _set_host_replicas(cluster, 0)
    try:
        wait_for(lambda: not host_published(), "the host dropped from endpoints.json", 120)
        cluster.kubectl(
            "delete", "pod", old["metadata"]["name"], "-n", LOCAL_NAMESPACE, "--wait=true",
            timeout=120,
        )  # fmt: skip

        def new_gateway() -> dict[str, Any] | None:
            pods = release.chart_pods("gateway")
            fresh = [p for p in pods if p["metadata"]["name"] != old["metadata"]["name"]]
            return (
                fresh[0] if len(pods) == 1 and fresh and real_deploy.pod_ready(fresh[0]) else None
            )

        gateway = wait_for(new_gateway, "a new gateway pod Ready", timeout=180)
        log = cluster.kubectl("logs", gateway["metadata"]["name"], "-n", LOCAL_NAMESPACE)
        started = re.search(r"executor.started .*skipped=(\d+)", log)
        assert started, log
        assert int(started.group(1)) > 0, log  # it started without the host's paths
    finally:
        _set_host_replicas(cluster, 1)
    url, body = _pinned_request(release, cross)

    def crossed() -> bool:
        try:
            r = httpx.post(url, json=body, timeout=10)
        except httpx.HTTPError:
            return False
        return (
            r.status_code == 200
            and r.headers.get("braid-path") == cross
            and not r.headers.get("braid-fallback")
        )

    wait_for(crossed, "a request served by the cross path on the new gateway", timeout=240)


def test_an_image_missing_on_the_node_makes_the_block_unready_with_the_reason(
    release: RealRelease, cluster: E2ECluster
) -> None:
    image = f"{REGISTRY}/braid-triton-runtime:missing-on-purpose"
    block = cluster.kubectl_json("get", "block", "fmnist-head", "-n", LOCAL_NAMESPACE)
    broken = {
        "apiVersion": block["apiVersion"],
        "kind": "Block",
        "metadata": {"name": "fmnist-head-noimage", "namespace": LOCAL_NAMESPACE},
        "spec": {**block["spec"], "triton": {**block["spec"].get("triton", {}), "image": image}},
    }
    real_deploy.apply_objects(cluster.access, [broken])
    try:

        def unready() -> dict[str, Any] | None:
            got = cluster.kubectl_json("get", "block", "fmnist-head-noimage", "-n", LOCAL_NAMESPACE)
            ready = {c["type"]: c for c in got.get("status", {}).get("conditions", [])}.get("Ready")
            return (
                ready if ready and ready["reason"] in ("ErrImagePull", "ImagePullBackOff") else None
            )

        ready = wait_for(unready, "the Block Ready=False naming the image", timeout=240)
        assert ready["status"] == "False"
        assert image in ready["message"]
        assert nr.real_node_name(nodes.REAL_TIER, 0) in ready["message"]
    finally:
        cluster.kubectl(
            "delete", "block", "fmnist-head-noimage", "-n", LOCAL_NAMESPACE, "--wait=true",
            check=False,
        )  # fmt: skip


def test_a_stock_prometheus_scrapes_the_triton_pods_by_their_pod_ips(
    release: RealRelease, prometheus: sd.SdPrometheus
) -> None:
    """Kubernetes service discovery and the chart's relabeling find the Triton pods that run
    in containers, scrape their pod IPs, and give them the labels the controller queries."""
    node = nr.real_node_name(nodes.REAL_TIER, 0)
    pods = {
        p["status"]["podIP"]: p
        for ns in (LOCAL_NAMESPACE, HOST_NAMESPACE)
        for p in release.pods(ns, "braid.dev/block")
        if real_deploy.runs_in_container(p, node) and real_deploy.pod_ready(p)
    }
    assert len(pods) == 3
    wanted = {f"http://{ip}:8002/metrics" for ip in pods}

    def scraped() -> dict[str, dict[str, Any]] | None:
        up = {t["scrapeUrl"]: t for t in prometheus.up_targets()}
        return up if wanted <= set(up) else None

    found = wait_for(scraped, "the Triton pods scraped by their pod IPs", timeout=60)
    for ip, pod in pods.items():
        target = found[f"http://{ip}:8002/metrics"]
        labels = pod["metadata"]["labels"]
        assert target["labels"]["braid_block"] == labels["braid.dev/block"]
        assert target["labels"]["namespace"] == pod["metadata"]["namespace"]


def test_the_controller_pod_chooses_paths_from_those_metrics(
    release: RealRelease, cluster: E2ECluster
) -> None:
    """With traffic on the original path, the chart's controller (in its pod, reading that
    Prometheus through the chart's relabeling) prices the paths and records its choice."""
    url, body = _pinned_request(release, release.catalog.original_path)
    stop = threading.Event()

    def send() -> None:
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                with contextlib.suppress(httpx.HTTPError):
                    client.post(url, json=body)
                stop.wait(0.05)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:

        def chosen() -> dict[str, Any] | None:
            policy = cluster.kubectl_json(
                "get", "offloadpolicy", POLICY_NAME, "-n", LOCAL_NAMESPACE
            )
            conditions = {c["type"]: c for c in policy.get("status", {}).get("conditions", [])}
            paths = conditions.get("PathsChosen")
            return policy if paths and paths["status"] == "True" else None

        policy = wait_for(chosen, "the controller's PathsChosen=True", timeout=180)
    finally:
        stop.set()
        sender.join(timeout=60)
    status = policy["status"]
    assert status["activePath"] in {p.id for p in release.catalog.paths}
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["PathsChosen"]["reason"] not in ("MetricsUnavailable", "LocalTierUnmeasured")
