"""braid through its chart onto the real node: the operator, controller and gateway run as the
chart's pods in containers from braid's own images, the local Block's Triton pod fetches its
repository from an S3 store in an init container and serves it from the runtime image behind
real probes, ``helm test``'s Pod runs as a pod, and an inference goes through the gateway.
The GPU pools have no real node here, so their Blocks stay kwok-played (a tritonserver per
pod on this machine, listening on the node's bridge so the gateway pod reaches it)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from braid.api.catalog import PathCatalog
from braid.kube.client import Kube
from braid.render.block import TIER_LABEL
from braid_dev import real_deploy
from braid_dev.demo.chart import CHART
from braid_dev.demo.manifests import (
    CATALOG_CONFIGMAP,
    HOST_NAMESPACE,
    LOCAL_NAMESPACE,
    POLICY_NAME,
    demo_manifests,
)
from braid_dev.demo.story import load_samples, wait_for_terminating_namespaces
from braid_dev.kwok_runtime import KwokTritonRuntime
from braid_dev.stack import cluster as devcluster
from braid_dev.stack import node_render as nr
from braid_dev.stack import nodes
from braid_dev.stack.artifact_servers import S3Store, start_s3_store
from braid_dev.stack.images import REGISTRY
from tests.e2e.conftest import E2ECluster
from tests.e2e.helpers import wait_for

pytestmark = pytest.mark.e2e

RELEASE = "braid-real"
"""Not "braid": the session's process-run operator holds cluster objects named braid-operator."""
CHART_COMPONENTS = ("operator", "controller", "gateway")
REAL_TIERS = {nodes.REAL_TIER}
HOST_BLOCK = "mnist-body"


@dataclass
class RealRelease:
    cluster: E2ECluster
    catalog: PathCatalog
    images: real_deploy.NodeImages
    runtime: KwokTritonRuntime

    def pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        listed = self.cluster.kubectl_json("get", "pods", "-n", namespace, "-l", selector)
        items: list[dict[str, Any]] = listed["items"]
        return items

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [str(self.cluster.settings.bin_dir / "helm"), *args]
        argv.append(f"--kubeconfig={self.cluster.access.kubeconfig}")
        done = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
        if check and done.returncode != 0:
            pytest.fail(f"helm {args[0]} failed: {done.stderr or done.stdout}", pytrace=False)
        return done


def _ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def _node_ip(cluster: E2ECluster) -> str:
    node = cluster.kubectl_json("get", "node", nr.real_node_name(nodes.REAL_TIER, 0))
    return next(a["address"] for a in node["status"]["addresses"] if a["type"] == "InternalIP")


def _store_repository(repository: Path, root: Path) -> tuple[list[str], str]:
    """The repository as objects (Links name theirs) and as one archive (what pods fetch)."""
    bucket = root / real_deploy.REPOSITORY_BUCKET
    models = sorted(p.name for p in repository.iterdir() if (p / "config.pbtxt").exists())
    for model in models:
        shutil.copytree(repository / model, bucket / model, dirs_exist_ok=True)
    sha = real_deploy.write_repository_archive(
        repository, models, bucket / real_deploy.REPOSITORY_OBJECT
    )
    return models, sha


def _link_artifacts_in_store(objs: list[dict[str, Any]], repository: Path) -> None:
    """Links name their artifact in the store (the chart's operator refuses file://)."""
    for obj in objs:
        if obj["kind"] == "Link":
            name = obj["metadata"]["name"]
            (artifact,) = (p for p in (repository / name / "1").iterdir() if p.name != "model.py")
            obj["spec"]["artifact"]["uri"] = (
                f"s3://{real_deploy.REPOSITORY_BUCKET}/{name}/1/{artifact.name}"
            )


def _apply(cluster: E2ECluster, objs: list[dict[str, Any]]) -> None:
    cluster.kubectl(
        "apply",
        "--server-side",
        "-f",
        "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objs}),
    )


def _applied(cluster: E2ECluster, objs: list[dict[str, Any]]) -> bool:
    """Applied, or False while the webhook cannot be called yet (any other error raises)."""
    try:
        _apply(cluster, objs)
    except devcluster.ClusterError as exc:
        if "failed calling webhook" in str(exc):
            return False
        raise
    return True


@pytest.fixture(scope="module")
def store(cluster: E2ECluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Store]:
    root = tmp_path_factory.mktemp("store")
    s3 = start_s3_store(
        root, tmp_path_factory.mktemp("versitygw"), cluster.settings.bin_dir, host=_node_ip(cluster)
    )
    try:
        yield s3
    finally:
        s3.stop()


