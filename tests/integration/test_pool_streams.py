"""The pool's stream transport against real servers: the synthetic blocks on tritonserver, and
a real gRPC server that answers out of order, late, or ends its stream.

What must hold: a stream gives each request its own answer whatever the order Triton answers
in; a refusal fails with Triton's own status code, as a unary call does; a late answer is
DEADLINE_EXCEEDED and the stream goes on serving; a stream that ends fails the requests on it
with UNAVAILABLE (the fallback's signal) and the next request gets a new stream; retired
streams still answer what they hold.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import grpc
import numpy as np
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc

from braid.dataplane.pool import TritonPool
from braid_dev.local_runtime import LocalRuntime
from braid_dev.synthetic import SyntheticModels

from .grpc_support import serving

pytestmark = pytest.mark.integration

Request = Callable[..., service_pb2.ModelInferRequest]


@pytest.fixture
def block_request(synthetic_models: SyntheticModels) -> Request:
    """A request for the original path's first block: ``value`` fills the tensor."""
    hop = synthetic_models.catalog.path(synthetic_models.catalog.original_path).hops[0]

    def build(
        value: float = 1.0,
        *,
        model: str | None = None,
        shape: tuple[int, ...] | None = None,
        nbytes: int | None = None,
    ) -> service_pb2.ModelInferRequest:
        dims = shape or (1, *hop.input.shape)
        data = np.full(dims, value, dtype=np.float32).tobytes()
        proto = service_pb2.ModelInferRequest(model_name=model or hop.triton_model)
        tensor = proto.inputs.add()
        tensor.name, tensor.datatype = hop.input.name, "FP32"
        tensor.shape.extend(dims)
        proto.outputs.add().name = hop.output.name
        proto.raw_input_contents.append(data if nbytes is None else data[:nbytes])
        return proto

    return build


@pytest.mark.parametrize("streams", [True, False], ids=["streams", "unary"])
async def test_each_request_gets_its_own_answer_and_refusals_keep_their_status_code(
    local_runtime: LocalRuntime, block_request: Request, streams: bool
) -> None:
    address = local_runtime.servers["local"].grpc_address
    pool = TritonPool(streams=streams, streams_per_endpoint=2)
    reference = TritonPool(streams=False)
    try:
        values = [float(v) for v in range(40)]
        answers = await asyncio.gather(
            *(pool.infer(address, block_request(v), 5.0) for v in values)
        )
        expected = [await reference.infer(address, block_request(v), 5.0) for v in values]
        assert [a.raw_output_contents[0] for a in answers] == [
            e.raw_output_contents[0] for e in expected
        ]
        refusals = {
            grpc.StatusCode.NOT_FOUND: block_request(model="no-such-model"),
            grpc.StatusCode.INVALID_ARGUMENT: block_request(nbytes=3),
        }
        for code, request in refusals.items():
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await pool.infer(address, request, 5.0)
            assert refused.value.code() == code, refused.value.details()
        # The streams outlive the refusals.
        after = await pool.infer(address, block_request(1.0), 5.0)
        assert after.raw_output_contents[0] == expected[1].raw_output_contents[0]
    finally:
        await pool.close()
        await reference.close()


async def test_streams_past_their_age_are_replaced_and_still_answer(
    local_runtime: LocalRuntime, block_request: Request
) -> None:
    address = local_runtime.servers["local"].grpc_address
    pool = TritonPool(streams_per_endpoint=1, stream_max_age_s=0.0)  # a new stream each call
    try:
        answers = await asyncio.gather(
            *(pool.infer(address, block_request(2.0), 5.0) for _ in range(8))
        )
        assert len({a.raw_output_contents[0] for a in answers}) == 1
        assert all(a.model_name for a in answers)
    finally:
        await pool.close()


