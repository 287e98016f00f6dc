"""Fuzz the gateway's gRPC front end: raw bytes and malformed ``ModelInferRequest`` messages.

Messages go through a channel with no serializer, so the fuzzer sends exactly the bytes it
means to: random bytes (to ModelInfer and the metadata methods), truncated and bit-flipped
encodings of a valid request, and
well-formed protobufs whose contents are wrong (datatypes, shapes, ``raw_input_contents``
that do not match the inputs, typed contents, parameters, outputs, unknown models).

A gRPC answer counts as the 5xx of REST when its code says the server failed (INTERNAL,
UNKNOWN, DATA_LOSS, UNAVAILABLE, DEADLINE_EXCEEDED — the Triton servers behind the gateway
are healthy, so neither of the last two has an excuse), except DEADLINE_EXCEEDED for a
``timeout`` parameter the message set itself, counted apart as in the REST campaigns.
"""

from __future__ import annotations

import itertools
import logging
import random
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
from tritonclient.grpc import service_pb2

from braid.dataplane.tensors import DATATYPE_SIZE
from braid.logs import log_event
from braid_dev.reliability.fuzz_rest import CLIENT_DEADLINE, require_loopback
from braid_dev.reliability.report import FuzzTally
from braid_dev.reliability.usage import ProcessUsage, alive

logger = logging.getLogger(__name__)

MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
SERVER_FAILURES = frozenset(
    {
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DATA_LOSS,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    }
)
_EXAMPLES = 5
_CALL_TIMEOUT_S = 30.0

Request = service_pb2.ModelInferRequest
Tensor = service_pb2.ModelInferRequest.InferInputTensor


@dataclass(frozen=True)
class GrpcCase:
    kind: str
    message: bytes
    method: str = MODEL_INFER


@dataclass(frozen=True)
class GrpcTarget:
    model: str
    input_name: str
    datatype: str
    shape: list[int]
    output_name: str

    @property
    def nbytes(self) -> int:
        count = 1
        for d in self.shape:
            count *= d
        return count * DATATYPE_SIZE.get(self.datatype, 4)

    def valid(self, rng: random.Random) -> Any:
        return Request(
            model_name=self.model,
            id="fuzz",
            inputs=[Tensor(name=self.input_name, datatype=self.datatype, shape=self.shape)],
            outputs=[Request.InferRequestedOutputTensor(name=self.output_name)],
            raw_input_contents=[rng.randbytes(self.nbytes)],
        )


def _target(channel: grpc.Channel, model: str) -> GrpcTarget:
    metadata = channel.unary_unary(
        "/inference.GRPCInferenceService/ModelMetadata",
        request_serializer=service_pb2.ModelMetadataRequest.SerializeToString,
        response_deserializer=service_pb2.ModelMetadataResponse.FromString,
    )(service_pb2.ModelMetadataRequest(name=model), timeout=_CALL_TIMEOUT_S)
    spec = metadata.inputs[0]
    return GrpcTarget(
        model=model,
        input_name=spec.name,
        datatype=spec.datatype,
        shape=[1, *(d if d > 0 else 1 for d in spec.shape[1:])],
        output_name=metadata.outputs[0].name,
    )


