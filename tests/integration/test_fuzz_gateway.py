"""Fuzzing the gateway: schemathesis over its OpenAPI, malformed binary tensors, raw gRPC.

The gateway runs as a process of its own in front of the session's healthy Triton servers,
so every 5xx counts (no upstream is down to excuse one), a crash is the gateway's, and its
memory and open descriptors are read from /proc before and after. The campaigns are the ones
``bench/reliability.py`` runs at full size; here they run smaller.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from braid.api.routing import single_path_table
from braid.dataplane.routing import write_routing_table
from braid_dev import synthetic as syn
from braid_dev.local_runtime import LocalRuntime
from braid_dev.reliability.fuzz_grpc import MODEL_INFER, run_grpc_fuzz
from braid_dev.reliability.fuzz_rest import (
    require_loopback,
    run_binary_tensor_fuzz,
    run_schemathesis,
)
from braid_dev.reliability.report import FuzzTally
from braid_dev.stack.gateway_process import GatewayProcess, start_gateway_process
from braid_dev.synthetic import SyntheticModels

pytestmark = pytest.mark.integration

MAX_BODY_MIB = 1.0
SCHEMATHESIS_CASES = 150
BINARY_CASES = 1000
GRPC_CASES = 1000
CONCURRENCY = 8
"""Requests in flight at once (one of them a valid companion): bad ones meet good ones at the
same (coalesced) hop calls."""
RSS_GROWTH_LIMIT = 64 * 2**20
"""Allocator arenas and caches settle after warm-up; a per-request leak over 1,000 cases of
up to a few hundred KiB each would pass it many times over."""


@pytest.fixture(scope="module")
def gateway_process(
    synthetic_models: SyntheticModels,
    local_runtime: LocalRuntime,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[GatewayProcess]:
    routing = tmp_path_factory.mktemp("fuzz") / "routing.json"
    write_routing_table(single_path_table(syn.LOCAL, syn.ORIGINAL), routing)
    gateway = start_gateway_process(
        synthetic_models.catalog_path,
        local_runtime.endpoints.servers,
        routing,
        extra=["--max-body-mib", str(MAX_BODY_MIB)],
    )
    try:
        yield gateway
    finally:
        gateway.stop()


def _url(gateway: GatewayProcess) -> str:
    return f"http://{gateway.http_address}"


def _assert_clean(tally: FuzzTally, cases: int) -> None:
    examples = {k: v for k, v in tally.notes.items() if k.startswith("example_5xx")}
    assert tally.cases >= cases
    assert tally.status_5xx == 0, examples
    assert tally.crashes == 0
    assert tally.notes["fds_after"] <= tally.notes["fds_before"] + 2
    assert tally.rss_growth_mib is not None
    assert tally.rss_growth_mib * 2**20 < RSS_GROWTH_LIMIT


def _assert_good_requests_unharmed(tally: FuzzTally, cases: int) -> None:
    """Every window of malformed requests had a valid one in flight beside it; none of the
    valid ones failed because a bad one shared its (coalesced) call."""
    examples = {k: v for k, v in tally.notes.items() if k.startswith("example_5xx")}
    assert tally.good_sent >= cases // (CONCURRENCY - 1)
    assert tally.good_failed == 0, examples


def _warm_up(gateway: GatewayProcess) -> None:
    """A few cases first, so the 'before' figures are taken after the first-use allocations."""
    run_binary_tensor_fuzz(_url(gateway), syn.LOCAL, 40, seed=99)
    run_grpc_fuzz(gateway.grpc_address, syn.LOCAL, 40, seed=99)


def test_the_published_openapi_documents_the_infer_routes(gateway_process: GatewayProcess) -> None:
    document = httpx.get(f"{_url(gateway_process)}/openapi.json", timeout=30).json()
    infer = document["paths"]["/v2/models/{model}/infer"]["post"]
    params = {p["name"]: p for p in infer["parameters"]}
    assert params["model"]["schema"]["enum"] == [syn.LOCAL]
    assert {"Inference-Header-Content-Length", "braid-timeout-ms", "Content-Encoding"} <= set(
        params
    )
    body = infer["requestBody"]["content"]
    assert set(body) == {"application/json", "application/octet-stream"}
    assert {"200", "400", "404", "413", "503", "504"} <= set(infer["responses"])
    # The example is a request the gateway serves.
    example = body["application/json"]["example"]
    answer = httpx.post(f"{_url(gateway_process)}/v2/models/{syn.LOCAL}/infer", json=example)
    assert answer.status_code == 200, answer.text
    assert "/v2/models/{model}/versions/{version}/infer" in document["paths"]


def test_schemathesis_finds_no_5xx_crash_or_leak(gateway_process: GatewayProcess) -> None:
    _warm_up(gateway_process)
    tally = run_schemathesis(
        _url(gateway_process), SCHEMATHESIS_CASES, pid=gateway_process.process.pid
    )
    _assert_clean(tally, SCHEMATHESIS_CASES)
    assert tally.notes.get("status_200", 0) > 0  # some cases reached inference


def test_malformed_binary_tensors_get_4xx_not_5xx(gateway_process: GatewayProcess) -> None:
    _warm_up(gateway_process)
    tally = run_binary_tensor_fuzz(
        _url(gateway_process),
        syn.LOCAL,
        BINARY_CASES,
        pid=gateway_process.process.pid,
        concurrency=CONCURRENCY,
    )
    _assert_clean(tally, BINARY_CASES)
    _assert_good_requests_unharmed(tally, BINARY_CASES)
    assert tally.notes["status_400"] > 0
    assert tally.notes["status_413"] > 0  # over the 1 MiB body limit, or inflating past it
    assert tally.notes["status_200"] > 0


def test_malformed_grpc_messages_get_status_codes_not_internal(
    gateway_process: GatewayProcess,
) -> None:
    _warm_up(gateway_process)
    tally = run_grpc_fuzz(
        gateway_process.grpc_address,
        syn.LOCAL,
        GRPC_CASES,
        pid=gateway_process.process.pid,
        concurrency=CONCURRENCY,
    )
    _assert_clean(tally, GRPC_CASES)
    _assert_good_requests_unharmed(tally, GRPC_CASES)
    assert tally.notes["INVALID_ARGUMENT"] > 0
    assert tally.notes["RESOURCE_EXHAUSTED"] > 0  # over the 1 MiB message limit
    assert tally.notes["OK"] > 0


def test_undecodable_grpc_bytes_are_invalid_argument_not_unknown(
    gateway_process: GatewayProcess,
) -> None:
    """grpc answered bytes its deserializer could not parse with UNKNOWN (a server-failure
    code); found by fuzzing ModelInfer with raw bytes."""
    with grpc.insecure_channel(gateway_process.grpc_address) as channel:
        infer = channel.unary_unary(MODEL_INFER)
        with pytest.raises(grpc.RpcError) as caught:
            infer(b"\xff\xff\xff\xff garbage", timeout=30)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "cannot be decoded" in str(caught.value.details())
        metadata = channel.unary_unary("/inference.GRPCInferenceService/ServerMetadata")
        with pytest.raises(grpc.RpcError) as caught:
            metadata(b"\x0a", timeout=30)  # a truncated field
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize(
    ("budget_ms", "status"),
    [("1e30", 200), ("inf", 200), ("60000", 200), ("nan", 400), ("0", 400), ("-5", 400),
     ("soon", 400)],
)  # fmt: skip
def test_the_timeout_header_is_bounded_and_checked(
    gateway_process: GatewayProcess, budget_ms: str, status: int
) -> None:
    """A huge budget is capped (it overflowed gRPC's deadline: an instant 504), a meaningless
    one is refused before any inference."""
    example = httpx.get(f"{_url(gateway_process)}/openapi.json", timeout=30).json()["paths"][
        "/v2/models/{model}/infer"
    ]["post"]["requestBody"]["content"]["application/json"]["example"]
    answer = httpx.post(
        f"{_url(gateway_process)}/v2/models/{syn.LOCAL}/infer",
        json=example,
        headers={"braid-timeout-ms": budget_ms},
        timeout=60,
    )
    assert answer.status_code == status, answer.text


def test_fuzzers_refuse_targets_off_loopback() -> None:
    require_loopback("http://127.0.0.1:8000")
    require_loopback("[::1]:8001")
    with pytest.raises(ValueError, match="loopback"):
        require_loopback("http://example.com:8000")


SECRET = "sEcReT-bearer-4b1d-do-not-log"
TENSOR_MARKER = b"TENSOR-MARKER-e1f2"


def _marked_tensor() -> np.ndarray:
    """A valid input whose bytes spell a marker (the rest random), to find it in a log."""
    raw = bytearray(np.random.default_rng(7).random(64).astype(np.float32).tobytes())
    raw[: len(TENSOR_MARKER)] = TENSOR_MARKER
    return np.frombuffer(bytes(raw), dtype=np.float32).reshape(1, 1, 8, 8)


def test_no_tensor_or_secret_reaches_the_gateways_log(
    synthetic_models: SyntheticModels, local_runtime: LocalRuntime, tmp_path: Path
) -> None:
    """A verbose gateway (every event logged) serves requests that carry a recognizable
    tensor and a bearer token, good and bad ones over both protocols: neither is logged."""
    routing = tmp_path / "routing.json"
    write_routing_table(single_path_table(syn.LOCAL, syn.ORIGINAL), routing)
    gateway = start_gateway_process(
        synthetic_models.catalog_path, local_runtime.endpoints.servers, routing, ["--verbose"]
    )
    x = _marked_tensor()
    auth = {"Authorization": f"Bearer {SECRET}", "x-api-key": SECRET}
    try:
        url = f"http://{gateway.http_address}/v2/models/{syn.LOCAL}/infer"
        header = {
            "id": "req-1",
            "inputs": [
                {
                    "name": "INPUT__0",
                    "datatype": "FP32",
                    "shape": [1, 1, 8, 8],
                    "parameters": {"binary_data_size": x.nbytes},
                }
            ],
        }
        encoded = json.dumps(header).encode()
        binary = {"Inference-Header-Content-Length": str(len(encoded))}
        ok = httpx.post(url, content=encoded + x.tobytes(), headers=auth | binary, timeout=30)
        assert ok.status_code == 200
        header["inputs"][0]["shape"] = [1, 1, 64]  # wrong shape: the error path
        encoded = json.dumps(header).encode()
        binary = {"Inference-Header-Content-Length": str(len(encoded))}
        bad = httpx.post(url, content=encoded + x.tobytes(), headers=auth | binary, timeout=30)
        assert bad.status_code == 400
        as_json = {"inputs": [{"name": "INPUT__0", "datatype": "FP32", "shape": [1, 1, 8, 8],
                               "data": x.reshape(-1).tolist()}]}  # fmt: skip
        assert httpx.post(url, json=as_json, headers=auth, timeout=30).status_code == 200
        client = grpcclient.InferenceServerClient(gateway.grpc_address)
        tensor = grpcclient.InferInput("INPUT__0", [1, 1, 8, 8], "FP32")
        tensor.set_data_from_numpy(x)
        client.infer(syn.LOCAL, [tensor], headers={"authorization": f"Bearer {SECRET}"})
        client.close()
    finally:
        gateway.stop()
    log = "\n".join(gateway.log)
    assert "gateway.started" in log or "rest.app_created" in log  # the log is verbose
    raw = x.tobytes()
    for needle in (
        SECRET,
        TENSOR_MARKER.decode(),
        raw[:16].hex(),
        base64.b64encode(raw[:24]).decode(),
        repr(float(x.reshape(-1)[10])),
        str(x.reshape(-1)[10]),
    ):
        assert needle not in log, needle


def test_the_gateway_still_serves_after_the_fuzzing(
    gateway_process: GatewayProcess, tmp_path: Path
) -> None:
    assert gateway_process.process.poll() is None
    ready = httpx.get(f"{_url(gateway_process)}/v2/health/ready", timeout=30)
    assert ready.status_code == 200
