"""`braid dev cluster` recovers from a crashed run and leaves nothing behind on `down`.

Runs a second, throw-away cluster in a state dir of its own (own ports, own PKI), so the
session's cluster is not disturbed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from braid.settings import Settings
from braid_dev.stack import cluster as devcluster
from tests.e2e.conftest import E2ECluster


def _braid(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "braid.cli", "dev", "cluster", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **env},
        check=False,
    )


@pytest.fixture
def scratch(tmp_path: Path, cluster: E2ECluster) -> tuple[dict[str, str], Settings]:
    """Env and settings of a second cluster; ``cluster`` first proves the binaries exist."""
    env = {"BRAID_STATE_DIR": str(tmp_path / "state")}
    settings = Settings(state_dir=tmp_path / "state")
    return env, settings


def test_crashed_cluster_is_cleaned_and_restarted_then_down_stops_all(
    scratch: tuple[dict[str, str], Settings],
) -> None:
    env, settings = scratch
    layout = devcluster.layout_for(settings)
    try:
        first = _braid(env, "up")
        assert first.returncode == 0, first.stdout + first.stderr
        assert "cluster up in" in first.stdout

        # Crash: the apiserver dies and the pid files and state file are lost or torn.
        apiserver_pid = int(layout.pid_file("kube-apiserver").read_text())
        os.kill(apiserver_pid, signal.SIGKILL)
        for pid_file in layout.run.glob("*.pid"):
            pid_file.unlink()
        layout.state_file.write_text('{"ports": {')

        degraded = _braid(env, "status")
        assert degraded.returncode == 1
        assert "untracked cluster processes" in degraded.stdout

        second = _braid(env, "up")
        assert second.returncode == 0, second.stdout + second.stderr
        assert "cluster up in" in second.stdout  # restarted, not "already running"
        healthy = _braid(env, "status")
        assert healthy.returncode == 0, healthy.stdout
        assert "nodes ready: 6" in healthy.stdout
    finally:
        down = _braid(env, "down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert "cluster stopped" in down.stdout
    assert devcluster.find_cluster_processes(layout) == {}
    again = _braid(env, "down")
    assert again.returncode == 0
    assert "not running" in again.stdout
