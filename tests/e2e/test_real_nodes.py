"""Real nodes: pods scheduled on the local pool's real node run in containers (containerd +
runc), with real probes and pod IPs, and `braid dev cluster down` leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from braid.settings import Settings
from braid_dev.stack import cluster as devcluster
from braid_dev.stack import images, nodes
from braid_dev.stack import node_render as nr
from tests.e2e.conftest import E2ECluster
from tests.e2e.helpers import wait_for

REAL_NODE = nr.real_node_name(nodes.REAL_TIER, 0)


def _probe_pod(name: str) -> dict[str, Any]:
    """A pod that serves a page with busybox httpd and is Ready only once it answers; a
    memory-backed volume gives tear-down a mount to clean up."""
    pod = nr.real_node_pod(
        name,
        images.busybox_recipe().reference,
        "echo served-by-$(hostname) > /var/www/index.html; "
        "echo started; exec httpd -f -p 8080 -h /var/www",
        probe_path="/index.html",
    )
    pod["spec"]["containers"][0]["volumeMounts"] = [{"name": "scratch", "mountPath": "/scratch"}]
    pod["spec"]["volumes"] = [{"name": "scratch", "emptyDir": {"medium": "Memory"}}]
    return pod


def _ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def _apply(cluster_kubectl: Any, obj: dict[str, Any], namespace: str) -> None:
    cluster_kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(obj))


def test_real_node_joins_the_local_pool(cluster: E2ECluster) -> None:
    node = cluster.kubectl_json("get", "node", REAL_NODE)
    labels = node["metadata"]["labels"]
    assert labels["braid.dev/tier"] == "local"
    assert labels[nr.REAL_NODE_LABEL[0]] == "true"
    assert "type" not in labels  # kwok selects type=kwok: it leaves this node alone
    conditions = {c["type"]: c["status"] for c in node["status"]["conditions"]}
    assert conditions["Ready"] == "True"
    assert node["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://")
    addresses = {a["type"]: a["address"] for a in node["status"]["addresses"]}
    assert addresses["InternalIP"].startswith(nr.POD_NETWORK_PREFIX + ".")


def test_pod_runs_in_a_container_and_passes_its_readiness_probe(
    cluster: E2ECluster, namespace: str
) -> None:
    _apply(cluster.kubectl, _probe_pod("web"), namespace)
    pod = wait_for(
        lambda: (
            p if _ready(p := cluster.kubectl_json("get", "pod", "web", "-n", namespace)) else None
        ),
        "the pod on the real node to become Ready",
        timeout=120,
    )
    assert pod["spec"]["nodeName"] == REAL_NODE
    status = pod["status"]["containerStatuses"][0]
    # Set by the kubelet from containerd, never by kwok.
    assert status["containerID"].startswith("containerd://")
    assert status["ready"] is True
    pod_ip = pod["status"]["podIP"]
    assert pod_ip.startswith(nr.POD_NETWORK_PREFIX + ".")
    # The pod's own network: this machine reaches it on the node's bridge.
    answer = httpx.get(f"http://{pod_ip}:8080/index.html", timeout=5.0)
    assert answer.text.strip() == "served-by-web"
    # The API server reaches the kubelet (logs go through it).
    logs = cluster.kubectl("logs", "web", "-n", namespace)
    assert "started" in logs


# ---------------------------------------------------------------------------------------------
# Tear-down, on a throw-away cluster of its own


def _braid(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).with_name("braid")), "dev", "cluster", *args],
        capture_output=True,
        text=True,
        timeout=400,
        env={**os.environ, **env},
        check=False,
    )


def _iptables_rules() -> str:
    out = ""
    for tool in ("iptables-save", "ip6tables-save"):
        out += subprocess.run([tool], capture_output=True, text=True, check=False).stdout
    return out


@pytest.fixture
def scratch_state(cluster: E2ECluster) -> Iterator[Path]:
    """A state dir for a second cluster (``cluster`` first proves the binaries exist)."""
    with tempfile.TemporaryDirectory(prefix="braid-e2e-nodes-") as tmp:
        yield Path(tmp)


def test_down_leaves_no_container_mount_interface_rule_or_process(
    scratch_state: Path,
) -> None:
    env = {"BRAID_STATE_DIR": str(scratch_state)}
    settings = Settings(state_dir=scratch_state)
    root = devcluster.layout_for(settings).root
    node = nr.NodeLayout(nodes.nodes_root(root) / REAL_NODE)
    interfaces_before = set(nodes.interfaces())
    bridge = nr.bridge_name(root, 0)
    ids: list[str] = []
    try:
        up = _braid(env, "up")
        assert up.returncode == 0, up.stdout + up.stderr
        access = devcluster.access(settings)
        _apply(access.kubectl, _probe_pod("web"), "default")
        wait_for(
            lambda: _ready(access.kubectl_json("get", "pod", "web")),
            "the scratch cluster's pod to become Ready",
            timeout=120,
        )
        ids = nodes.container_ids(node)
        assert len(ids) == 2  # the pod's sandbox and its container
        assert nodes.container_cgroups(ids)
        running = nodes.node_processes(node)
        assert set(running.values()) >= {"kubelet", "containerd", "shim", "container"}
        assert nodes.mounts_under(node.work_dir)
        assert nr.NodeNet(**_net(node)).bridge == bridge
        assert bridge in nodes.interfaces()
    finally:
        down = _braid(env, "down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert nodes.node_processes(node) == {}
    assert nodes.mounts_under(root) == []
    assert nodes.mounts_under(node.work_dir) == []
    assert bridge not in nodes.interfaces()
    assert set(nodes.interfaces()) <= interfaces_before
    rules = _iptables_rules()
    assert bridge not in rules
    if not nodes.kubelets_running():  # the session cluster's kubelet keeps them otherwise
        assert nodes.kubelet_chains_left(rules) == []
    assert not node.root.exists()
    assert not node.work_dir.exists()
    assert nodes.container_cgroups(ids) == []


def _net(node: nr.NodeLayout) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(node.net_file.read_text())
    return data


def test_pod_reaches_a_service_by_name(cluster: E2ECluster, namespace: str) -> None:
    """CoreDNS answers the Service's name, kube-proxy carries the ClusterIP to the pod."""
    _apply(cluster.kubectl, _probe_pod("web"), namespace)
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }
    _apply(cluster.kubectl, service, namespace)
    client = _probe_pod("client")
    client["spec"]["containers"][0]["command"] = ["sh", "-c", "exec sleep 3600"]
    del client["spec"]["containers"][0]["readinessProbe"]
    _apply(cluster.kubectl, client, namespace)
    for name in ("web", "client"):
        wait_for(
            lambda name=name: _ready(cluster.kubectl_json("get", "pod", name, "-n", namespace)),
            f"pod {name} Ready",
            timeout=120,
        )
    cluster_ip = cluster.kubectl_json("get", "service", "web", "-n", namespace)["spec"]["clusterIP"]
    fqdn = f"web.{namespace}.svc.cluster.local"
    answer = cluster.kubectl("exec", "client", "-n", namespace, "--", "nslookup", fqdn)
    assert cluster_ip in answer
    # busybox-static's wget crashes in this image (glibc's resolver, linked statically);
    # nc speaks the HTTP request itself. "web" resolves through the pod's search domains.
    request = "printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' | nc -w 3 web 80"
    page = wait_for(
        lambda: cluster.kubectl(
            "exec", "client", "-n", namespace, "--", "sh", "-c", request, check=False
        ),
        "the Service to answer through kube-proxy",
        timeout=60,
    )
    assert page.strip().endswith("served-by-web")


