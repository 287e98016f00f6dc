"""The gateway's pure parts: error mapping, request validation, REST and gRPC codecs."""

from __future__ import annotations

import gzip
import json
import zlib

import grpc
import numpy as np
import pytest
from tritonclient.grpc import service_pb2

from braid.api.common import TensorSpec
from braid.dataplane.errors import InferenceError, Reason, grpc_code, http_status
from braid.dataplane.grpc_server import request_from_proto, response_to_proto
from braid.dataplane.rest import _decompress, encode_infer_response, parse_infer_request
from braid.dataplane.tensors import (
    InferRequest,
    InferResponse,
    Tensor,
    max_softmax,
    scatter_rows,
    take_rows,
    validate_request,
)

SPEC_IN = TensorSpec(name="INPUT__0", datatype="FP32", shape=[1, 2, 2])
SPEC_OUT = TensorSpec(name="OUTPUT__0", datatype="FP32", shape=[3])


def rest_body(
    header: dict[str, object], *chunks: bytes, header_length: bool = True
) -> tuple[bytes, int | None]:
    encoded = json.dumps(header).encode()
    return encoded + b"".join(chunks), (len(encoded) if header_length else None)


def binary_input(array: np.ndarray, name: str = "INPUT__0") -> dict[str, object]:
    return {
        "name": name,
        "datatype": "FP32",
        "shape": list(array.shape),
        "parameters": {"binary_data_size": array.nbytes},
    }


# -- errors ------------------------------------------------------------------------------


def test_every_reason_has_both_statuses_and_client_mistakes_are_4xx() -> None:
    client = {
        Reason.BAD_REQUEST,
        Reason.TRUNCATED,
        Reason.TOO_LARGE,
        Reason.SLOW_BODY,
        Reason.UNKNOWN_MODEL,
        Reason.UNKNOWN_PATH,
        Reason.UNSUPPORTED,
    }
    for reason in Reason:
        assert isinstance(grpc_code(reason), grpc.StatusCode)
        assert (400 <= http_status(reason) < 500) == (
            reason in client or reason is Reason.CANCELLED
        )
    assert grpc_code(Reason.BAD_REQUEST) is grpc.StatusCode.INVALID_ARGUMENT
    assert http_status(Reason.DEADLINE) == 504
    assert str(InferenceError(Reason.UNKNOWN_PATH, "x")) == "unknown_path: x"


# -- validation --------------------------------------------------------------------------


def request_of(tensor: Tensor, outputs: list[str] | None = None) -> InferRequest:
    return InferRequest(model="m", inputs=[tensor], requested_outputs=outputs)


def test_a_well_formed_request_gives_its_batch_size() -> None:
    x = np.zeros((3, 1, 2, 2), np.float32)
    tensor = Tensor("INPUT__0", "FP32", x.shape, x.tobytes())
    assert validate_request(request_of(tensor), [SPEC_IN], [SPEC_OUT], 8) == 3


@pytest.mark.parametrize(
    ("tensor", "outputs", "message"),
    [
        (Tensor("INPUT__0", "FP64", (1, 1, 2, 2), bytes(32)), None, "datatype FP64"),
        (Tensor("INPUT__0", "FP32", (1, 2, 2), bytes(16)), None, "has 3 dims"),
        (Tensor("INPUT__0", "FP32", (1, 1, 2, 3), bytes(24)), None, "does not match"),
        (Tensor("INPUT__0", "FP32", (1, 1, 2, 2), bytes(15)), None, "15 bytes"),
        (Tensor("INPUT__0", "FP32", (9, 1, 2, 2), bytes(144)), None, "batch size 9"),
        (Tensor("INPUT__0", "FP32", (0, 1, 2, 2), b""), None, "batch size 0"),
        (Tensor("IMAGE", "FP32", (1, 1, 2, 2), bytes(16)), None, "unknown \\['IMAGE'\\]"),
        (Tensor("INPUT__0", "FP32", (1, 1, 2, 2), bytes(16)), ["PROBS"], "no outputs"),
    ],
)
def test_bad_inputs_are_bad_requests_that_say_why(
    tensor: Tensor, outputs: list[str] | None, message: str
) -> None:
    with pytest.raises(InferenceError, match=message) as caught:
        validate_request(request_of(tensor, outputs), [SPEC_IN], [SPEC_OUT], 8)
    assert caught.value.reason is Reason.BAD_REQUEST


