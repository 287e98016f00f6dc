"""``braid demo`` end to end, short: models (quick), a control plane of its own with its real
node, braid through its chart with the operator, controller, gateway and every Triton pod in
containers, Prometheus by Kubernetes service discovery, ``helm test``'s Pod, traffic
light -> heavy -> light, the summary and the timeline PNG; and afterwards nothing of it is
left: no process, container mount or network interface.

With real nodes the demo runs on the session's cluster, in namespaces the session's operator
leaves alone (``isolated-*``): one machine holds one stack with real nodes, whose kube-proxy
owns the machine's iptables chains, so a second stack's Services would not work. Without real
nodes (``BRAID_CLUSTER_REAL_NODES=0``) it runs with a state directory of its own, so it starts
(and stops) its own kwok cluster. (The kwok-only demo, whose components run as processes, is
what ``test_demo_signals`` stops.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from braid_dev.stack import cluster as devcluster
from braid_dev.stack import node_render as nr
from braid_dev.stack import nodes
from braid_dev.stack.processes import pid_alive
from tests.e2e.conftest import E2ECluster
from tests.e2e.helpers import wait_for

pytestmark = pytest.mark.e2e


def _cmdline(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _pids_mentioning(text: str) -> list[int]:
    return [
        int(p.name)
        for p in Path("/proc").iterdir()
        if p.name.isdigit()
        and int(p.name) != os.getpid()
        and text in _cmdline(int(p.name))
        and pid_alive(int(p.name))
    ]


DEMO_NAMESPACES = ("isolated-demo-a", "isolated-demo-b")


def _containers(cluster: E2ECluster) -> set[str]:
    """The ids of every container the session's real nodes' containerd holds."""
    tools = nodes.find_tools(cluster.settings.bin_dir)
    found: set[str] = set()
    for layout in nodes.node_layouts(devcluster.layout_for(cluster.settings).root):
        listed = subprocess.run(
            nr.ctr_argv(tools.ctr, layout, "containers", "list", "-q"),
            capture_output=True, text=True, check=True, timeout=60,
        )  # fmt: skip
        found |= set(listed.stdout.split())
    return found


@pytest.mark.timeout(900)
def test_demo_runs_end_to_end_and_leaves_nothing_running(
    tmp_path: Path, cluster: E2ECluster
) -> None:
    state, workdir, png = tmp_path / "state", tmp_path / "demo", tmp_path / "timeline.png"
    # This checkout's code, whichever checkout the venv's editable install points at.
    root = Path(__file__).resolve().parents[2]
    src = f"{root / 'src'}{os.pathsep}{root / 'dev' / 'src'}"
    real = cluster.settings.cluster_real_nodes > 0
    env = {**os.environ, "PYTHONPATH": src}
    args = ["--duration=24", f"--workdir={workdir}", f"--png={png}"]
    if real:
        args.append(f"--namespaces={','.join(DEMO_NAMESPACES)}")
    else:
        env["BRAID_STATE_DIR"] = str(state)
    interfaces_before = set(nodes.interfaces())
    containers_before = _containers(cluster) if real else set()
    proc = subprocess.run(
        [sys.executable, "-m", "braid.cli", "demo", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=840,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "summary per phase" in proc.stdout
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["profile"] == "quick"
    assert [p["phase"] for p in summary["phases"]] == ["light", "heavy", "light again"]
    servable = set(summary["servable_paths"])
    assert "fmnist-cnn/original" in servable
    assert len(servable) > 1, "the operator routes more than the original path"
    for phase in summary["phases"]:
        assert phase["requests"] > 0, phase
        assert set(phase["paths"]) <= servable, phase
        # Real Fashion-MNIST labels through real blocks: far above chance (10 %).
        assert phase["accuracy"] > 0.5, phase
    assert summary["phases"][1]["requests"] > summary["phases"][0]["requests"]
    # The demo installs braid with helm; the chart's test Pod ran its script here and passed.
    assert summary["helm_test"] == {"passed": True, "exit_codes": [0]}
    assert "helm test passed" in proc.stdout
    if real:
        # Every pod of braid ran in a container on the demo's real node: kwok played none.
        assert summary["pods"] == {
            "triton_pods_in_containers": 3,
            "triton_pods_kwok_played": 0,
            "chart_pods_in_containers": 3,
        }, summary["pods"]
        assert summary["runs_on"].startswith("real nodes")
    assert summary["switches"], "the path controller's decisions reached the demo"
    assert png.is_file()
    assert png.stat().st_size > 10_000
    # Teardown: no tritonserver, gateway, operator, Prometheus or cluster process is left.
    # (Triton's Python-backend stubs may take a few seconds to exit after their server.)
    deadline = time.monotonic() + 60
    while _pids_mentioning(str(tmp_path)) and time.monotonic() < deadline:
        time.sleep(1)
    left = {pid: _cmdline(pid)[:200] for pid in _pids_mentioning(str(tmp_path))}
    assert left == {}
    if real:
        # The session's cluster stays; the demo's namespaces (its release, pods) are gone,
        # and with them every container it ran and every veth of its pods.
        for name in DEMO_NAMESPACES:
            wait_for(
                lambda n=name: (
                    cluster.access.kubectl(  # type: ignore[misc]
                        "get", "namespace", n, check=False
                    ).returncode
                    != 0
                ),
                f"namespace {name} deleted",
                timeout=180,
            )
        wait_for(
            lambda: _containers(cluster) <= containers_before,
            "the demo's containers removed",
            timeout=120,
        )
        assert set(nodes.interfaces()) <= interfaces_before
        assert nodes.mounts_under(tmp_path) == []
        return
    status = subprocess.run(
        [sys.executable, "-m", "braid.cli", "dev", "cluster", "status"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "not running" in status.stdout
