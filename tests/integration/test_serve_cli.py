"""``braid serve``: Triton per tier plus the gateway from one command, all gone after Ctrl-C."""

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
import tritonclient.grpc as grpcclient

from braid.devstack.processes import pid_alive
from braid.tooling import synthetic as syn


def test_serve_starts_every_tier_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    workdir = tmp_path / "serve"
    braid = Path(sys.executable).parent / "braid"
    process = subprocess.Popen(
        [
            str(braid),
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
            assert time.monotonic() < deadline, "\n".join(lines)
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
