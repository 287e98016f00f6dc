"""The KServe v2 gRPC front end: Triton's ``GRPCInferenceService`` served with ``grpc.aio``.

The service definition is the one ``tritonclient`` ships (``service_pb2_grpc``), so a
``tritonclient.grpc`` client cannot tell the gateway from a Triton server. Tensors arrive in
``raw_input_contents`` and leave in ``raw_output_contents`` (the typed ``contents`` fields
are accepted too, for clients that use them). The gRPC deadline is the request's time budget.
Methods the gateway has no meaning for (shared memory, model control, tracing) answer
UNIMPLEMENTED, the generated servicer's default.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import numpy as np
from google.protobuf.message import DecodeError
from tritonclient.grpc import model_config_pb2, service_pb2, service_pb2_grpc

from braid.dataplane.errors import InferenceError, bad_request
from braid.dataplane.openapi import PATH_PARAMETER
from braid.dataplane.service import InferenceService
from braid.dataplane.tensors import (
    NUMPY_DTYPE,
    InferRequest,
    InferResponse,
    ModelSignature,
    Tensor,
)

logger = logging.getLogger(__name__)

# Typed ``contents`` field per datatype (the slow path; raw_input_contents is the fast one).
_CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
}


def _parameter_value(param: service_pb2.InferParameter) -> Any:
    kind = param.WhichOneof("parameter_choice")
    return None if kind is None else getattr(param, kind)


def _typed_contents(tensor: service_pb2.ModelInferRequest.InferInputTensor) -> bytes:
    field = _CONTENTS_FIELD.get(tensor.datatype)
    dtype = NUMPY_DTYPE.get(tensor.datatype)
    if field is None or dtype is None:
        raise bad_request(f"input {tensor.name!r}: {tensor.datatype} needs raw_input_contents")
    values = getattr(tensor.contents, field)
    try:
        data: bytes = np.asarray(values, dtype=dtype).tobytes()
    except (ValueError, OverflowError) as exc:
        raise bad_request(
            f"input {tensor.name!r}: contents are not {tensor.datatype}: {exc}"
        ) from None
    return data


def request_from_proto(
    proto: service_pb2.ModelInferRequest, time_remaining: float | None
) -> InferRequest:
    """Decode a ``ModelInferRequest``; ``time_remaining`` is the call's deadline, if any."""
    raw = proto.raw_input_contents
    if raw and len(raw) != len(proto.inputs):
        raise bad_request(
            f"{len(raw)} raw_input_contents for {len(proto.inputs)} inputs: give one per input"
        )
    inputs = []
    for index, tensor in enumerate(proto.inputs):
        if any(d < 0 for d in tensor.shape):
            raise bad_request(f"input {tensor.name!r}: shape {list(tensor.shape)} is negative")
        data = raw[index] if raw else _typed_contents(tensor)
        inputs.append(
            Tensor(name=tensor.name, datatype=tensor.datatype, shape=tuple(tensor.shape), data=data)
        )
    params = {key: _parameter_value(value) for key, value in proto.parameters.items()}
    path = params.get(PATH_PARAMETER)
    if path is not None and not isinstance(path, str):
        raise bad_request(f"parameter {PATH_PARAMETER} must be a string")
    timeout_s = time_remaining
    timeout_us = params.get("timeout")
    if isinstance(timeout_us, int) and not isinstance(timeout_us, bool) and timeout_us > 0:
        timeout_s = timeout_us * 1e-6 if timeout_s is None else min(timeout_s, timeout_us * 1e-6)
    return InferRequest(
        model=proto.model_name,
        version=proto.model_version,
        id=proto.id,
        inputs=inputs,
        requested_outputs=[o.name for o in proto.outputs] or None,
        path=path,
        timeout_s=timeout_s,
    )


def _parameter(value: str | int | bool) -> service_pb2.InferParameter:
    if isinstance(value, bool):
        return service_pb2.InferParameter(bool_param=value)
    if isinstance(value, int):
        return service_pb2.InferParameter(int64_param=value)
    return service_pb2.InferParameter(string_param=value)


