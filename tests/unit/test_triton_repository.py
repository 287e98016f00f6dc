"""Model export and the generic Python-backend runner, without a Triton server.

The runner is loaded with a stand-in for ``triton_python_backend_utils`` so its batching
logic (concatenate the dynamic batcher's requests, split the outputs back, isolate a bad
request) is tested deterministically; the integration tier runs it inside real Triton.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from braid.api.common import TensorSpec
from braid.render.triton_config import render_model_config
from braid.tooling.triton_repository import (
    example_batch,
    runner_source,
    torch_datatype,
    write_onnx_model,
)

X = TensorSpec(name="X", datatype="FP32", shape=[4])
Y = TensorSpec(name="Y", datatype="FP32", shape=[2])
Z = TensorSpec(name="Z", datatype="FP32", shape=[4])


class TwoHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.a(x), x * 2


def test_export_writes_config_runner_and_an_onnx_file_with_a_dynamic_batch(
    tmp_path: Path,
) -> None:
    torch.manual_seed(0)
    module = TwoHeads().eval()
    model_dir = write_onnx_model(tmp_path, "two", module, [X], [Y, Z], max_batch_size=4)
    assert model_dir == tmp_path / "two"
    expected_config = render_model_config(
        "two",
        [X],
        [Y, Z],
        4,
        parameters={"intra_op_threads": "1", "onnx_file": "model.onnx"},
    )
    assert (model_dir / "config.pbtxt").read_text() == expected_config
    assert (model_dir / "1" / "model.py").read_text() == runner_source()
    session = ort.InferenceSession(str(model_dir / "1" / "model.onnx"))
    # The graph's names are the config's: what Triton's native onnxruntime backend needs.
    assert [i.name for i in session.get_inputs()] == ["X"]
    assert [o.name for o in session.get_outputs()] == ["Y", "Z"]
    x = torch.randn(3, 4)  # exported at batch 1 from zeros: the batch axis is dynamic
    got = session.run(None, {"X": x.numpy()})
    with torch.no_grad():
        want = module(x)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w.numpy(), rtol=1e-6, atol=1e-6)


def test_export_copies_a_saved_file_and_exports_with_examples(tmp_path: Path) -> None:
    module = nn.Linear(4, 2).eval()
    exported_dir = write_onnx_model(
        tmp_path, "exported", module, [X], [Y], 0, example_inputs=(torch.zeros(1, 4),), version=3
    )
    artifact = exported_dir / "3" / "model.onnx"
    copied_dir = write_onnx_model(tmp_path, "copied", artifact, [X], [Y], 0)
    assert (copied_dir / "1" / "model.onnx").read_bytes() == artifact.read_bytes()
    assert "dynamic_batching" not in (copied_dir / "config.pbtxt").read_text()
    # A model that does not batch keeps a fixed first axis.
    (shape,) = [i.shape for i in ort.InferenceSession(str(artifact)).get_inputs()]
    assert shape == [1, 4]


def test_example_batch_follows_the_input_specs() -> None:
    ids = TensorSpec(name="IDS", datatype="INT64", shape=[-1, 8])
    (image, tokens) = example_batch([X, ids])
    assert (image.shape, image.dtype) == ((1, 4), torch.float32)
    assert (tokens.shape, tokens.dtype) == ((1, 1, 8), torch.int64)


def test_export_refuses_version_zero(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="versions start at 1"):
        write_onnx_model(tmp_path, "m", nn.Linear(4, 2), [X], [Y], 0, version=0)


def test_torch_datatypes() -> None:
    assert torch_datatype(torch.float32) == "FP32"
    assert torch_datatype(torch.int64) == "INT64"
    with pytest.raises(ValueError, match="no Triton datatype"):
        torch_datatype(torch.complex64)


# --- the runner, with a stand-in for Triton's Python-backend utilities ---------------------


class FakeTensor:
    def __init__(self, name: str, array: np.ndarray) -> None:
        self.name = name
        self.array = array

    def as_numpy(self) -> np.ndarray:
        return self.array


class FakeResponse:
    def __init__(self, output_tensors: list[FakeTensor], error: Any = None) -> None:
        self.outputs = {t.name: t.array for t in output_tensors}
        self.error = error


def _fake_pb_utils() -> types.ModuleType:
    module = types.ModuleType("triton_python_backend_utils")
    module.Tensor = FakeTensor  # type: ignore[attr-defined]
    module.InferenceResponse = FakeResponse  # type: ignore[attr-defined]
    module.TritonError = str  # type: ignore[attr-defined]
    module.triton_string_to_numpy = {"TYPE_FP32": np.float32}.__getitem__  # type: ignore[attr-defined]
    module.get_input_tensor_by_name = lambda request, name: request[name]  # type: ignore[attr-defined]
    return module


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """An initialised ``TritonPythonModel`` serving ``TwoHeads`` (max_batch_size 8)."""
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", _fake_pb_utils())
    torch.manual_seed(0)
    write_onnx_model(tmp_path, "two", TwoHeads(), [X], [Y, Z], max_batch_size=8)
    spec = importlib.util.spec_from_file_location("runner_under_test", tmp_path / "two/1/model.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "runner_under_test", module)
    spec.loader.exec_module(module)
    config = {
        "max_batch_size": 8,
        "input": [{"name": "X", "data_type": "TYPE_FP32"}],
        "output": [
            {"name": "Y", "data_type": "TYPE_FP32"},
            {"name": "Z", "data_type": "TYPE_FP32"},
        ],
        "parameters": {"intra_op_threads": {"string_value": "1"}},
    }
    model = module.TritonPythonModel()
    model.initialize(
        {
            "model_config": json.dumps(config),
            "model_repository": str(tmp_path / "two"),
            "model_version": "1",
        }
    )
    return model


def _request(rows: int, seed: int) -> dict[str, FakeTensor]:
    array = np.random.default_rng(seed).standard_normal((rows, 4)).astype(np.float32)
    return {"X": FakeTensor("X", array)}


def test_runner_splits_a_merged_batch_back_per_request(runner: Any) -> None:
    requests = [_request(1, 1), _request(3, 2), _request(2, 3)]
    responses = runner.execute(requests)
    assert len(responses) == 3
    for request, response in zip(requests, responses, strict=True):
        x = request["X"].array
        assert response.error is None
        assert response.outputs["Y"].shape == (x.shape[0], 2)
        np.testing.assert_allclose(response.outputs["Z"], x * 2, rtol=1e-6)
        solo = runner.execute([request])[0]
        np.testing.assert_allclose(response.outputs["Y"], solo.outputs["Y"], rtol=1e-5, atol=1e-6)


def test_runner_fails_only_the_bad_request(runner: Any) -> None:
    bad = {"X": FakeTensor("X", np.zeros((1, 3), dtype=np.float32))}
    responses = runner.execute([_request(2, 1), bad, _request(1, 2)])
    assert [r.error is None for r in responses] == [True, False, True]
    # onnxruntime refuses the wrong shape; the error names the input.
    assert "InvalidArgument" in responses[1].error
    assert "X" in responses[1].error


def test_runner_never_imports_torch() -> None:
    # The Triton runtime image has no torch: the runner may import only what it holds.
    tree = ast.parse(runner_source())
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {
        (node.module or "").split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
    }
    assert imported == {
        "__future__",
        "json",
        "os",
        "typing",
        "numpy",
        "onnxruntime",
        "triton_python_backend_utils",
    }


def test_runner_puts_a_gpu_instance_on_its_cuda_device(runner: Any) -> None:
    module = sys.modules[type(runner).__module__]
    gpu = {"model_instance_kind": "GPU", "model_instance_device_id": "2"}
    cuda = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert module.instance_providers(gpu, cuda) == [
        ("CUDAExecutionProvider", {"device_id": 2}),
        "CPUExecutionProvider",
    ]
    assert module.instance_providers({"model_instance_kind": "CPU"}, cuda) == [
        "CPUExecutionProvider"
    ]


def test_runner_refuses_a_gpu_instance_without_the_cuda_provider(runner: Any) -> None:
    module = sys.modules[type(runner).__module__]
    with pytest.raises(RuntimeError, match="install onnxruntime-gpu"):
        module.instance_providers({"model_instance_kind": "GPU"}, ["CPUExecutionProvider"])


def test_runner_refuses_a_session_that_fell_back_to_the_cpu(runner: Any) -> None:
    module = sys.modules[type(runner).__module__]
    asked = [("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"]
    module.check_session_device(asked, ["CUDAExecutionProvider", "CPUExecutionProvider"])
    module.check_session_device(["CPUExecutionProvider"], ["CPUExecutionProvider"])
    with pytest.raises(RuntimeError, match="could not start CUDAExecutionProvider"):
        module.check_session_device(asked, ["CPUExecutionProvider"])


def test_runner_refuses_a_config_whose_names_the_graph_lacks(runner: Any, tmp_path: Path) -> None:
    config = {
        "max_batch_size": 8,
        "input": [{"name": "INPUT__0", "data_type": "TYPE_FP32"}],
        "output": [{"name": "Y", "data_type": "TYPE_FP32"}],
    }
    with pytest.raises(ValueError, match="INPUT__0"):
        type(runner)().initialize(
            {
                "model_config": json.dumps(config),
                "model_repository": str(tmp_path / "two"),
                "model_version": "1",
            }
        )
