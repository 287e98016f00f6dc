"""The KServe v2 REST front end (FastAPI), with Triton's binary tensor data extension.

With the extension a request body is a JSON header of ``Inference-Header-Content-Length``
bytes followed by the raw bytes of every input that declares ``binary_data_size``, in order;
the answer is built the same way. The gateway reads and writes only that form on its hot path
(JSON ``data`` lists are accepted and produced for curl, at a cost). The codec is a pair of
pure functions over bytes so every malformed body is unit-tested without a server.

The infer route takes the raw ``Request`` instead of a pydantic body: a body model would parse
and copy tensors as JSON, the very thing the binary extension exists to avoid.
"""

from __future__ import annotations

import asyncio
import json
import logging
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi import FastAPI, Request, Response
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from braid.dataplane.errors import InferenceError, Reason, bad_request
from braid.dataplane.openapi import (
    HEADER_LENGTH,
    PATH_PARAMETER,
    TIMEOUT_HEADER,
    add_infer_operations,
)
from braid.dataplane.service import InferenceService
from braid.dataplane.tensors import (
    NUMPY_DTYPE,
    InferRequest,
    InferResponse,
    ModelSignature,
    Tensor,
)
from braid.logs import log_event

logger = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024
DEFAULT_BODY_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class RestRequest:
    """A decoded request and how the client wants each output encoded."""

    request: InferRequest
    binary_outputs: dict[str, bool]
    binary_default: bool


def _json_header(body: bytes, header_length: int | None) -> tuple[dict[str, Any], memoryview]:
    if header_length is None:
        header_bytes, binary = body, memoryview(b"")
    else:
        if header_length < 0 or header_length > len(body):
            raise InferenceError(
                Reason.TRUNCATED,
                f"{HEADER_LENGTH} is {header_length} but the body has {len(body)} bytes",
            )
        view = memoryview(body)
        header_bytes, binary = bytes(view[:header_length]), view[header_length:]
    try:
        header = json.loads(header_bytes)
    except (ValueError, UnicodeDecodeError) as exc:
        raise bad_request(f"the request header is not valid JSON: {exc}") from None
    except RecursionError:
        # json's decoder recurses per nesting level: ~1,000 '[' were a 500 (found by fuzzing).
        raise bad_request("the request header is nested too deeply") from None
    if not isinstance(header, dict):
        raise bad_request("the request header must be a JSON object")
    return header, binary


def _shape(value: Any, name: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in value
    ):
        raise bad_request(f"input {name!r}: shape must be a list of non-negative integers")
    return tuple(value)


def _json_data(data: Any, datatype: str, shape: tuple[int, ...], name: str) -> bytes:
    """Tensor bytes from a JSON ``data`` list (the slow path, for curl and hand-written tests)."""
    dtype = NUMPY_DTYPE.get(datatype)
    if dtype is None:
        raise bad_request(f"input {name!r}: JSON data of {datatype} is not supported")
    try:
        array = np.asarray(data, dtype=dtype)
    except (ValueError, TypeError, OverflowError) as exc:
        raise bad_request(f"input {name!r}: data is not a list of {datatype}: {exc}") from None
    count = int(np.prod(shape))
    if array.size != count:
        raise bad_request(
            f"input {name!r}: {array.size} values of data, shape {list(shape)} needs {count}"
        )
    encoded: bytes = array.tobytes()
    return encoded


def _parameters(obj: dict[str, Any], where: str) -> dict[str, Any]:
    params = obj.get("parameters", {})
    if not isinstance(params, dict):
        raise bad_request(f"{where}: parameters must be a JSON object")
    return params