@pytest.fixture(scope="module")
def release(
    crds: E2ECluster, store: S3Store, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RealRelease]:
    cluster = crds
    from braid.tooling.pipeline import run_pipeline

    settings = cluster.settings
    repository = tmp_path_factory.mktemp("build") / "model-repo"
    run_pipeline("quick", repository)
    catalog = PathCatalog.model_validate_json((repository / "catalog.json").read_text())
    node_images = real_deploy.import_node_images(
        settings.cache,
        settings.bin_dir,
        devcluster.layout_for(settings).root,
        Path(__file__).resolve().parents[2],
    )
    _, sha = _store_repository(repository, store.root)

    objs = demo_manifests(catalog, repository, load_samples())
    objs = real_deploy.place_on_real_pool(
        objs,
        REAL_TIERS,
        node_images.reference("triton-runtime"),
        {
            "uri": f"s3://{real_deploy.REPOSITORY_BUCKET}/{real_deploy.REPOSITORY_OBJECT}",
            "sha256": sha,
            "credentialsSecret": real_deploy.CREDENTIALS_SECRET,
        },
        # The host model's Block too: its crash is what the gateway must survive.
        moved={HOST_BLOCK: nodes.REAL_TIER},
    )
    _link_artifacts_in_store(objs, repository)
    namespaces = [o for o in objs if o["kind"] == "Namespace"]
    wait_for_terminating_namespaces(cluster.access)  # an earlier test's, going away
    _apply(cluster, namespaces)
    for ns in (LOCAL_NAMESPACE, HOST_NAMESPACE):
        _apply(cluster, [real_deploy.credentials_secret(ns, store.env())])
        wait_for(
            lambda n=ns: cluster.kubectl("get", "sa", "default", "-n", n, check=False),  # type: ignore[misc]
            f"the default ServiceAccount of {ns}",
            timeout=60,
        )
    cluster.kubectl(
        "create", "configmap", CATALOG_CONFIGMAP, "-n", LOCAL_NAMESPACE,
        f"--from-file=catalog.json={repository / 'catalog.json'}",
    )  # fmt: skip
    first = catalog.path(catalog.original_path).hops[0].input
    values = [
        "crds.enabled=false",  # the session's CRDs are kubectl's (the crds fixture)
        f"operator.namespaces={{{LOCAL_NAMESPACE},{HOST_NAMESPACE}}}",
        f"policy.name={POLICY_NAME}",
        f"test.model={catalog.local_model}",
        f"test.input.name={first.name}",
        f"test.input.datatype={first.datatype}",
        f"test.input.shape={{{','.join(str(d) for d in [1, *first.shape])}}}",
    ]
    kube = Kube.from_kubeconfig(cluster.access.kubeconfig)
    runtime = KwokTritonRuntime(
        kube,
        repository,
        tmp_path_factory.mktemp("kwok-runtime"),
        host=_node_ip(cluster),
        real_pools=frozenset(nr.real_pool(t) for t in REAL_TIERS),
    )
    stop = threading.Event()
    thread = threading.Thread(target=runtime.run, args=(stop,), daemon=True)
    thread.start()
    installed = RealRelease(cluster, catalog, node_images, runtime)
    try:
        installed.helm(
            "upgrade", "--install", RELEASE, str(CHART), "--namespace", LOCAL_NAMESPACE,
            *real_deploy.real_node_helm_args(node_images),
            *(a for v in values for a in ("--set", v)),
        )  # fmt: skip
        # The webhook admits braid objects only once the operator's pod answers it; the
        # gateway starts once the operator has written its policy's routing ConfigMap.
        rollout = ["rollout", "status", "-n", LOCAL_NAMESPACE, "--timeout=300s"]
        cluster.access.kubectl(*rollout, f"deployment/{RELEASE}-operator", timeout=330)
        # kube-proxy programs the webhook Service's rules a moment after the pod is Ready.
        wait_for(
            lambda: _applied(cluster, [o for o in objs if o["kind"] == "Model"]),
            "the operator's webhook to answer through its Service",
            timeout=120,
        )
        for kind in ("Link", "Block", "OffloadPolicy"):
            _apply(cluster, [o for o in objs if o["kind"] == kind])
        for component in CHART_COMPONENTS:
            cluster.access.kubectl(*rollout, f"deployment/{RELEASE}-{component}", timeout=330)
        yield installed
    finally:
        for ns in (LOCAL_NAMESPACE, HOST_NAMESPACE):
            cluster.kubectl(
                "delete", "offloadpolicies,blocks,links,models", "--all", "-n", ns,
                "--wait=true", "--timeout=120s", check=False,
            )  # fmt: skip
        installed.helm("uninstall", RELEASE, "--namespace", LOCAL_NAMESPACE, "--wait", check=False)
        stop.set()
        thread.join(timeout=120)
        for ns in (LOCAL_NAMESPACE, HOST_NAMESPACE):
            cluster.kubectl("delete", "namespace", ns, "--wait=true", "--timeout=180s", check=False)


def _running_in_container(pod: dict[str, Any], node: str) -> bool:
    statuses = pod.get("status", {}).get("containerStatuses") or []
    return (
        pod["spec"].get("nodeName") == node
        and bool(statuses)
        and all(s.get("containerID", "").startswith("containerd://") for s in statuses)
    )


