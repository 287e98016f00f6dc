"""The gateway speaks KServe v2 well enough that tritonclient's own clients work unchanged.

Conformance with tritonclient's HTTP and gRPC clients (sync, async and asyncio), binary
tensor data, outputs equal to the same path run in process with torch, and bad input
answered with a 4xx (or the gRPC equivalent) that names the problem.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import queue
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcaio
import tritonclient.http as httpclient
import tritonclient.http.aio as httpaio
from prometheus_client import CollectorRegistry
from tritonclient.utils import InferenceServerException

from braid.api.routing import single_path_table
from braid.dataplane.server import GatewayThread
from braid_dev import synthetic as syn
from braid_dev.local_runtime import LocalRuntime
from braid_dev.synthetic import SyntheticModels

from .gateway_support import (
    INPUT,
    MODEL,
    OUTPUT,
    gateway_over,
    grpc_input,
    grpc_parameters,
    inputs,
    sample_value,
)

MAX_BODY = 64 * 1024
PATHS = [syn.ORIGINAL, syn.SKIP, syn.CROSS, syn.EXIT]


@pytest.fixture(scope="module")
def gateway(
    synthetic_models: SyntheticModels,
    local_runtime: LocalRuntime,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[GatewayThread, CollectorRegistry]]:
    routing = tmp_path_factory.mktemp("routing") / "routing.json"
    with gateway_over(
        synthetic_models.catalog,
        local_runtime.endpoints,
        routing,
        single_path_table(MODEL, syn.ORIGINAL),
        max_body_bytes=MAX_BODY,
    ) as running:
        yield running


@pytest.fixture
def grpc_client(
    gateway: tuple[GatewayThread, CollectorRegistry],
) -> Iterator[grpcclient.InferenceServerClient]:
    assert gateway[0].gateway is not None
    client = grpcclient.InferenceServerClient(gateway[0].gateway.grpc_address)
    yield client
    client.close()


@pytest.fixture
def http_client(
    gateway: tuple[GatewayThread, CollectorRegistry],
) -> Iterator[httpclient.InferenceServerClient]:
    assert gateway[0].gateway is not None
    client = httpclient.InferenceServerClient(gateway[0].gateway.http_address, network_timeout=30)
    yield client
    client.close()


def http_url(gateway: tuple[GatewayThread, CollectorRegistry]) -> str:
    assert gateway[0].gateway is not None
    return gateway[0].gateway.http_url


# -- health and metadata -----------------------------------------------------------------


def test_grpc_health_and_metadata(grpc_client: grpcclient.InferenceServerClient) -> None:
    assert grpc_client.is_server_live()
    assert grpc_client.is_server_ready()
    assert grpc_client.is_model_ready(MODEL)
    assert grpc_client.is_model_ready(MODEL, "1")
    server = grpc_client.get_server_metadata(as_json=True)
    assert server["name"] == "braid-gateway"
    assert "binary_tensor_data" in server["extensions"]
    meta = grpc_client.get_model_metadata(MODEL, as_json=True)
    assert meta["name"] == MODEL
    assert meta["inputs"] == [{"name": INPUT, "datatype": "FP32", "shape": ["-1", "1", "8", "8"]}]
    assert meta["outputs"] == [{"name": OUTPUT, "datatype": "FP32", "shape": ["-1", "10"]}]
    config = grpc_client.get_model_config(MODEL, as_json=True)["config"]
    assert config["max_batch_size"] == 16


def test_http_health_and_metadata(http_client: httpclient.InferenceServerClient) -> None:
    assert http_client.is_server_live()
    assert http_client.is_server_ready()
    assert http_client.is_model_ready(MODEL)
    assert http_client.get_server_metadata()["name"] == "braid-gateway"
    meta = http_client.get_model_metadata(MODEL)
    assert meta["inputs"] == [{"name": INPUT, "datatype": "FP32", "shape": [-1, 1, 8, 8]}]
    assert meta["outputs"] == [{"name": OUTPUT, "datatype": "FP32", "shape": [-1, 10]}]
    assert meta["versions"] == ["1"]


# -- inference -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", PATHS)
def test_grpc_infer_equals_the_torch_path(
    grpc_client: grpcclient.InferenceServerClient, synthetic_models: SyntheticModels, path: str
) -> None:
    x = inputs(batch=3, seed=1)
    result = grpc_client.infer(
        MODEL,
        [grpc_input(x)],
        outputs=[grpcclient.InferRequestedOutput(OUTPUT)],
        parameters={"braid_path": path},
        request_id="req-7",
    )
    np.testing.assert_allclose(
        result.as_numpy(OUTPUT), synthetic_models.run_path(path, x), rtol=1e-5, atol=1e-6
    )
    assert grpc_parameters(result)["braid_path"] == path
    assert result.get_response().id == "req-7"


@pytest.mark.parametrize("path", PATHS)
def test_http_binary_infer_equals_the_torch_path(
    http_client: httpclient.InferenceServerClient, synthetic_models: SyntheticModels, path: str
) -> None:
    x = inputs(batch=2, seed=2)
    tensor = httpclient.InferInput(INPUT, list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=True)
    result = http_client.infer(
        MODEL,
        [tensor],
        outputs=[httpclient.InferRequestedOutput(OUTPUT, binary_data=True)],
        parameters={"braid_path": path},
    )
    np.testing.assert_allclose(
        result.as_numpy(OUTPUT), synthetic_models.run_path(path, x), rtol=1e-5, atol=1e-6
    )
    response = result.get_response()
    assert response["parameters"]["braid_path"] == path
    assert response["outputs"][0]["parameters"]["binary_data_size"] == 2 * 10 * 4


def test_http_json_tensors_work_too(
    http_client: httpclient.InferenceServerClient, synthetic_models: SyntheticModels
) -> None:
    x = inputs(seed=3)
    tensor = httpclient.InferInput(INPUT, list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=False)
    result = http_client.infer(
        MODEL, [tensor], outputs=[httpclient.InferRequestedOutput(OUTPUT, binary_data=False)]
    )
    assert "data" in result.get_response()["outputs"][0]
    np.testing.assert_allclose(
        result.as_numpy(OUTPUT), synthetic_models.run_path(syn.ORIGINAL, x), rtol=1e-5, atol=1e-6
    )


def test_grpc_async_infer_with_callbacks(
    grpc_client: grpcclient.InferenceServerClient, synthetic_models: SyntheticModels
) -> None:
    results: queue.Queue[tuple[int, object, object]] = queue.Queue()
    xs = [inputs(seed=10 + i) for i in range(8)]
    for i, x in enumerate(xs):
        grpc_client.async_infer(
            MODEL,
            [grpc_input(x)],
            callback=lambda result, error, i=i: results.put((i, result, error)),
            client_timeout=30,
        )
    for _ in xs:
        i, result, error = results.get(timeout=60)
        assert error is None
        assert isinstance(result, grpcclient.InferResult)
        np.testing.assert_allclose(
            result.as_numpy(OUTPUT),
            synthetic_models.run_path(syn.ORIGINAL, xs[i]),
            rtol=1e-5,
            atol=1e-6,
        )


def test_http_async_infer(
    http_client: httpclient.InferenceServerClient, synthetic_models: SyntheticModels
) -> None:
    xs = [inputs(seed=20 + i) for i in range(4)]
    pending = []
    for x in xs:
        tensor = httpclient.InferInput(INPUT, list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        pending.append(http_client.async_infer(MODEL, [tensor]))
    for x, handle in zip(xs, pending, strict=True):
        result = handle.get_result(timeout=60)
        np.testing.assert_allclose(
            result.as_numpy(OUTPUT),
            synthetic_models.run_path(syn.ORIGINAL, x),
            rtol=1e-5,
            atol=1e-6,
        )


def test_asyncio_clients_of_both_protocols(
    gateway: tuple[GatewayThread, CollectorRegistry], synthetic_models: SyntheticModels
) -> None:
    assert gateway[0].gateway is not None
    gw = gateway[0].gateway
    xs = [inputs(batch=2, seed=30 + i) for i in range(6)]

    async def run() -> list[np.ndarray]:
        g = grpcaio.InferenceServerClient(gw.grpc_address)
        # aiohttp asks for compressed answers by default; say identity, as with Triton.
        h = httpaio.InferenceServerClient(gw.http_address, conn_timeout=30)
        try:
            assert await g.is_server_ready()
            assert await h.is_server_ready()

            async def one_grpc(x: np.ndarray) -> np.ndarray:
                tensor = grpcaio.InferInput(INPUT, list(x.shape), "FP32")
                tensor.set_data_from_numpy(x)
                return (await g.infer(MODEL, [tensor], client_timeout=30)).as_numpy(OUTPUT)

            async def one_http(x: np.ndarray) -> np.ndarray:
                tensor = httpaio.InferInput(INPUT, list(x.shape), "FP32")
                tensor.set_data_from_numpy(x)
                result = await h.infer(MODEL, [tensor], headers={"Accept-Encoding": "identity"})
                return result.as_numpy(OUTPUT)

            calls = [one_grpc(x) if i % 2 else one_http(x) for i, x in enumerate(xs)]
            return list(await asyncio.gather(*calls))
        finally:
            await g.close()
            await h.close()

    for x, got in zip(xs, asyncio.run(run()), strict=True):
        np.testing.assert_allclose(
            got, synthetic_models.run_path(syn.ORIGINAL, x), rtol=1e-5, atol=1e-6
        )


def test_curl_style_json_request_and_metrics_endpoint(
    gateway: tuple[GatewayThread, CollectorRegistry],
) -> None:
    x = inputs(seed=4)
    body = {
        "inputs": [
            {
                "name": INPUT,
                "datatype": "FP32",
                "shape": list(x.shape),
                "data": x.reshape(-1).tolist(),
            }
        ]
    }
    with httpx.Client(base_url=http_url(gateway), timeout=30) as client:
        response = client.post(f"/v2/models/{MODEL}/infer", json=body)
        assert response.status_code == 200
        assert response.headers["braid-path"] == syn.ORIGINAL
        assert len(response.json()["outputs"][0]["data"]) == 10
        text = client.get("/metrics").text
    assert (
        f'braid_gateway_request_duration_seconds_count{{model="{MODEL}",path="{syn.ORIGINAL}"}}'
        in text
    )
    assert "braid_gateway_hop_duration_seconds_bucket" in text


# -- bad input -------------------------------------------------------------------------------


def post_binary(
    url: str, header: dict[str, object], binary: bytes, *, model: str = MODEL, **headers: str
) -> httpx.Response:
    encoded = json.dumps(header).encode()
    with httpx.Client(base_url=url, timeout=30) as client:
        return client.post(
            f"/v2/models/{model}/infer",
            content=encoded + binary,
            headers={"Inference-Header-Content-Length": str(len(encoded)), **headers},
        )


def binary_header(
    shape: list[int], size: int, datatype: str = "FP32", **params: object
) -> dict[str, object]:
    return {
        "inputs": [
            {
                "name": INPUT,
                "datatype": datatype,
                "shape": shape,
                "parameters": {"binary_data_size": size},
            }
        ],
        "parameters": params,
    }


@pytest.mark.parametrize(
    ("header", "binary", "status", "reason"),
    [
        (binary_header([1, 1, 8, 7], 224), bytes(224), 400, "does not match"),
        (binary_header([1, 1, 8, 8], 256, "FP16"), bytes(256), 400, "datatype FP16"),
        (binary_header([1, 1, 8, 8], 200), bytes(200), 400, "200 bytes of data"),
        (binary_header([1, 1, 8, 8], 256), bytes(100), 400, "truncated"),
        (binary_header([1, 1, 8, 8], 256), bytes(300), 400, "44 bytes of binary data follow"),
        (binary_header([1, 1, 8, 8], 256, braid_path="toy/nope"), bytes(256), 400, "unknown_path"),
        (binary_header([17, 1, 8, 8], 17 * 256), bytes(17 * 256), 400, "batch size 17"),
        (binary_header([1, 1, 8, 8], 256, timeout="soon"), bytes(256), 400, "timeout"),
    ],
)
def test_bad_rest_requests_get_4xx_with_the_reason(
    gateway: tuple[GatewayThread, CollectorRegistry],
    header: dict[str, object],
    binary: bytes,
    status: int,
    reason: str,
) -> None:
    response = post_binary(http_url(gateway), header, binary)
    assert response.status_code == status
    assert reason in response.json()["error"]


def test_unknown_model_version_and_route_are_404(
    gateway: tuple[GatewayThread, CollectorRegistry],
) -> None:
    url = http_url(gateway)
    response = post_binary(url, binary_header([1, 1, 8, 8], 256), bytes(256), model="resnet")
    assert response.status_code == 404
    assert "unknown model 'resnet'" in response.json()["error"]
    with httpx.Client(base_url=url, timeout=30) as client:
        assert client.get(f"/v2/models/{MODEL}/versions/3").status_code == 404
        assert client.get("/v2/models/resnet/ready").status_code == 404
        assert client.get("/v2/nothing").status_code == 404


def test_oversized_and_undecodable_bodies_are_refused_before_inference(
    gateway: tuple[GatewayThread, CollectorRegistry],
) -> None:
    url = http_url(gateway)
    big = bytes(MAX_BODY + 1)
    response = post_binary(url, binary_header([1, 1, 8, 8], len(big)), big)
    assert response.status_code == 413
    assert "too_large" in response.json()["error"]
    with httpx.Client(base_url=url, timeout=30) as client:
        not_json = client.post(f"/v2/models/{MODEL}/infer", content=b"{inputs: nope")
        assert not_json.status_code == 400
        assert "not valid JSON" in not_json.json()["error"]
        bad_length = client.post(
            f"/v2/models/{MODEL}/infer",
            content=b"{}",
            headers={"Inference-Header-Content-Length": "many"},
        )
        assert bad_length.status_code == 400
        zipped = client.post(
            f"/v2/models/{MODEL}/infer", content=b"xx", headers={"Content-Encoding": "br"}
        )
        assert zipped.status_code == 415


def test_bad_grpc_requests_get_the_matching_status(
    grpc_client: grpcclient.InferenceServerClient,
    gateway: tuple[GatewayThread, CollectorRegistry],
) -> None:
    registry = gateway[1]
    before = sample_value(registry, "braid_gateway_errors_total", model=MODEL, reason="bad_request")

    def status_of(call: object) -> tuple[str, str]:
        with pytest.raises(InferenceServerException) as caught:
            call()  # type: ignore[operator]
        return str(caught.value.status()), caught.value.message()

    wrong_shape = np.zeros((1, 1, 8, 7), np.float32)
    status, message = status_of(lambda: grpc_client.infer(MODEL, [grpc_input(wrong_shape)]))
    assert status == "StatusCode.INVALID_ARGUMENT"
    assert "does not match" in message
    wrong_type = grpcclient.InferInput(INPUT, [1, 1, 8, 8], "FP64")
    wrong_type.set_data_from_numpy(np.zeros((1, 1, 8, 8), np.float64))
    status, message = status_of(lambda: grpc_client.infer(MODEL, [wrong_type]))
    assert status == "StatusCode.INVALID_ARGUMENT"
    assert "FP64" in message
    x = inputs()
    status, message = status_of(lambda: grpc_client.infer("resnet", [grpc_input(x)]))
    assert status == "StatusCode.NOT_FOUND"
    status, message = status_of(
        lambda: grpc_client.infer(MODEL, [grpc_input(x)], parameters={"braid_path": "toy/nope"})
    )
    assert status == "StatusCode.INVALID_ARGUMENT"
    assert "unknown_path" in message
    status, message = status_of(
        lambda: grpc_client.infer(
            MODEL, [grpc_input(x)], outputs=[grpcclient.InferRequestedOutput("PROBS")]
        )
    )
    assert status == "StatusCode.INVALID_ARGUMENT"
    huge = np.zeros((1, 1, 8, 8 * 1024), np.float32)  # 256 KiB > the 64 KiB limit
    status, _ = status_of(lambda: grpc_client.infer(MODEL, [grpc_input(huge)]))
    assert status == "StatusCode.RESOURCE_EXHAUSTED"
    status, _ = status_of(lambda: grpc_client.get_model_metadata("resnet"))
    assert status == "StatusCode.NOT_FOUND"
    after = sample_value(registry, "braid_gateway_errors_total", model=MODEL, reason="bad_request")
    assert after - before == 3  # shape, dtype, output name (the unknown path has its own reason)
    assert (
        sample_value(registry, "braid_gateway_errors_total", model=MODEL, reason="unknown_path")
        >= 1
    )
    assert (
        sample_value(
            registry, "braid_gateway_errors_total", model="_unknown", reason="unknown_model"
        )
        >= 1
    )


def test_a_spent_deadline_is_reported_not_waited_for(
    grpc_client: grpcclient.InferenceServerClient, gateway: tuple[GatewayThread, CollectorRegistry]
) -> None:
    x = inputs()
    with pytest.raises(InferenceServerException) as caught:
        grpc_client.infer(MODEL, [grpc_input(x)], timeout=1)  # 1 µs, Triton's `timeout` parameter
    assert str(caught.value.status()) == "StatusCode.DEADLINE_EXCEEDED"
    response = post_binary(
        http_url(gateway),
        binary_header([1, 1, 8, 8], 256),
        x.tobytes(),
        **{"braid-timeout-ms": "0.001"},
    )
    assert response.status_code == 504
    assert "deadline" in response.json()["error"]


def test_an_idle_rest_connection_is_not_closed_under_a_reusing_client(
    gateway: tuple[GatewayThread, CollectorRegistry],
) -> None:
    """Client pools reuse a connection idle for seconds (aiohttp up to 15 s): the gateway
    must not close it first (uvicorn's default closes after 5 s, and the client's next
    request then fails to write)."""
    assert gateway[0].gateway is not None
    host, port = gateway[0].gateway.http_address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        statuses = []
        sockets = []
        for pause in (0, 6):  # 6 s: past uvicorn's default keep-alive
            time.sleep(pause)
            conn.request("GET", "/v2/health/live")
            response = conn.getresponse()
            response.read()
            statuses.append(response.status)
            sockets.append(conn.sock)
        assert statuses == [200, 200]
        assert sockets[0] is sockets[1]  # the same connection served both
    finally:
        conn.close()


def test_the_gateway_still_serves_after_all_that(
    grpc_client: grpcclient.InferenceServerClient,
) -> None:
    assert grpc_client.is_server_ready()
    assert grpc_client.infer(MODEL, [grpc_input(inputs())]).as_numpy(OUTPUT).shape == (1, 10)
