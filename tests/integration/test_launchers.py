"""The launchers survive the traps DESIGN.md names: port clashes and dead Python stubs.

These tests start their own servers (the session ones must stay untouched) and load only
one model to keep them cheap.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from braid_dev.stack.ports import free_ports, pid_listens_on
from braid_dev.stack.prometheus import start_prometheus
from braid_dev.stack.triton import TritonPorts, TritonServer, start_triton

from .conftest import LINEAR_MODEL, TinyRepository


@pytest.fixture
def squatter() -> Iterator[socket.socket]:
    """A socket of this process listening on a port, as a foreign server would."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    yield sock
    sock.close()


def _stub_pids(server_pid: int) -> list[int]:
    """The Python-backend stubs of a server: its children running triton_python_backend_stub."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == server_pid and b"triton_python_backend_stub" in cmdline:
            pids.append(int(entry.name))
    return pids


def test_triton_retries_on_new_ports_when_a_port_is_taken_and_probe_sees_a_dead_stub(
    tiny_model_repository: TinyRepository,
    tmp_path: Path,
    squatter: socket.socket,
) -> None:
    taken = squatter.getsockname()[1]
    grpc, metrics = free_ports(2)
    server: TritonServer = start_triton(
        tiny_model_repository.path,
        workdir=tmp_path,
        name="clash",
        ports=TritonPorts(http=taken, grpc=grpc, metrics=metrics),
        extra_args=["--model-control-mode=explicit", f"--load-model={LINEAR_MODEL}"],
    )
    try:
        # The first attempt failed on the taken port (after loading its model); the server
        # that answers now is ours, on other ports.
        assert "already in use" in (tmp_path / "tritonserver-1.log").read_text()
        assert server.ports.http != taken
        assert server.owns_ports()
        assert not pid_listens_on(server.process.pid, taken)
        assert server.models == (LINEAR_MODEL,)
        assert server.probe()

        # A stub killed behind the server's back: Triton may still say "ready", the
        # inference probe must not.
        stubs = _stub_pids(server.process.pid)
        assert stubs, "expected a Python-backend stub process"
        for pid in stubs:
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while server.probe() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not server.probe()
    finally:
        server.stop()
    assert not server.process.alive()
    assert not _stub_pids(server.process.pid)


def test_prometheus_retries_on_a_new_port_when_its_port_is_taken(
    tmp_path: Path, squatter: socket.socket
) -> None:
    taken = squatter.getsockname()[1]
    server = start_prometheus([], workdir=tmp_path, port=taken)
    try:
        assert server.port != taken
        assert pid_listens_on(server.process.pid, server.port)
    finally:
        server.stop()
    assert not server.process.alive()