def test_max_softmax_is_stable_and_matches_the_definition() -> None:
    logits = np.array([[0, 0, 0], [1000, 0, 0], [1, 2, 3]], np.float32)
    conf = max_softmax(logits.tobytes(), "FP32", 3)
    expected = np.exp(3) / np.exp([1, 2, 3]).sum()
    np.testing.assert_allclose(conf, [1 / 3, 1.0, expected], rtol=1e-6)


def test_rows_are_taken_and_scattered_back_in_order() -> None:
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    odd, even = np.array([1, 3]), np.array([0, 2])
    parts = [(odd, take_rows(x.tobytes(), 4, odd)), (even, take_rows(x.tobytes(), 4, even))]
    assert np.frombuffer(scatter_rows(parts, 4), np.float32).reshape(4, 3).tolist() == x.tolist()


# -- REST codec --------------------------------------------------------------------------


def test_binary_request_is_decoded_without_json_tensors() -> None:
    x = np.arange(8, dtype=np.float32).reshape(2, 1, 2, 2)
    body, length = rest_body(
        {
            "id": "r1",
            "inputs": [binary_input(x)],
            "outputs": [{"name": "OUTPUT__0", "parameters": {"binary_data": True}}],
            "parameters": {"braid_path": "m/original", "timeout": 2500},
        },
        x.tobytes(),
    )
    decoded = parse_infer_request(body, length, "m")
    tensor = decoded.request.inputs[0]
    assert tensor.data == x.tobytes()
    assert tensor.shape == (2, 1, 2, 2)
    assert decoded.request.path == "m/original"
    assert decoded.request.timeout_s == pytest.approx(0.0025)
    assert decoded.request.id == "r1"
    assert decoded.binary_outputs == {"OUTPUT__0": True}


def test_json_data_is_accepted_for_curl() -> None:
    body, _ = rest_body(
        {
            "inputs": [
                {"name": "INPUT__0", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}
            ]
        }
    )
    decoded = parse_infer_request(body, None, "m")
    assert np.frombuffer(decoded.request.inputs[0].data, np.float32).tolist() == [1, 2, 3, 4]
    assert decoded.request.requested_outputs is None


@pytest.mark.parametrize(
    ("header", "binary", "header_length", "reason", "message"),
    [
        (
            {"inputs": [binary_input(np.zeros(4, np.float32))]},
            bytes(8),
            None,
            Reason.TRUNCATED,
            "runs past",
        ),
        (
            {"inputs": [binary_input(np.zeros(4, np.float32))]},
            bytes(20),
            None,
            Reason.TRUNCATED,
            "4 bytes of binary",
        ),
        ({"inputs": []}, b"", None, Reason.BAD_REQUEST, "non-empty 'inputs'"),
        (
            {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1]}]},
            b"",
            None,
            Reason.BAD_REQUEST,
            "neither",
        ),
        (
            {"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1], "data": [1]}]},
            b"",
            None,
            Reason.BAD_REQUEST,
            "non-negative",
        ),
        (
            {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2], "data": [1]}]},
            b"",
            None,
            Reason.BAD_REQUEST,
            "needs 2",
        ),
        (
            {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": ["a"]}]},
            b"",
            None,
            Reason.BAD_REQUEST,
            "not a list of FP32",
        ),
        (
            {
                "inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}],
                "parameters": {"timeout": -1},
            },
            b"",
            None,
            Reason.BAD_REQUEST,
            "timeout",
        ),
        (
            {
                "inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}],
                "parameters": {"braid_path": 3},
            },
            b"",
            None,
            Reason.BAD_REQUEST,
            "braid_path",
        ),
        (
            {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}]},
            b"",
            10_000,
            Reason.TRUNCATED,
            "Inference-Header-Content-Length",
        ),
    ],
)
def test_malformed_rest_bodies_say_what_is_wrong(
    header: dict[str, object],
    binary: bytes,
    header_length: int | None,
    reason: Reason,
    message: str,
) -> None:
    body, length = rest_body(header, binary)
    with pytest.raises(InferenceError, match=message) as caught:
        parse_infer_request(body, header_length if header_length is not None else length, "m")
    assert caught.value.reason is reason


def test_a_header_that_is_not_json_is_a_bad_request() -> None:
    with pytest.raises(InferenceError, match="not valid JSON") as caught:
        parse_infer_request(b"\xff{", 2, "m")
    assert caught.value.reason is Reason.BAD_REQUEST