def test_missing_image_is_reported_in_the_pod_status(cluster: E2ECluster, namespace: str) -> None:
    pod = _probe_pod("ghost")
    pod["spec"]["containers"][0]["image"] = "braid.local/never-built:0"
    _apply(cluster.kubectl, pod, namespace)

    def waiting_reason() -> str | None:
        status = cluster.kubectl_json("get", "pod", "ghost", "-n", namespace)["status"]
        for container in status.get("containerStatuses", []):
            reason: str | None = container.get("state", {}).get("waiting", {}).get("reason")
            return reason if reason and reason != "ContainerCreating" else None
        return None

    assert wait_for(waiting_reason, "the kubelet to report the image", timeout=90) == (
        "ErrImageNeverPull"
    )


class _Poller(threading.Thread):
    """GETs a URL over and over, counting answers and failures, until told to stop."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.answers = 0
        self.failures: list[str] = []
        self.halt = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=2.0) as client:
            while not self.halt.is_set():
                try:
                    client.get(self.url).raise_for_status()
                    self.answers += 1
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))
                time.sleep(0.05)


@pytest.mark.parametrize("role", ["kubelet", "containerd"])
def test_pod_keeps_serving_while_its_node_restarts(
    cluster: E2ECluster, namespace: str, role: str
) -> None:
    _apply(cluster.kubectl, _probe_pod("web"), namespace)
    pod = wait_for(
        lambda: (
            p if _ready(p := cluster.kubectl_json("get", "pod", "web", "-n", namespace)) else None
        ),
        "the pod on the real node to become Ready",
        timeout=120,
    )
    poller = _Poller(f"http://{pod['status']['podIP']}:8080/index.html")
    poller.start()
    try:
        layout = devcluster.layout_for(cluster.settings)
        nodes.restart_component(layout, REAL_NODE, role, down_s=2.0)
        wait_for(
            lambda: _ready(cluster.kubectl_json("get", "pod", "web", "-n", namespace)),
            f"the pod Ready after its {role} restarted",
            timeout=120,
        )
        answers_before = poller.answers
        wait_for(lambda: poller.answers > answers_before, "an answer after the restart")
    finally:
        poller.halt.set()
        poller.join()
    assert poller.failures == []
    after = cluster.kubectl_json("get", "pod", "web", "-n", namespace)
    assert after["metadata"]["uid"] == pod["metadata"]["uid"]
    assert after["status"]["containerStatuses"][0]["restartCount"] == 0


def test_python_image_from_a_debian_rootfs_runs_a_server(
    cluster: E2ECluster, namespace: str
) -> None:
    """The base of braid's Python images: mmdebstrap's root filesystem, imported on demand."""
    settings = cluster.settings
    recipe = images.python_recipe(settings.cache)
    node = nr.NodeLayout(nodes.nodes_root(devcluster.layout_for(settings).root) / REAL_NODE)
    nodes.import_image(nodes.find_tools(settings.bin_dir), node, recipe, settings.cache)
    pod = _probe_pod("py")
    container = pod["spec"]["containers"][0]
    container["image"] = recipe.reference
    container["command"] = ["python3", "-m", "http.server", "8080", "--directory", "/etc"]
    container["readinessProbe"]["httpGet"]["path"] = "/debian_version"
    _apply(cluster.kubectl, pod, namespace)
    wait_for(
        lambda: _ready(cluster.kubectl_json("get", "pod", "py", "-n", namespace)),
        "the Python pod to become Ready",
        timeout=120,
    )
    version = cluster.kubectl(
        "exec",
        "py",
        "-n",
        namespace,
        "--",
        "python3",
        "-c",
        "import sys; print(sys.version_info[:2])",
    )
    assert version.strip() == "(3, 11)"