def parse_infer_request(
    body: bytes, header_length: int | None, model: str, version: str = ""
) -> RestRequest:
    """Decode a KServe v2 REST infer body (JSON, or JSON + binary tensor data)."""
    header, binary = _json_header(body, header_length)
    raw_inputs = header.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise bad_request("the request needs a non-empty 'inputs' list")
    inputs: list[Tensor] = []
    offset = 0
    for raw in raw_inputs:
        if not isinstance(raw, dict):
            raise bad_request("each input must be a JSON object")
        name = raw.get("name")
        datatype = raw.get("datatype")
        if not isinstance(name, str) or not isinstance(datatype, str):
            raise bad_request("each input needs a 'name' and a 'datatype' string")
        shape = _shape(raw.get("shape"), name)
        params = _parameters(raw, f"input {name!r}")
        size = params.get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise bad_request(
                    f"input {name!r}: binary_data_size must be a non-negative integer"
                )
            if offset + size > len(binary):
                raise InferenceError(
                    Reason.TRUNCATED,
                    f"input {name!r}: binary_data_size {size} at offset {offset} runs past the "
                    f"{len(binary)} bytes of binary data",
                )
            data = bytes(binary[offset : offset + size])
            offset += size
        elif "data" in raw:
            data = _json_data(raw["data"], datatype, shape, name)
        else:
            raise bad_request(f"input {name!r} has neither 'data' nor binary_data_size")
        inputs.append(Tensor(name=name, datatype=datatype, shape=shape, data=data))
    if offset != len(binary):
        raise InferenceError(
            Reason.TRUNCATED,
            f"{len(binary) - offset} bytes of binary data follow the inputs' binary_data_size",
        )

    parameters = _parameters(header, "the request")
    binary_default = bool(parameters.get("binary_data_output", False))
    requested: list[str] | None = None
    binary_outputs: dict[str, bool] = {}
    raw_outputs = header.get("outputs")
    if raw_outputs is not None:
        if not isinstance(raw_outputs, list):
            raise bad_request("'outputs' must be a list")
        requested = []
        for raw in raw_outputs:
            if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
                raise bad_request("each requested output needs a 'name'")
            out_params = _parameters(raw, f"output {raw['name']!r}")
            requested.append(raw["name"])
            binary_outputs[raw["name"]] = bool(out_params.get("binary_data", binary_default))
    path = parameters.get(PATH_PARAMETER)
    if path is not None and not isinstance(path, str):
        raise bad_request(f"parameter {PATH_PARAMETER} must be a string")
    timeout_us = parameters.get("timeout")
    if timeout_us is not None and (
        not isinstance(timeout_us, int | float)
        or isinstance(timeout_us, bool)
        or not timeout_us > 0  # NaN (json reads it) too: a NaN budget marked servers down
    ):
        raise bad_request("parameter timeout must be a positive number of microseconds")
    request_id = header.get("id", "")
    return RestRequest(
        request=InferRequest(
            model=model,
            version=version,
            id=request_id if isinstance(request_id, str) else str(request_id),
            inputs=inputs,
            requested_outputs=requested,
            path=path,
            timeout_s=timeout_us * 1e-6 if timeout_us is not None else None,
        ),
        binary_outputs=binary_outputs,
        binary_default=binary_default,
    )


def encode_infer_response(
    response: InferResponse, binary_outputs: dict[str, bool], binary_default: bool
) -> tuple[bytes, int | None]:
    """The body of an infer answer, and its JSON header's length when binary data follows."""
    outputs = []
    chunks: list[bytes] = []
    wanted = set(binary_outputs) if binary_outputs else None
    for tensor in response.outputs:
        if wanted is not None and tensor.name not in wanted:
            continue
        entry: dict[str, Any] = {
            "name": tensor.name,
            "datatype": tensor.datatype,
            "shape": list(tensor.shape),
        }
        if binary_outputs.get(tensor.name, binary_default):
            entry["parameters"] = {"binary_data_size": len(tensor.data)}
            chunks.append(tensor.data)
        else:
            entry["data"] = tensor.numpy().reshape(-1).tolist()
        outputs.append(entry)
    header: dict[str, Any] = {
        "model_name": response.model,
        "model_version": response.version,
        "outputs": outputs,
        "parameters": response.response_parameters(),
    }
    if response.id:
        header["id"] = response.id
    encoded = json.dumps(header, separators=(",", ":")).encode()
    if not chunks:
        return encoded, None
    return b"".join([encoded, *chunks]), len(encoded)


def signature_json(signature: ModelSignature) -> dict[str, Any]:
    """KServe v2 model metadata; the batch dimension is shown as -1, as Triton does."""

    def tensors(specs: Any) -> list[dict[str, Any]]:
        return [{"name": s.name, "datatype": s.datatype, "shape": [-1, *s.shape]} for s in specs]

    return {
        "name": signature.name,
        "versions": list(signature.versions),
        "platform": signature.platform,
        "inputs": tensors(signature.inputs),
        "outputs": tensors(signature.outputs),
    }


def error_response(error: InferenceError) -> JSONResponse:
    """KServe v2's error body: ``{"error": message}``."""
    return JSONResponse({"error": str(error)}, status_code=error.http_status)


def _decompress(body: bytes, encoding: str, limit: int) -> bytes:
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "deflate"):
        raise InferenceError(Reason.UNSUPPORTED, f"Content-Encoding {encoding!r} is not supported")
    wbits = 16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise bad_request(f"the {encoding} body cannot be decompressed: {exc}") from None
    if len(out) > limit:
        raise InferenceError(Reason.TOO_LARGE, f"the body inflates to more than {limit} bytes")
    if not inflater.eof:
        raise InferenceError(Reason.TRUNCATED, f"the {encoding} body ends early")
    return out