def _mutations(target: GrpcTarget) -> list[Callable[[random.Random], GrpcCase]]:
    def encoded(kind: str, request: Any) -> GrpcCase:
        return GrpcCase(kind, request.SerializeToString())

    def valid(rng: random.Random) -> GrpcCase:
        return encoded("valid", target.valid(rng))

    def random_bytes(rng: random.Random) -> GrpcCase:
        return GrpcCase("random_bytes", rng.randbytes(rng.randrange(0, 512)))

    def truncated(rng: random.Random) -> GrpcCase:
        data = target.valid(rng).SerializeToString()
        return GrpcCase("truncated", data[: rng.randrange(1, len(data))])

    def bit_flips(rng: random.Random) -> GrpcCase:
        data = bytearray(target.valid(rng).SerializeToString())
        for _ in range(rng.randrange(1, 8)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        return GrpcCase("bit_flips", bytes(data))

    def datatype(rng: random.Random) -> GrpcCase:
        request = target.valid(rng)
        request.inputs[0].datatype = rng.choice(
            [*DATATYPE_SIZE, "BYTES", "", "fp32", "FP8", "Ω", "\x00"]
        )
        return encoded("datatype", request)

    def shape(rng: random.Random) -> GrpcCase:
        request = target.valid(rng)
        del request.inputs[0].shape[:]
        request.inputs[0].shape.extend(
            rng.choice(
                [
                    [],
                    [-1, *target.shape[1:]],
                    [0, *target.shape[1:]],
                    [2**63 - 1, *target.shape[1:]],
                    [2**62, 2**62],
                    [-(2**63)],
                    [*target.shape, 1],
                    target.shape[:-1],
                    [rng.randrange(2, 64), *target.shape[1:]],
                ]
            )
        )
        return encoded("shape", request)

    def raw_mismatch(rng: random.Random) -> GrpcCase:
        request = target.valid(rng)
        choice = rng.randrange(4)
        if choice == 0:
            request.raw_input_contents.append(rng.randbytes(target.nbytes))
        elif choice == 1:
            request.raw_input_contents[0] = request.raw_input_contents[0][
                : rng.randrange(target.nbytes)
            ]
        elif choice == 2:
            request.raw_input_contents[0] += rng.randbytes(rng.randrange(1, 1024))
        else:
            request.inputs.append(request.inputs[0])
        return encoded("raw_mismatch", request)

    def typed_contents(rng: random.Random) -> GrpcCase:
        request = target.valid(rng)
        del request.raw_input_contents[:]
        count = target.nbytes // DATATYPE_SIZE.get(target.datatype, 4)
        contents = request.inputs[0].contents
        field = rng.choice(["fp32", "int", "int64", "uint64", "bool", "bytes", "none"])
        n = rng.choice([count, count - 1, count + 1, 0])
        if field == "fp32":
            contents.fp32_contents.extend([rng.random() for _ in range(n)])
        elif field == "int":
            contents.int_contents.extend([rng.randrange(-(2**31), 2**31) for _ in range(n)])
        elif field == "int64":
            contents.int64_contents.extend([rng.randrange(-(2**63), 2**63) for _ in range(n)])
        elif field == "uint64":
            contents.uint64_contents.extend([rng.randrange(2**64) for _ in range(n)])
        elif field == "bool":
            contents.bool_contents.extend([True] * n)
        elif field == "bytes":
            contents.bytes_contents.extend([b"x"] * n)
        request.inputs[0].datatype = rng.choice([target.datatype, "INT8", "UINT8", "BOOL", "BF16"])
        return encoded("typed_contents", request)

    def parameters(rng: random.Random) -> GrpcCase:
        request = target.valid(rng)
        key = rng.choice(["timeout", "braid_path", "binary_data_output", "priority"])
        param = request.parameters[key]
        kind = rng.randrange(5)
        if kind == 0:
            param.int64_param = rng.choice([-1, 0, 1, 2**63 - 1, -(2**63)])
        elif kind == 1:
            param.string_param = rng.choice(["", "x/y", "../..", "Ω" * 100])
        elif kind == 2:
            param.bool_param = True
        elif kind == 3:
            param.double_param = rng.choice([float("nan"), float("inf"), -1.0, 1e300])
        else:
            param.uint64_param = 2**64 - 1
        return encoded("parameters", request)

    def names(rng: random.Random) -> GrpcCase:
        request = target.valid(rng)
        which = rng.randrange(4)
        if which == 0:
            request.model_name = rng.choice(["", "nope", target.model + "\x00", "Ω" * 300])
        elif which == 1:
            request.model_version = rng.choice(["0", "2", "-1", "latest"])
        elif which == 2:
            request.inputs[0].name = rng.choice(["", "x", "INPUT__1"])
        else:
            request.outputs[0].name = rng.choice(["", "nope"])
        return encoded("names", request)

    def no_inputs(rng: random.Random) -> GrpcCase:
        request = target.valid(rng)
        del request.inputs[:]
        if rng.random() < 0.5:
            del request.raw_input_contents[:]
        return encoded("no_inputs", request)

    def oversized(rng: random.Random) -> GrpcCase:
        request = target.valid(rng)
        request.raw_input_contents[0] = bytes(rng.choice([2**20 + 1, 2**22]))
        return encoded("oversized", request)

    def other_method(rng: random.Random) -> GrpcCase:
        """The metadata methods take names and versions straight from the client too."""
        method, request = rng.choice(
            [
                ("ServerLive", service_pb2.ServerLiveRequest()),
                ("ServerMetadata", service_pb2.ServerMetadataRequest()),
                ("ModelReady", service_pb2.ModelReadyRequest(name=target.model)),
                ("ModelMetadata", service_pb2.ModelMetadataRequest(name=target.model)),
                ("ModelConfig", service_pb2.ModelConfigRequest(name=target.model)),
            ]
        )
        if hasattr(request, "name"):
            request.name = rng.choice([target.model, "", "nope", "Ω" * 100, target.model + "\x00"])
            request.version = rng.choice(["", "1", "2", "-1"])
        data = request.SerializeToString()
        if rng.random() < 0.5:
            data = rng.randbytes(rng.randrange(1, 64))
        return GrpcCase(f"other_method_{method}", data, f"/inference.GRPCInferenceService/{method}")

    return [
        other_method,
        valid,
        random_bytes,
        truncated,
        bit_flips,
        datatype,
        shape,
        raw_mismatch,
        typed_contents,
        parameters,
        names,
        no_inputs,
        oversized,
    ]


def grpc_cases(target: GrpcTarget, cases: int, seed: int = 0) -> Iterator[GrpcCase]:
    rng = random.Random(seed)
    mutations = _mutations(target)
    for i in range(cases):
        yield mutations[i % len(mutations)](rng)


def run_grpc_fuzz(
    address: str,
    model: str,
    cases: int,
    *,
    pid: int | None = None,
    seed: int = 0,
    concurrency: int = 8,
) -> FuzzTally:
    """``cases`` raw and malformed ModelInfer messages to the gateway's gRPC ``address``.

    ``concurrency`` calls are in flight at once: ``concurrency - 1`` cases and one valid
    companion, so malformed and good requests reach the same coalesced hop calls. A good
    request (a companion or a ``valid`` case) that is not answered OK is a ``good_failed``.
    """
    require_loopback(address)
    codes: Counter[str] = Counter()
    examples: list[str] = []
    good_sent = good_failed = 0
    companions = random.Random(seed + 1)
    with grpc.insecure_channel(
        address, options=[("grpc.max_send_message_length", 2**31 - 1)]
    ) as channel:
        target = _target(channel, model)
        before = ProcessUsage.of(pid) if pid is not None else None
        methods: dict[str, grpc.UnaryUnaryMultiCallable] = {}
        pending = grpc_cases(target, cases, seed)
        while window := list(itertools.islice(pending, max(1, concurrency - 1))):
            if concurrency > 1:
                window.append(
                    GrpcCase("good_companion", target.valid(companions).SerializeToString())
                )
            calls = []
            for case in window:
                if case.method not in methods:
                    methods[case.method] = channel.unary_unary(case.method)  # bytes in and out
                calls.append(
                    (case, methods[case.method].future(case.message, timeout=_CALL_TIMEOUT_S))
                )
            for case, call in calls:
                try:
                    call.result()
                    code = grpc.StatusCode.OK
                    details = ""
                except grpc.RpcError as exc:
                    code = exc.code()
                    details = str(exc.details())
                if case.kind in ("valid", "good_companion"):
                    good_sent += 1
                    if code != grpc.StatusCode.OK:
                        good_failed += 1
                        if len(examples) < _EXAMPLES:
                            examples.append(f"good request {code.name}: {details[:300]}")
                    if case.kind == "good_companion":
                        if code in SERVER_FAILURES:
                            codes[code.name] += 1  # a 5xx, whoever sent it
                        continue
                if code == grpc.StatusCode.DEADLINE_EXCEEDED and CLIENT_DEADLINE in details:
                    codes["DEADLINE_SET_BY_THE_REQUEST"] += 1
                    continue
                codes[code.name] += 1
                if code in SERVER_FAILURES and len(examples) < _EXAMPLES:
                    examples.append(f"{code.name} {case.kind}: {details[:300]}")
        live = channel.unary_unary(
            "/inference.GRPCInferenceService/ServerLive",
            request_serializer=service_pb2.ServerLiveRequest.SerializeToString,
            response_deserializer=service_pb2.ServerLiveResponse.FromString,
        )
        try:
            answers = bool(live(service_pb2.ServerLiveRequest(), timeout=10).live)
        except grpc.RpcError:
            answers = False
    crashed = not answers or (pid is not None and not alive(pid))
    notes: dict[str, float | int | str] = dict(sorted(codes.items()))
    for i, example in enumerate(examples):
        notes[f"example_5xx_{i}"] = example
    growth = None
    if before is not None and pid is not None and not crashed:
        after = ProcessUsage.of(pid)
        notes |= before.notes("before") | after.notes("after")
        growth = before.growth_mib(after)
    notes["concurrency"] = concurrency
    tally = FuzzTally(
        campaign="grpc-model-infer",
        cases=sum(codes.values()),
        status_5xx=sum(
            n
            for name, n in codes.items()
            if name in grpc.StatusCode.__members__ and grpc.StatusCode[name] in SERVER_FAILURES
        ),
        crashes=int(crashed),
        good_sent=good_sent,
        good_failed=good_failed,
        rss_growth_mib=growth,
        notes=notes,
    )
    log_event(
        logger, "fuzz.done", campaign=tally.campaign, cases=tally.cases, status_5xx=tally.status_5xx
    )
    return tally