def response_to_proto(
    response: InferResponse, requested: list[str] | None
) -> service_pb2.ModelInferResponse:
    outputs = [t for t in response.outputs if requested is None or t.name in requested]
    return service_pb2.ModelInferResponse(
        model_name=response.model,
        model_version=response.version,
        id=response.id,
        outputs=[
            service_pb2.ModelInferResponse.InferOutputTensor(
                name=t.name, datatype=t.datatype, shape=t.shape
            )
            for t in outputs
        ],
        raw_output_contents=[t.data for t in outputs],
        parameters={k: _parameter(v) for k, v in response.response_parameters().items()},
    )


def _tensor_metadata(
    signature: ModelSignature, which: str
) -> list[service_pb2.ModelMetadataResponse.TensorMetadata]:
    specs = signature.inputs if which == "inputs" else signature.outputs
    return [
        service_pb2.ModelMetadataResponse.TensorMetadata(
            name=s.name, datatype=s.datatype, shape=[-1, *s.shape]
        )
        for s in specs
    ]


class GatewayServicer(service_pb2_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    """Triton's gRPC inference service over an ``InferenceService``."""

    def __init__(self, service: InferenceService) -> None:
        self.service = service

    async def _abort(
        self, context: grpc.aio.ServicerContext, model: str, error: InferenceError
    ) -> None:
        self.service.record_error(model, error)
        await context.abort(error.grpc_code, str(error))

    async def ServerLive(  # noqa: N802 (the generated service's names)
        self, request: service_pb2.ServerLiveRequest, context: grpc.aio.ServicerContext
    ) -> service_pb2.ServerLiveResponse:
        return service_pb2.ServerLiveResponse(live=self.service.live)

    async def ServerReady(  # noqa: N802
        self, request: service_pb2.ServerReadyRequest, context: grpc.aio.ServicerContext
    ) -> service_pb2.ServerReadyResponse:
        return service_pb2.ServerReadyResponse(ready=self.service.ready)

    async def ServerMetadata(  # noqa: N802
        self, request: service_pb2.ServerMetadataRequest, context: grpc.aio.ServicerContext
    ) -> service_pb2.ServerMetadataResponse:
        meta = self.service.server_metadata()
        return service_pb2.ServerMetadataResponse(
            name=str(meta["name"]),
            version=str(meta["version"]),
            extensions=[str(e) for e in meta["extensions"]],  # type: ignore[attr-defined]
        )

    async def ModelReady(  # noqa: N802
        self, request: service_pb2.ModelReadyRequest, context: grpc.aio.ServicerContext
    ) -> service_pb2.ModelReadyResponse:
        try:
            ready = self.service.model_ready(request.name, request.version)
        except InferenceError as exc:
            await self._abort(context, request.name, exc)
            raise  # unreachable: abort raises
        return service_pb2.ModelReadyResponse(ready=ready)

    async def ModelMetadata(  # noqa: N802
        self, request: service_pb2.ModelMetadataRequest, context: grpc.aio.ServicerContext
    ) -> service_pb2.ModelMetadataResponse:
        try:
            signature = self.service.signature(request.name, request.version)
        except InferenceError as exc:
            await self._abort(context, request.name, exc)
            raise
        return service_pb2.ModelMetadataResponse(
            name=signature.name,
            versions=list(signature.versions),
            platform=signature.platform,
            inputs=_tensor_metadata(signature, "inputs"),
            outputs=_tensor_metadata(signature, "outputs"),
        )

    async def ModelConfig(  # noqa: N802
        self, request: service_pb2.ModelConfigRequest, context: grpc.aio.ServicerContext
    ) -> service_pb2.ModelConfigResponse:
        try:
            sig = self.service.signature(request.name, request.version)
        except InferenceError as exc:
            await self._abort(context, request.name, exc)
            raise
        config = model_config_pb2.ModelConfig(
            name=sig.name,
            platform=sig.platform,
            max_batch_size=sig.max_batch_size,
            input=[
                model_config_pb2.ModelInput(
                    name=s.name,
                    data_type=model_config_pb2.DataType.Value(f"TYPE_{s.datatype}"),
                    dims=s.shape,
                )
                for s in sig.inputs
            ],
            output=[
                model_config_pb2.ModelOutput(
                    name=s.name,
                    data_type=model_config_pb2.DataType.Value(f"TYPE_{s.datatype}"),
                    dims=s.shape,
                )
                for s in sig.outputs
            ],
        )
        return service_pb2.ModelConfigResponse(config=config)

    async def ModelInfer(  # noqa: N802
        self, request: service_pb2.ModelInferRequest, context: grpc.aio.ServicerContext
    ) -> service_pb2.ModelInferResponse:
        try:
            decoded = request_from_proto(request, context.time_remaining())
            result = await self.service.infer(decoded)
        except InferenceError as exc:
            await self._abort(context, request.model_name, exc)
            raise
        return response_to_proto(result, decoded.requested_outputs)


class _Undecodable:
    """What a message that is not a valid protobuf of its method's type deserializes to."""

    def __init__(self, error: str) -> None:
        self.error = error


Behavior = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]