async def read_body(
    request: Request, limit: int, timeout_s: float = DEFAULT_BODY_TIMEOUT_S
) -> bytes:
    """The request body, refusing more than ``limit`` bytes before reading them, and a body
    that has not fully arrived after ``timeout_s`` (a stalled upload held its connection and
    request task for good: enough of them exhaust the gateway's descriptors)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            length = int(declared)
        except ValueError:
            raise bad_request(f"Content-Length {declared!r} is not a number") from None
        if length > limit:
            raise InferenceError(
                Reason.TOO_LARGE, f"the body has {length} bytes, the limit is {limit}"
            )
    chunks: list[bytes] = []
    total = 0
    stream: AsyncIterator[bytes] = request.stream()
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in stream:
                total += len(chunk)
                if total > limit:
                    raise InferenceError(
                        Reason.TOO_LARGE, f"the body exceeds the limit of {limit} bytes"
                    )
                chunks.append(chunk)
    except TimeoutError:
        raise InferenceError(
            Reason.SLOW_BODY, f"the body did not arrive within {timeout_s:g} s ({total} bytes did)"
        ) from None
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    if declared is not None and len(body) != int(declared):
        raise InferenceError(
            Reason.TRUNCATED, f"the body has {len(body)} bytes, Content-Length says {declared}"
        )
    return body


def _header_length(request: Request) -> int | None:
    value = request.headers.get(HEADER_LENGTH)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise bad_request(f"{HEADER_LENGTH} {value!r} is not a number") from None


def _timeout_s(request: Request) -> float | None:
    value = request.headers.get(TIMEOUT_HEADER)
    if value is None:
        return None
    try:
        ms = float(value)
    except ValueError:
        raise bad_request(f"{TIMEOUT_HEADER} {value!r} is not a number") from None
    if not ms > 0:
        raise bad_request(f"{TIMEOUT_HEADER} must be positive")
    return ms * 1e-3


def create_rest_app(
    service: InferenceService,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S,
    registry: CollectorRegistry | None = None,
) -> FastAPI:
    """The FastAPI app: KServe v2 routes over ``service`` plus ``/metrics``."""
    app = FastAPI(title="braid gateway", version=str(service.server_metadata()["version"]))
    metrics_registry = registry if registry is not None else service.metrics.registry

    @app.exception_handler(InferenceError)
    async def _inference_error(request: Request, exc: InferenceError) -> JSONResponse:
        service.record_error(request.path_params.get("model", ""), exc)
        return error_response(exc)

    @app.get("/v2")
    async def server_metadata() -> dict[str, object]:
        return service.server_metadata()

    @app.get("/v2/health/live")
    async def live() -> Response:
        return Response(status_code=200 if service.live else 503)

    @app.get("/v2/health/ready")
    async def ready() -> Response:
        return Response(status_code=200 if service.ready else 503)

    @app.get("/v2/models/{model}")
    @app.get("/v2/models/{model}/versions/{version}")
    async def model_metadata(model: str, version: str = "") -> dict[str, Any]:
        return signature_json(service.signature(model, version))

    @app.get("/v2/models/{model}/ready")
    @app.get("/v2/models/{model}/versions/{version}/ready")
    async def model_ready(model: str, version: str = "") -> Response:
        return Response(status_code=200 if service.model_ready(model, version) else 503)

    @app.get("/v2/models/{model}/config")
    @app.get("/v2/models/{model}/versions/{version}/config")
    async def model_config(model: str, version: str = "") -> dict[str, Any]:
        sig = service.signature(model, version)
        return {
            "name": sig.name,
            "platform": sig.platform,
            "max_batch_size": sig.max_batch_size,
            "input": [
                {"name": s.name, "data_type": f"TYPE_{s.datatype}", "dims": s.shape}
                for s in sig.inputs
            ],
            "output": [
                {"name": s.name, "data_type": f"TYPE_{s.datatype}", "dims": s.shape}
                for s in sig.outputs
            ],
        }

    async def infer(request: Request) -> Response:
        model = request.path_params["model"]
        version = request.path_params.get("version", "")
        service.executor(model, version)  # 404 before reading a body for nobody
        body = await read_body(request, max_body_bytes, body_timeout_s)
        body = _decompress(
            body, request.headers.get("content-encoding", "").lower(), max_body_bytes
        )
        decoded = parse_infer_request(body, _header_length(request), model, version)
        timeout = _timeout_s(request)
        if timeout is not None:
            current = decoded.request.timeout_s
            decoded.request.timeout_s = timeout if current is None else min(current, timeout)
        result = await service.infer(decoded.request)
        content, header_length = encode_infer_response(
            result, decoded.binary_outputs, decoded.binary_default
        )
        headers = {"braid-path": result.served_by or result.path}
        if result.fallback:
            headers["braid-fallback"] = result.fallback
        if header_length is not None:
            headers[HEADER_LENGTH] = str(header_length)
            return Response(content, headers=headers, media_type="application/octet-stream")
        return Response(content, headers=headers, media_type="application/json")

    # Plain routes, not FastAPI endpoints: no dependency resolution or body parsing per call.
    app.add_route("/v2/models/{model}/infer", infer, methods=["POST"])
    app.add_route("/v2/models/{model}/versions/{version}/infer", infer, methods=["POST"])

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(metrics_registry), media_type=CONTENT_TYPE_LATEST)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = add_infer_operations(
                get_openapi(title=app.title, version=app.version, routes=app.routes),
                {name: executor.signature() for name, executor in service.executors.items()},
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    log_event(logger, "rest.app_created", models=",".join(sorted(service.executors)))
    return app
