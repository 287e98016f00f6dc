"""``braid serve`` and ``braid gateway`` as a person (or a pod) runs them."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from braid.api.routing import Endpoints, single_path_table
from braid.dataplane.routing import write_routing_table
from braid_dev import synthetic as syn
from braid_dev.local_runtime import LocalRuntime
from braid_dev.stack.processes import pid_alive
from braid_dev.synthetic import SyntheticModels
from tests.process_tree import Snapshot, wait_until_gone

BRAID = Path(sys.executable).parent / "braid"


def wait_for_line(process: subprocess.Popen[str], marker: str, timeout: float) -> list[str]:
    """Lines of ``process`` up to the one containing ``marker``."""
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while not any(marker in line for line in lines):
        if time.monotonic() > deadline:  # a bounded wait, not a timing check
            pytest.fail("\n".join(lines))
        line = process.stdout.readline()
        assert line or process.poll() is None, "the process exited:\n" + "\n".join(lines)
        lines.append(line.rstrip())
    return lines


def test_gateway_reads_the_operators_endpoints_file(
    synthetic_models: SyntheticModels, local_runtime: LocalRuntime, tmp_path: Path
) -> None:
    """The routing ConfigMap's two files are all the gateway needs besides the catalog."""
    local = local_runtime.servers["local"].grpc_address
    original = synthetic_models.catalog.path(syn.ORIGINAL)
    endpoints = Endpoints(models={h.triton_model: local for h in original.hops})
    (tmp_path / "endpoints.json").write_text(endpoints.model_dump_json())
    write_routing_table(single_path_table(syn.LOCAL, syn.ORIGINAL), tmp_path / "routing.json")
    process = subprocess.Popen(
        [str(BRAID), "gateway", "--catalog", str(synthetic_models.catalog_path),
         "--endpoints", str(tmp_path / "endpoints.json"), "--routing", str(tmp_path / "routing.json"),
         "--http-port", "0", "--grpc-port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        lines = wait_for_line(process, "gateway ready", 120)
        match = re.search(r"gRPC (\S+)", lines[-1])
        assert match is not None
        client = grpcclient.InferenceServerClient(match.group(1))
        x = np.ones((1, *syn.INPUT_SHAPE), np.float32)
        tensor = grpcclient.InferInput("INPUT__0", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        got = client.infer(syn.LOCAL, [tensor]).as_numpy("OUTPUT__0")
        np.testing.assert_allclose(
            got, synthetic_models.run_path(syn.ORIGINAL, x), rtol=1e-5, atol=1e-6
        )
        client.close()
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_serve_starts_every_tier_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    workdir = tmp_path / "serve"
    process = subprocess.Popen(
        [
            str(BRAID),
            "serve",
            "--synthetic",
            "--http-port",
            "0",
            "--grpc-port",
            "0",
            "--workdir",
            str(workdir),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "BRAID_STATE_DIR": str(tmp_path / "state")},
    )
    lines: list[str] = []
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + 300
        while not any("gateway ready" in line for line in lines):
            if time.monotonic() > deadline:  # a bounded wait, not a timing check
                pytest.fail("\n".join(lines))
            line = process.stdout.readline()
            assert line or process.poll() is None, "braid serve exited:\n" + "\n".join(lines)
            lines.append(line.rstrip())
        ready = next(line for line in lines if "gateway ready" in line)
        match = re.search(r"REST (http://\S+)\s+gRPC (\S+)", ready)
        assert match is not None, ready
        rest, grpc_address = match.groups()
        pids = [int(p.read_text()) for p in workdir.glob("triton-*/tritonserver.pid")]
        assert len(pids) == 2  # local and host

        assert httpx.get(f"{rest}/v2/health/ready", timeout=10).status_code == 200
        client = grpcclient.InferenceServerClient(grpc_address)
        x = np.ones((1, *syn.INPUT_SHAPE), np.float32)
        tensor = grpcclient.InferInput("INPUT__0", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        result = client.infer(syn.LOCAL, [tensor], parameters={"braid_path": syn.CROSS})
        assert result.as_numpy("OUTPUT__0").shape == (1, 10)
        client.close()
        assert (workdir / "routing.json").is_file()

        process.send_signal(signal.SIGINT)
        out, _ = process.communicate(timeout=120)
        lines += out.splitlines()
        assert process.returncode == 0, "\n".join(lines)
        assert "stopping Triton servers" in out
        assert not any(pid_alive(pid) for pid in pids)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _start_serve(tmp_path: Path) -> tuple[subprocess.Popen[str], dict[str, str]]:
    env = {**os.environ, "BRAID_STATE_DIR": str(tmp_path / "state")}
    argv = [str(BRAID), "serve", "--synthetic", "--http-port", "0", "--grpc-port", "0"]
    argv += ["--workdir", str(tmp_path / "serve")]
    process = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    return process, env


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_serve_stops_everything_on_sigterm_and_sighup(tmp_path: Path, sig: signal.Signals) -> None:
    """Like Ctrl-C: a stop while serving is the normal end (exit 0); nothing it started (the
    tritonservers, their Python-backend stubs) nor any port it listened on is left."""
    process, _ = _start_serve(tmp_path)
    try:
        wait_for_line(process, "gateway ready", 300)
        snapshot = Snapshot.of(process.pid)
        names = snapshot.names()
        assert {"tritonserver", "triton_python_backend_stub"} <= names, names
        # Three per tritonserver, and the gateway's (in braid serve's own process).
        assert len(snapshot.ports) >= 8, snapshot.ports
        process.send_signal(sig)
        out, _ = process.communicate(timeout=120)
        assert process.returncode == 0, out
        assert "stopping Triton servers" in out
        wait_until_gone(snapshot)
        assert snapshot.survivors() == []
        assert snapshot.open_ports() == set()
        assert not list((tmp_path / "state" / "owned").glob("*/*.json"))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_cluster_down_stops_what_a_killed_serve_left(tmp_path: Path) -> None:
    """SIGKILL cannot be handled: the tritonservers outlive braid serve, and ``braid dev
    cluster down`` stops them from the records serve left in the state directory."""
    process, env = _start_serve(tmp_path)
    try:
        wait_for_line(process, "gateway ready", 300)
        snapshot = Snapshot.of(process.pid)
        assert "tritonserver" in snapshot.names()
        process.kill()
        process.wait()
        assert snapshot.survivors(), "the servers outlive a SIGKILLed braid serve"
        down = subprocess.run(
            [str(BRAID), "dev", "cluster", "down"],
            env={**env, "BRAID_CLUSTER_REAL_NODES": "0"},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert down.returncode == 0, down.stdout + down.stderr
        assert "tritonserver[local]" in down.stdout, down.stdout
        wait_until_gone(snapshot)
        assert snapshot.survivors() == []
        assert snapshot.open_ports() == set()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
