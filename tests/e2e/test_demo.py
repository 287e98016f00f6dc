"""``braid demo`` end to end, short: models (quick), a control plane of its own with its real
node, braid through its chart with the operator, controller, gateway and every Triton pod in
containers, Prometheus by Kubernetes service discovery, ``helm test``'s Pod, traffic
light -> heavy -> light, the summary and the timeline PNG; and afterwards nothing of it is
left: no process, container mount or network interface.

The demo runs with a state directory of its own, so it starts (and stops) its own cluster and
operator instead of sharing the session's, whose operator watches every namespace. (The
kwok-only demo, whose components run as processes, is what ``test_demo_signals`` stops.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from braid.settings import get_settings
from braid_dev.stack import node_render as nr
from braid_dev.stack import nodes
from braid_dev.stack.processes import pid_alive

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


@pytest.mark.timeout(900)
def test_demo_runs_end_to_end_and_leaves_nothing_running(tmp_path: Path) -> None:
    state, workdir, png = tmp_path / "state", tmp_path / "demo", tmp_path / "timeline.png"
    # This checkout's code, whichever checkout the venv's editable install points at.
    root = Path(__file__).resolve().parents[2]
    src = f"{root / 'src'}{os.pathsep}{root / 'dev' / 'src'}"
    env = {**os.environ, "BRAID_STATE_DIR": str(state), "PYTHONPATH": src}
    real = get_settings().cluster_real_nodes > 0
    interfaces_before = set(nodes.interfaces())
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "braid.cli",
            "demo",
            "--duration=24",
            f"--workdir={workdir}",
            f"--png={png}",
        ],
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
    status = subprocess.run(
        [sys.executable, "-m", "braid.cli", "dev", "cluster", "status"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "not running" in status.stdout
    if real:
        work = f"{nr.WORK_ROOT}/{nr.cluster_tag(state / 'cluster')}-"
        left_mounts = [
            m for m in nodes.mounts_under(nr.WORK_ROOT) if m.startswith(work)
        ] + nodes.mounts_under(tmp_path)
        assert left_mounts == []
        assert set(nodes.interfaces()) <= interfaces_before