def make_response() -> InferResponse:
    y = np.array([[1, 2, 3]], np.float32)
    return InferResponse(
        model="m",
        outputs=[Tensor("OUTPUT__0", "FP32", y.shape, y.tobytes())],
        path="m/cross",
        served_by="m/original",
        fallback="host_unavailable",
        exits=0,
    )


def test_binary_response_puts_the_tensor_after_the_header() -> None:
    body, length = encode_infer_response(make_response(), {}, True)
    assert length is not None
    header = json.loads(body[:length])
    assert header["outputs"][0]["parameters"]["binary_data_size"] == 12
    assert np.frombuffer(body[length:], np.float32).tolist() == [1, 2, 3]
    assert header["parameters"] == {
        "braid_path": "m/original",
        "braid_routed_path": "m/cross",
        "braid_fallback": "host_unavailable",
    }


def test_json_response_when_the_client_asks_for_json() -> None:
    body, length = encode_infer_response(make_response(), {"OUTPUT__0": False}, True)
    assert length is None
    assert json.loads(body)["outputs"][0]["data"] == [1, 2, 3]


def test_compressed_bodies_inflate_within_the_limit() -> None:
    raw = b"x" * 1000
    assert _decompress(gzip.compress(raw), "gzip", 2000) == raw
    assert _decompress(zlib.compress(raw), "deflate", 2000) == raw
    with pytest.raises(InferenceError) as caught:
        _decompress(gzip.compress(raw), "gzip", 999)
    assert caught.value.reason is Reason.TOO_LARGE
    with pytest.raises(InferenceError) as caught:
        _decompress(raw, "br", 2000)
    assert caught.value.reason is Reason.UNSUPPORTED
    with pytest.raises(InferenceError) as caught:
        _decompress(gzip.compress(raw)[:-12], "gzip", 2000)
    assert caught.value.reason is Reason.TRUNCATED


# -- gRPC codec --------------------------------------------------------------------------


def test_grpc_request_with_raw_contents_and_deadline() -> None:
    x = np.ones((1, 1, 2, 2), np.float32)
    proto = service_pb2.ModelInferRequest(
        model_name="m",
        id="g1",
        inputs=[
            service_pb2.ModelInferRequest.InferInputTensor(
                name="INPUT__0", datatype="FP32", shape=[1, 1, 2, 2]
            )
        ],
        raw_input_contents=[x.tobytes()],
        parameters={
            "braid_path": service_pb2.InferParameter(string_param="m/skip"),
            "timeout": service_pb2.InferParameter(int64_param=5_000_000),
        },
    )
    request = request_from_proto(proto, time_remaining=0.25)
    assert request.inputs[0].data == x.tobytes()
    assert request.path == "m/skip"
    assert request.timeout_s == 0.25  # the tighter of deadline and timeout parameter
    assert request.requested_outputs is None


def test_grpc_typed_contents_become_raw_bytes() -> None:
    proto = service_pb2.ModelInferRequest(
        model_name="m",
        inputs=[
            service_pb2.ModelInferRequest.InferInputTensor(
                name="INPUT__0",
                datatype="FP32",
                shape=[1, 2],
                contents=service_pb2.InferTensorContents(fp32_contents=[1.5, 2.5]),
            )
        ],
    )
    request = request_from_proto(proto, None)
    assert np.frombuffer(request.inputs[0].data, np.float32).tolist() == [1.5, 2.5]


def test_grpc_raw_contents_must_match_the_inputs() -> None:
    proto = service_pb2.ModelInferRequest(
        model_name="m",
        inputs=[
            service_pb2.ModelInferRequest.InferInputTensor(name="a", datatype="FP32", shape=[1]),
            service_pb2.ModelInferRequest.InferInputTensor(name="b", datatype="FP32", shape=[1]),
        ],
        raw_input_contents=[bytes(4)],
    )
    with pytest.raises(InferenceError, match="one per input"):
        request_from_proto(proto, None)


def test_grpc_response_carries_raw_outputs_and_the_path() -> None:
    proto = response_to_proto(make_response(), None)
    assert np.frombuffer(proto.raw_output_contents[0], np.float32).tolist() == [1, 2, 3]
    assert list(proto.outputs[0].shape) == [1, 3]
    assert proto.parameters["braid_path"].string_param == "m/original"
    assert proto.parameters["braid_fallback"].string_param == "host_unavailable"
