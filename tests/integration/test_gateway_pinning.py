"""``braid gateway --pin-cpu``: every thread of the running gateway is on the one CPU, and it
still serves; a CPU the process may not use is refused before anything starts."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from braid.api.routing import single_path_table
from braid.dataplane.routing import write_routing_table
from braid_dev import synthetic as syn
from braid_dev.local_runtime import LocalRuntime
from braid_dev.stack.gateway_process import start_gateway_process
from braid_dev.synthetic import SyntheticModels

pytestmark = pytest.mark.integration


def _threads_cpus(pid: int) -> dict[int, set[int]]:
    return {
        int(task.name): os.sched_getaffinity(int(task.name))
        for task in Path(f"/proc/{pid}/task").iterdir()
    }


def test_a_pinned_gateway_runs_all_its_threads_on_one_cpu_and_serves(
    synthetic_models: SyntheticModels, local_runtime: LocalRuntime, tmp_path: Path
) -> None:
    routing = tmp_path / "routing.json"
    write_routing_table(single_path_table(syn.LOCAL, syn.ORIGINAL), routing)
    cpu = max(os.sched_getaffinity(0))  # not the default 'auto' pick, where there are two
    gateway = start_gateway_process(
        synthetic_models.catalog_path,
        local_runtime.endpoints.servers,
        routing,
        extra=["--no-fuse", "--pin-cpu", str(cpu)],
    )
    try:
        x = np.random.default_rng(0).random((1, *syn.INPUT_SHAPE)).astype(np.float32)
        client = grpcclient.InferenceServerClient(gateway.grpc_address)
        tensor = grpcclient.InferInput("INPUT__0", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        assert client.infer(syn.LOCAL, [tensor]).as_numpy("OUTPUT__0") is not None
        client.close()
        # After serving: grpc's poller and every other thread started since inherited it.
        threads = _threads_cpus(gateway.process.pid)
        assert len(threads) > 1
        assert all(cpus == {cpu} for cpus in threads.values()), threads
    finally:
        gateway.stop()


def test_a_cpu_outside_the_process_set_is_refused_naming_the_option(tmp_path: Path) -> None:
    outside = max(os.sched_getaffinity(0)) + 1
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "braid.cli",
            "gateway",
            "--catalog",
            str(tmp_path / "catalog.json"),
            "--endpoint",
            "local=127.0.0.1:1",
            "--pin-cpu",
            str(outside),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    said = " ".join(re.sub("[│╭╮╰╯─]", " ", result.stderr).split())  # rich's box, unwrapped
    assert "--pin-cpu" in said
    assert "one of the CPUs this process may use" in said
