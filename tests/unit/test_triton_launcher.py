"""The Triton launch recipe (DESIGN.md) as command line, environment and backend directory."""

from __future__ import annotations

import sys
import sysconfig
from pathlib import Path

from braid_dev.stack.triton import (
    TritonPorts,
    prepare_backend_directory,
    probe_inputs,
    triton_argv,
    triton_environment,
)


def test_argv_follows_the_recipe_on_loopback() -> None:
    argv = triton_argv(
        Path("/x/tritonserver"),
        Path("/repo"),
        Path("/backends"),
        TritonPorts(http=1, grpc=2, metrics=3),
        server_id="braid-t",
    )
    assert argv[0] == "/x/tritonserver"
    for flag in [
        "--model-repository=/repo",
        "--backend-directory=/backends",
        "--id=braid-t",
        "--http-port=1",
        "--grpc-port=2",
        "--metrics-port=3",
        "--http-address=127.0.0.1",
        "--grpc-address=127.0.0.1",
        "--metrics-address=127.0.0.1",
        "--allow-gpu-metrics=false",
        "--pinned-memory-pool-byte-size=0",
        "--strict-readiness=true",
        "--exit-timeout-secs=5",
        "--disable-auto-complete-config",
        "--backend-config=python,shm-default-byte-size=16777216",
    ]:
        assert flag in argv


def test_environment_puts_the_venv_first_and_libpython_on_the_loader_path() -> None:
    env = triton_environment(
        {"PATH": "/usr/bin", "LD_LIBRARY_PATH": "/opt/lib", "PYTHONHOME": "/x"}
    )
    assert env["PATH"].split(":")[0] == str(Path(sys.prefix) / "bin")
    assert env["PATH"].endswith(":/usr/bin")
    assert env["LD_LIBRARY_PATH"].split(":") == [sysconfig.get_config_var("LIBDIR"), "/opt/lib"]
    assert "PYTHONHOME" not in env


def test_backend_directory_links_the_three_wheel_files(tmp_path: Path) -> None:
    home = tmp_path / "wheel"
    for rel in [
        "backends/python/libtriton_python.so",
        "backends/python/triton_python_backend_utils.py",
        "python_backend_stubs/3.11/triton_python_backend_stub",
    ]:
        (home / rel).parent.mkdir(parents=True, exist_ok=True)
        (home / rel).write_text(rel)
    dest = prepare_backend_directory(tmp_path / "be", home)
    again = prepare_backend_directory(tmp_path / "be", home)  # idempotent
    assert dest == again == tmp_path / "be"
    python_dir = dest / "python"
    assert sorted(p.name for p in python_dir.iterdir()) == [
        "libtriton_python.so",
        "triton_python_backend_stub",
        "triton_python_backend_utils.py",
    ]
    assert all(p.is_symlink() for p in python_dir.iterdir())
    stub = python_dir / "triton_python_backend_stub"
    assert stub.read_text() == "python_backend_stubs/3.11/triton_python_backend_stub"


def test_probe_inputs_are_zeros_with_variable_dims_as_one() -> None:
    inputs = probe_inputs(
        {
            "inputs": [
                {"name": "X", "datatype": "FP32", "shape": [-1, 2, 3]},
                {"name": "T", "datatype": "BYTES", "shape": [-1, 1]},
                {"name": "M", "datatype": "BOOL", "shape": [2]},
            ]
        }
    )
    assert inputs == [
        {"name": "X", "datatype": "FP32", "shape": [1, 2, 3], "data": [0] * 6},
        {"name": "T", "datatype": "BYTES", "shape": [1, 1], "data": [""]},
        {"name": "M", "datatype": "BOOL", "shape": [2], "data": [False, False]},
    ]
