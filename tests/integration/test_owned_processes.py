"""The records a command keeps of the servers it starts (``OwnedProcesses``): what is still
recorded is stopped with its whole process group, and a record whose pid now names another
process (pid reuse) leaves that process alone.

Plain ``sleep`` processes stand in for servers: what is tested is the bookkeeping, on real
processes and a real state directory.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from braid_dev.stack.processes import (
    ProcessIdentity,
    StartupError,
    group_members,
    owned_processes,
    start_process,
    stop_owned,
    wait_until,
)

SLEEP = ["sleep", "600"]


def _dead_identity(argv: list[str]) -> dict[str, object]:
    """The record of a process that has exited (as a command killed with SIGKILL has)."""
    done = subprocess.run(["sh", "-c", "echo $$"], capture_output=True, text=True, check=True)
    return {"pid": int(done.stdout), "argv": argv, "start_ticks": 1}


def test_records_stop_a_group_and_spare_a_recycled_pid(tmp_path: Path) -> None:
    root = tmp_path / "owned"
    stranger = subprocess.Popen(SLEEP, start_new_session=True)
    try:
        with owned_processes(root / "serve-1"):
            # A group whose leader forks a child, as tritonserver forks its Python stubs.
            argv = ["sh", "-c", "sleep 600 & sleep 601"]
            server = start_process("server", argv, tmp_path / "server.log")
            recorded = json.loads((root / "serve-1" / f"{server.pid}.json").read_text())
            assert recorded["argv"] == argv
            # sh forks its two sleeps after it starts.
            wait_until(lambda: len(group_members(server.pid)) == 3, "the group", timeout=30)
            # The owner (this process) runs: ``down`` from here leaves its servers alone.
            assert stop_owned(root) == []
            assert server.alive()

            # Now as if the owner had been killed with SIGKILL; beside it, the record of an
            # earlier process that had the stranger's pid (another start time).
            owner_file = root / "serve-1" / "owner.json"
            owner_file.write_text(json.dumps(_dead_identity(["braid", "serve"])))
            stranger_identity = ProcessIdentity.of(stranger.pid)
            assert stranger_identity is not None
            (root / "gone-2").mkdir()
            forged = {"name": "old", "pid": stranger.pid, "argv": SLEEP, "start_ticks": 0}
            (root / "gone-2" / f"{stranger.pid}.json").write_text(json.dumps(forged))

            assert stop_owned(root) == ["server"]
            assert group_members(server.pid) == []
            assert stranger_identity.alive(), "a recycled pid must never be signalled"
            assert list(root.iterdir()) == []
    finally:
        stranger.kill()
        stranger.wait()


def test_a_closing_command_stops_its_servers_and_starts_no_more(tmp_path: Path) -> None:
    directory = tmp_path / "owned" / "demo-1"
    with owned_processes(directory) as owner:
        server = start_process("server", SLEEP, tmp_path / "server.log")
        # Servers that outlive the command on purpose (the control plane) are not recorded.
        cluster = start_process("etcd", SLEEP, tmp_path / "etcd.log", owned=False)
        assert {p.name for p in directory.iterdir()} == {"owner.json", f"{server.pid}.json"}
        owner.close()  # what leaving the block does; a late thread's start now fails
        with pytest.raises(StartupError, match="stopping"):
            start_process("late", SLEEP, tmp_path / "late.log")
    assert not server.alive()
    assert not directory.exists()
    assert cluster.alive()
    cluster.stop()