class _Scripted(service_pb2_grpc.GRPCInferenceServiceServicer):
    """Answers a stream's requests by their model name: ``slow`` after 0.5 s, ``late`` after
    the last request of a batch, ``end`` by ending the stream, ``abort`` by ending it with
    INTERNAL (as grpc reports some connections that die mid-frame); anything else at once.
    Each answer's ``model_version`` names the server."""

    def __init__(self, name: str = "") -> None:
        self.name = name

    async def ModelStreamInfer(  # noqa: N802 (gRPC's method name)
        self,
        request_iterator: AsyncIterator[service_pb2.ModelInferRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[service_pb2.ModelStreamInferResponse]:
        held: list[service_pb2.ModelInferRequest] = []
        async for request in request_iterator:
            if request.model_name == "end":
                return
            if request.model_name == "abort":
                await context.abort(grpc.StatusCode.INTERNAL, "connection died mid-frame")
            if request.model_name == "slow":
                await asyncio.sleep(0.5)
            if request.model_name == "late":
                held.append(request)
                continue
            for answer in [request, *reversed(held)]:  # held ones after, newest first
                yield service_pb2.ModelStreamInferResponse(
                    infer_response=service_pb2.ModelInferResponse(
                        id=answer.id, model_name=answer.model_name, model_version=self.name
                    )
                )
            held.clear()


def scripted_server(name: str = "") -> contextlib.AbstractAsyncContextManager[str]:
    return serving(_Scripted(name))


def _named(model: str) -> service_pb2.ModelInferRequest:
    return service_pb2.ModelInferRequest(model_name=model)


async def test_out_of_order_answers_reach_their_requests() -> None:
    pool = TritonPool(streams_per_endpoint=1)
    async with scripted_server() as scripted:
        try:
            late = [
                asyncio.ensure_future(pool.infer(scripted, _named("late"), 5.0)) for _ in range(3)
            ]
            await asyncio.sleep(0.05)  # the three are on the stream before the releasing one
            now = await pool.infer(scripted, _named("now"), 5.0)
            assert now.model_name == "now"
            answers = await asyncio.gather(*late)
            assert [a.model_name for a in answers] == ["late"] * 3
            assert len({a.id for a in [now, *answers]}) == 4
        finally:
            await pool.close()


async def test_a_late_answer_is_deadline_exceeded_and_the_stream_goes_on() -> None:
    pool = TritonPool(streams_per_endpoint=1)
    async with scripted_server() as scripted:
        try:
            with pytest.raises(grpc.aio.AioRpcError) as late:
                await pool.infer(scripted, _named("slow"), 0.05)
            assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            answer = await pool.infer(scripted, _named("after"), 5.0)
            assert answer.model_name == "after"
        finally:
            await pool.close()


@pytest.mark.parametrize(("how", "said"), [("end", "the stream ended"), ("abort", "INTERNAL")])
async def test_an_ended_stream_fails_its_requests_unavailable_and_a_new_one_serves(
    how: str, said: str
) -> None:
    """A stream's status is never a model's verdict (Triton refuses a request in-band): the
    requests still on a stream that ends, cleanly or with INTERNAL, were not answered and must
    fall back (UNAVAILABLE), not reach the client as an upstream error."""
    pool = TritonPool(streams_per_endpoint=1)
    async with scripted_server() as scripted:
        try:
            waiting = asyncio.ensure_future(pool.infer(scripted, _named("late"), 5.0))
            await asyncio.sleep(0.05)
            with pytest.raises(grpc.aio.AioRpcError) as ended:
                await pool.infer(scripted, _named(how), 5.0)
            assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
            assert said in (ended.value.details() or "")
            with pytest.raises(grpc.aio.AioRpcError) as lost:
                await waiting
            assert lost.value.code() == grpc.StatusCode.UNAVAILABLE
            assert (await pool.infer(scripted, _named("next"), 5.0)).model_name == "next"
        finally:
            await pool.close()


async def test_streams_spread_over_the_addresses_behind_one_name() -> None:
    """A Block's headless Service resolves to each ready pod: round robin deals the streams
    out over the connected ones, so every pod gets some of the requests."""
    pool = TritonPool(streams_per_endpoint=4)
    async with scripted_server("a") as first, scripted_server("b") as second:
        both = f"ipv4:{first},{second}"  # one target, two addresses, as DNS would give
        try:
            # The first call connects the channel to both; streams opened while only one is
            # connected all go to it, as for a gateway whose first request races its pods.
            await pool.infer(both, _named("x"), 5.0)
            await asyncio.sleep(0.5)
            answers = [await pool.infer(both, _named("x"), 5.0) for _ in range(40)]
        finally:
            await pool.close()
    served = [a.model_version for a in answers]
    # Each of the four streams serves every fourth request: each server holds one or more.
    assert min(served.count("a"), served.count("b")) >= 10, served
