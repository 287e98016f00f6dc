"""A real tritonserver serves exported ONNX models with the outputs torch computes.

Tolerance: rtol=1e-5, atol=1e-6 (float32). The server runs the module's exported ONNX graph
in onnxruntime, with one intra-op thread and possibly several requests concatenated into one batch, so the
order of floating-point sums may differ from the in-process reference.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcaio
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from braid_dev.stack.triton import TritonServer

from .conftest import CONV_MODEL, LINEAR_MODEL, TinyRepository

RTOL = 1e-5
ATOL = 1e-6

# name -> (input name, per-sample input shape, output names in the module's order)
SIGNATURES: dict[str, tuple[str, tuple[int, ...], tuple[str, ...]]] = {
    LINEAR_MODEL: ("INPUT__0", (16,), ("OUTPUT__0",)),
    CONV_MODEL: ("IMAGE", (3, 8, 8), ("LOGITS", "FEATURES")),
}


def reference(repo: TinyRepository, model: str, x: np.ndarray) -> dict[str, np.ndarray]:
    """The outputs of the original (un-exported) torch module, run in this process."""
    with torch.no_grad():
        result = repo.modules[model](torch.from_numpy(x))
    tensors = result if isinstance(result, tuple) else (result,)
    return {name: t.numpy() for name, t in zip(SIGNATURES[model][2], tensors, strict=True)}


def sample(model: str, batch: int, seed: int) -> np.ndarray:
    shape = (batch, *SIGNATURES[model][1])
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.fixture(scope="module")
def http_client(triton_server: TritonServer) -> Iterator[httpclient.InferenceServerClient]:
    client = httpclient.InferenceServerClient(triton_server.http_address)
    yield client
    client.close()


@pytest.fixture(scope="module")
def grpc_client(triton_server: TritonServer) -> Iterator[grpcclient.InferenceServerClient]:
    client = grpcclient.InferenceServerClient(triton_server.grpc_address)
    yield client
    client.close()


def test_server_is_ours_and_every_model_is_ready(
    triton_server: TritonServer,
    http_client: httpclient.InferenceServerClient,
    grpc_client: grpcclient.InferenceServerClient,
) -> None:
    assert http_client.get_server_metadata()["name"] == triton_server.server_id
    assert grpc_client.get_server_metadata().name == triton_server.server_id
    assert set(triton_server.models) == {LINEAR_MODEL, CONV_MODEL}
    for model in triton_server.models:
        assert http_client.is_model_ready(model)
        assert grpc_client.is_model_ready(model)
    assert triton_server.probe()


@pytest.mark.parametrize("model", [LINEAR_MODEL, CONV_MODEL])
def test_http_binary_outputs_equal_torch(
    model: str,
    tiny_model_repository: TinyRepository,
    http_client: httpclient.InferenceServerClient,
) -> None:
    input_name, _, output_names = SIGNATURES[model]
    x = sample(model, batch=3, seed=1)
    infer_input = httpclient.InferInput(input_name, list(x.shape), "FP32")
    infer_input.set_data_from_numpy(x, binary_data=True)
    result = http_client.infer(
        model,
        [infer_input],
        outputs=[httpclient.InferRequestedOutput(n, binary_data=True) for n in output_names],
    )
    for name, expected in reference(tiny_model_repository, model, x).items():
        np.testing.assert_allclose(result.as_numpy(name), expected, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("model", [LINEAR_MODEL, CONV_MODEL])
def test_grpc_outputs_equal_torch(
    model: str,
    tiny_model_repository: TinyRepository,
    grpc_client: grpcclient.InferenceServerClient,
) -> None:
    input_name, _, output_names = SIGNATURES[model]
    x = sample(model, batch=2, seed=2)
    infer_input = grpcclient.InferInput(input_name, list(x.shape), "FP32")
    infer_input.set_data_from_numpy(x)
    result = grpc_client.infer(
        model, [infer_input], outputs=[grpcclient.InferRequestedOutput(n) for n in output_names]
    )
    for name, expected in reference(tiny_model_repository, model, x).items():
        np.testing.assert_allclose(result.as_numpy(name), expected, rtol=RTOL, atol=ATOL)


async def test_concurrent_requests_each_get_their_own_outputs(
    triton_server: TritonServer, tiny_model_repository: TinyRepository
) -> None:
    """The dynamic batcher may merge these into one forward pass; every caller must still get
    exactly the rows that belong to its own request."""
    model = CONV_MODEL
    input_name, _, output_names = SIGNATURES[model]
    inputs = [sample(model, batch=1 + i % 3, seed=100 + i) for i in range(16)]
    async with grpcaio.InferenceServerClient(triton_server.grpc_address) as client:

        async def one(x: np.ndarray) -> dict[str, np.ndarray]:
            infer_input = grpcaio.InferInput(input_name, list(x.shape), "FP32")
            infer_input.set_data_from_numpy(x)
            result = await client.infer(model, [infer_input])
            return {name: result.as_numpy(name) for name in output_names}

        results = await asyncio.gather(*(one(x) for x in inputs))
    for x, got in zip(inputs, results, strict=True):
        for name, expected in reference(tiny_model_repository, model, x).items():
            np.testing.assert_allclose(got[name], expected, rtol=RTOL, atol=ATOL)


def test_wrong_input_shape_is_refused_and_server_stays_healthy(
    triton_server: TritonServer, http_client: httpclient.InferenceServerClient
) -> None:
    x = np.zeros((1, 15), dtype=np.float32)  # the model takes 16 features
    infer_input = httpclient.InferInput("INPUT__0", list(x.shape), "FP32")
    infer_input.set_data_from_numpy(x, binary_data=True)
    with pytest.raises(InferenceServerException, match="shape"):
        http_client.infer(LINEAR_MODEL, [infer_input])
    assert triton_server.probe()