def test_chart_pods_run_in_containers_on_the_real_node(release: RealRelease) -> None:
    node = nr.real_node_name(nodes.REAL_TIER, 0)
    for component in CHART_COMPONENTS:
        (pod,) = release.pods(
            LOCAL_NAMESPACE,
            f"app.kubernetes.io/name=braid-{component},app.kubernetes.io/instance={RELEASE}",
        )
        assert _ready(pod), (component, pod["status"])
        assert _running_in_container(pod, node), (component, pod["status"])
        image = pod["status"]["containerStatuses"][0]["image"]
        assert image == release.images.reference(component)


def test_the_local_block_fetches_and_serves_in_a_container(release: RealRelease) -> None:
    node = nr.real_node_name(nodes.REAL_TIER, 0)
    cluster = release.cluster

    def ready_pods() -> list[dict[str, Any]] | None:
        pods = release.pods(LOCAL_NAMESPACE, "braid.dev/block=fmnist-head")
        return pods if pods and all(_ready(p) for p in pods) else None

    (pod,) = wait_for(ready_pods, "the local Block's Triton pod Ready", timeout=300)
    assert _running_in_container(pod, node)
    assert pod["status"]["containerStatuses"][0]["image"] == release.images.reference(
        "triton-runtime"
    )
    (fetch,) = pod["status"]["initContainerStatuses"]
    assert fetch["state"]["terminated"]["exitCode"] == 0
    block = cluster.kubectl_json("get", "block", "fmnist-head", "-n", LOCAL_NAMESPACE)
    conditions = {c["type"]: c for c in block["status"]["conditions"]}
    assert conditions["Ready"]["status"] == "True", conditions
    # kwok plays only the pools without a real node.
    played = {
        (p["metadata"]["labels"].get("braid.dev/block"), p["spec"]["nodeSelector"][TIER_LABEL])
        for ns in (LOCAL_NAMESPACE, HOST_NAMESPACE)
        for p in release.pods(ns, "braid.dev/block")
        if not _running_in_container(p, node)
    }
    assert played
    assert all(tier not in REAL_TIERS for _, tier in played)


def test_an_inference_goes_through_the_gateway_pod(release: RealRelease) -> None:
    cluster = release.cluster
    (pod,) = release.pods(
        LOCAL_NAMESPACE,
        f"app.kubernetes.io/name=braid-gateway,app.kubernetes.io/instance={RELEASE}",
    )
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
    del cluster


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
    (gateway,) = release.pods(
        LOCAL_NAMESPACE,
        f"app.kubernetes.io/name=braid-gateway,app.kubernetes.io/instance={RELEASE}",
    )
    url = f"http://{gateway['status']['podIP']}:8000/v2/models/{release.catalog.local_model}/infer"
    return url, body


def _host_pod(release: RealRelease) -> dict[str, Any]:
    (pod,) = release.pods(HOST_NAMESPACE, f"braid.dev/block={HOST_BLOCK}")
    return pod


def test_a_crashed_host_triton_restarts_while_the_gateway_falls_back(
    release: RealRelease,
) -> None:
    """SIGKILL the host's tritonserver in its container: the kubelet restarts it, requests
    pinned to a cross path through it fall back to the local original path meanwhile, and
    none is lost; once it is back they cross again."""
    cluster = release.cluster
    cross = next(p.id for p in release.catalog.paths if p.kind.startswith("cross"))
    url, body = _pinned_request(release, cross)
    pod = wait_for(
        lambda: p if _ready(p := _host_pod(release)) else None,  # type: ignore[misc]
        "the host Block's Triton pod Ready on the real node",
        timeout=300,
    )
    assert _running_in_container(pod, nr.real_node_name(nodes.REAL_TIER, 0))
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

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        wait_for(
            lambda: any(a[1] == cross and not a[2] for a in answers),
            "a request served by the cross path",
            timeout=120,
        )
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
            return p["status"]["containerStatuses"][0]["restartCount"] > restarts and _ready(p)

        wait_for(restarted, "the kubelet to restart the host's Triton container", timeout=300)
        after_restart = len(answers)
        wait_for(
            lambda: any(a[1] == cross and not a[2] for a in answers[after_restart:]),
            "the cross path serving again after the restart",
            timeout=180,
        )
    finally:
        stop.set()
        sender.join(timeout=60)
    during = answers[before:after_restart]
    assert all(status == 200 for status, _, _ in answers), [a for a in answers if a[0] != 200]
    assert any(fallback for _, _, fallback in during), "no request fell back while it was down"
    assert {path for _, path, fallback in during if fallback} == {release.catalog.original_path}


def test_an_image_missing_on_the_node_makes_the_block_unready_with_the_reason(
    release: RealRelease,
) -> None:
    cluster = release.cluster
    image = f"{REGISTRY}/braid-triton-runtime:missing-on-purpose"
    block = cluster.kubectl_json("get", "block", "fmnist-head", "-n", LOCAL_NAMESPACE)
    broken = {
        "apiVersion": block["apiVersion"],
        "kind": "Block",
        "metadata": {"name": "fmnist-head-noimage", "namespace": LOCAL_NAMESPACE},
        "spec": {**block["spec"], "triton": {**block["spec"].get("triton", {}), "image": image}},
    }
    _apply(cluster, [broken])
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
