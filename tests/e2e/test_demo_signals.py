"""``braid demo`` stopped by SIGTERM, SIGHUP or ``braid dev cluster down`` instead of Ctrl-C:
nothing it started (control plane, operator, the kwok runtime's tritonservers and their
Python-backend stubs, gateway, Prometheus, controller) outlives it, and no port it listened
on stays open.

Each demo runs with a state directory of its own (its own cluster), the quick profile and a
short traffic phase. What it started is read from /proc while it runs (``Snapshot``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.process_tree import Snapshot, wait_until_gone

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
KEEPS_SERVING = "the stack keeps serving"
TRAFFIC = "traffic: light"
#: What every snapshot below must contain, so the test cannot pass by seeing nothing.
EXPECTED = {
    "etcd",
    "kube-apiserver",
    "kwok",
    "tritonserver",
    "triton_python_backend_stub",
    "prometheus",
    "-m braid.cli gateway",
    "-m braid.cli controller",
}


class Demo:
    """``braid demo`` as a subprocess whose output is read line by line."""

    def __init__(self, tmp_path: Path, *args: str) -> None:
        src = f"{ROOT / 'src'}{os.pathsep}{ROOT / 'dev' / 'src'}"
        self.env = {
            **os.environ,
            "BRAID_STATE_DIR": str(tmp_path / "state"),
            "BRAID_CLUSTER_REAL_NODES": "0",
            "PYTHONPATH": src,
        }
        argv = [sys.executable, "-m", "braid.cli", "demo", f"--workdir={tmp_path / 'demo'}"]
        argv += [f"--png={tmp_path / 'timeline.png'}", *args]
        self.process = subprocess.Popen(
            argv, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.lines: list[str] = []

    def wait_for(self, marker: str, timeout: float = 600) -> None:
        stdout = self.process.stdout
        assert stdout is not None
        deadline = time.monotonic() + timeout
        while not any(marker in line for line in self.lines):
            if time.monotonic() > deadline:  # a bounded wait, not a timing check
                pytest.fail(f"no {marker!r} from the demo:\n" + self.output())
            line = stdout.readline()
            assert line or self.process.poll() is None, "the demo exited:\n" + self.output()
            self.lines.append(line.rstrip())

    def finish(self, timeout: float = 300) -> int:
        out, _ = self.process.communicate(timeout=timeout)
        self.lines += out.splitlines()
        return self.process.returncode

    def output(self) -> str:
        return "\n".join(self.lines)[-6000:]

    def braid(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "braid.cli", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=600,
        )


@pytest.fixture
def demo_runs(tmp_path: Path) -> Iterator[list[Demo]]:
    """The demos a test starts; one still running at the end is killed and cleaned up."""
    runs: list[Demo] = []
    yield runs
    for run in runs:
        if run.process.poll() is None:
            run.process.kill()
            run.process.wait()
            run.braid("dev", "cluster", "down")


def _started(demo: Demo) -> Snapshot:
    snapshot = Snapshot.of(demo.process.pid)
    missing = {name for name in EXPECTED if not any(name in n for n in snapshot.names())}
    assert not missing, f"the demo runs no {missing}: {sorted(snapshot.names())}"
    assert snapshot.ports, "the demo's servers listen on ports"
    return snapshot


def _send_during_teardown(demo: Demo, snapshot: Snapshot, sig: signal.Signals) -> None:
    """Send ``sig`` once the tear-down has visibly begun (one of the servers has exited)."""
    servers = [p for p in snapshot.processes if any(name in " ".join(p.argv) for name in EXPECTED)]
    while all(p.alive() for p in servers) and demo.process.poll() is None:
        time.sleep(0.1)
    if demo.process.poll() is None:
        demo.process.send_signal(sig)


def _assert_nothing_left(demo: Demo, snapshot: Snapshot) -> None:
    wait_until_gone(snapshot)
    assert snapshot.survivors() == []
    assert snapshot.open_ports() == set()
    status = demo.braid("dev", "cluster", "status")
    assert "not running" in status.stdout, status.stdout + status.stderr


@pytest.mark.timeout(900)
def test_sighup_during_traffic_stops_everything(tmp_path: Path, demo_runs: list[Demo]) -> None:
    """A hang-up in the middle of the traffic ends the demo with 128 + SIGHUP; a second
    signal (Ctrl-C) during the tear-down is only reported."""
    demo = Demo(tmp_path, "--duration=120")
    demo_runs.append(demo)
    demo.wait_for(TRAFFIC)
    snapshot = _started(demo)
    demo.process.send_signal(signal.SIGHUP)
    _send_during_teardown(demo, snapshot, signal.SIGINT)
    assert demo.finish() == 128 + signal.SIGHUP, demo.output()
    assert "interrupted" in demo.output()
    assert "SIGINT: already stopping" in demo.output()
    _assert_nothing_left(demo, snapshot)


@pytest.mark.timeout(900)
def test_cluster_down_sigterms_a_kept_demo_which_stops_everything(
    tmp_path: Path, demo_runs: list[Demo]
) -> None:
    """``braid dev cluster down`` sends a kept demo SIGTERM: the demo ends as on Ctrl-C
    (exit 0 and its summary: a stop while ``--keep`` serves is its normal end), and a
    SIGHUP arriving during that tear-down does not cut it short."""
    demo = Demo(tmp_path, "--keep", "--duration=3")
    demo_runs.append(demo)
    demo.wait_for(KEEPS_SERVING)
    snapshot = _started(demo)
    down = subprocess.Popen(
        [sys.executable, "-m", "braid.cli", "dev", "cluster", "down"],
        env=demo.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    _send_during_teardown(demo, snapshot, signal.SIGHUP)
    down_out, _ = down.communicate(timeout=600)
    assert down.returncode == 0, down_out
    # The demo was still running: down asked it to stop rather than killing its servers.
    assert "braid.cli demo" in down_out, down_out
    assert demo.finish() == 0, demo.output()
    assert "summary per phase" in demo.output()
    assert "SIGHUP: already stopping" in demo.output()
    _assert_nothing_left(demo, snapshot)