def _decoding_checked(
    handler: grpc.RpcMethodHandler,
    abort: Callable[[grpc.aio.ServicerContext, str], Awaitable[None]],
) -> grpc.RpcMethodHandler:
    """``handler`` answering INVALID_ARGUMENT to bytes that do not decode.

    grpc answers a request its deserializer cannot parse with UNKNOWN ("Unexpected
    DecodeError"), a server-failure code for what is the client's mistake (found by fuzzing
    ModelInfer with raw bytes).
    """
    if handler.unary_unary is None or handler.request_deserializer is None:
        return handler
    parse: Callable[[bytes], Any] = handler.request_deserializer
    behavior: Behavior = handler.unary_unary

    def deserialize(data: bytes) -> Any:
        try:
            return parse(data)
        except DecodeError as exc:
            return _Undecodable(str(exc))

    async def checked(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if isinstance(request, _Undecodable):
            await abort(context, request.error)
        return await behavior(request, context)

    return handler._replace(request_deserializer=deserialize, unary_unary=checked)


class _CheckedRegistration:
    """Stands in for the server while the generated code registers the service's methods,
    so every handler can be wrapped before the real server sees it."""

    def __init__(self, server: grpc.aio.Server, servicer: GatewayServicer) -> None:
        self.server = server
        self.servicer = servicer
        self.registered = False

    async def _abort(self, context: grpc.aio.ServicerContext, error: str) -> None:
        await self.servicer._abort(
            context, "", bad_request(f"the message cannot be decoded: {error}")
        )

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        """Ignored: the same methods arrive as a dict in add_registered_method_handlers."""

    def add_registered_method_handlers(
        self, service: str, handlers: dict[str, grpc.RpcMethodHandler]
    ) -> None:
        checked = {name: _decoding_checked(h, self._abort) for name, h in handlers.items()}
        self.server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(service, checked),)
        )
        self.server.add_registered_method_handlers(service, checked)
        self.registered = True


def create_grpc_server(
    service: InferenceService, address: str, *, max_message_bytes: int
) -> tuple[grpc.aio.Server, int]:
    """A grpc.aio server (not started) bound to ``address``; returns it and the bound port.

    The receive limit is the body limit of the REST side: grpc refuses a larger message with
    RESOURCE_EXHAUSTED before the gateway spends anything on it.
    """
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", 2**31 - 1),
            ("grpc.so_reuseport", 0),
        ]
    )
    registration = _CheckedRegistration(server, GatewayServicer(service))
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(registration.servicer, registration)
    if not registration.registered:
        raise RuntimeError("the generated gRPC code registered no method handlers")
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot bind the gRPC port at {address}")
    return server, port
