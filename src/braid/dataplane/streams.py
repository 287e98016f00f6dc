"""Hop calls as messages on a long-lived ``ModelStreamInfer`` stream, not a call each.

A unary gRPC call costs its set-up on both ends (a new HTTP/2 stream, headers, the call's
objects in grpc.aio and in Triton's server); a message on an open stream costs neither.
``bench/hop_transport.py`` (``results/hop_transport.json``) measured the synthetic four-hop
sequence at concurrency 1 on this project's 2-core machine through ``TritonPool``: 2.40 ms on
its streams against 0.61 ms more (0.28 to 0.64, 5 repeats) as unary calls on the same
channels, and less CPU; level with one bare stream that its caller reads itself.

Triton answers a stream's requests as they finish, not in order, each answer carrying its
request's ``id``: the stream gives every request a fresh id and a future, one reader task
settles them. A request Triton refuses comes back as ``error_message`` with no gRPC status;
the caller (``TritonPool``) then repeats it as a unary call, which fails with Triton's own
status code, so refusals read exactly as before. Writes go through one writer task: grpc.aio
allows one write at a time, and a write cancelled half-way (a client gone, a deadline) would
cancel the whole stream with every request on it.

A stream ends when its channel fails or when it retires: ``TritonPool`` retires streams after
``max_age_s`` (half-close; Triton answers what it holds, then ends), so that behind a
headless Service with round robin new pods get streams too, as grpc's own
``MAX_CONNECTION_AGE`` does for long-lived connections. A failed stream fails every request on
it with UNAVAILABLE (whatever status it ended with: ``_unanswered``), which the caller treats
like a failed unary call: the endpoint is marked down and the request falls back.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import deque

import grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc


def rpc_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    """An ``AioRpcError`` as a failed unary call raises it (the caller handles one type)."""
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


def _unanswered(error: grpc.aio.AioRpcError) -> grpc.aio.AioRpcError:
    """What the requests still on a stream that ended with ``error`` fail with.

    A stream's status is never a model's verdict: Triton refuses a request in-band. So
    whatever code the stream's end carries (INTERNAL, UNKNOWN, ...), for the requests on it
    the server is gone: UNAVAILABLE, which falls back, with the original code kept in the
    details. CANCELLED (the gateway closed the stream) stays as it is.
    """
    code = error.code()
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
        return error
    return rpc_error(
        grpc.StatusCode.UNAVAILABLE, f"the stream ended with {code.name}: {error.details()}"
    )


def _expire(future: asyncio.Future[service_pb2.ModelStreamInferResponse]) -> None:
    if not future.done():
        future.set_exception(rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded"))


class InferStream:
    """One open ``ModelStreamInfer`` call with its writer and reader tasks.

    Create inside the event loop that will use it.
    """

    def __init__(self, stub: service_pb2_grpc.GRPCInferenceServiceStub, opened_at: float) -> None:
        self.opened_at = opened_at
        self._call = stub.ModelStreamInfer()
        self._ids = itertools.count()
        self._pending: dict[str, asyncio.Future[service_pb2.ModelStreamInferResponse]] = {}
        # The writer's queue: a deque and one wake-up future (an asyncio.Queue costs more per
        # item, and a hop is a few tens of microseconds of this loop's time).
        self._outbox: deque[service_pb2.ModelInferRequest | None] = deque()
        self._wakeup: asyncio.Future[None] | None = None
        self._failure: grpc.aio.AioRpcError | None = None
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._writer = loop.create_task(self._write_loop())
        self._reader = loop.create_task(self._read_loop())

    @property
    def open(self) -> bool:
        """Takes new requests: neither failed nor retiring."""
        return self._failure is None

    async def infer(
        self, request: service_pb2.ModelInferRequest, timeout_s: float | None
    ) -> service_pb2.ModelStreamInferResponse:
        """Triton's answer to ``request`` (its ``id`` is overwritten); raises
        ``AioRpcError``: the stream's failure, or DEADLINE_EXCEEDED after ``timeout_s``."""
        if self._failure is not None:
            raise self._failure
        if timeout_s is not None and timeout_s <= 0:
            raise rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
        key = str(next(self._ids))
        request.id = key
        loop = self._loop
        future: asyncio.Future[service_pb2.ModelStreamInferResponse] = loop.create_future()
        self._pending[key] = future
        self._send(request)
        # A timer settles the future, not asyncio.timeout: the same bound for less work.
        # Triton still answers a request that expired; the reader drops that answer.
        timer = None if timeout_s is None else loop.call_later(timeout_s, _expire, future)
        try:
            return await future
        finally:
            if timer is not None:
                timer.cancel()
            self._pending.pop(key, None)

    def _send(self, request: service_pb2.ModelInferRequest | None) -> None:
        self._outbox.append(request)
        wakeup = self._wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)

    async def _write_loop(self) -> None:
        while True:
            while not self._outbox:
                self._wakeup = self._loop.create_future()
                await self._wakeup
            self._wakeup = None
            request = self._outbox.popleft()
            if request is None:
                with contextlib.suppress(Exception):
                    await self._call.done_writing()
                return
            try:
                await self._call.write(request)
            except grpc.aio.AioRpcError as exc:
                self._fail(exc)
                return
            except Exception as exc:  # the call ended under us (InvalidStateError, UsageError)
                self._fail(rpc_error(grpc.StatusCode.UNAVAILABLE, f"stream write: {exc!r}"))
                return

    async def _read_loop(self) -> None:
        try:
            while True:
                reply = await self._call.read()
                if reply is grpc.aio.EOF:
                    break
                future = self._pending.pop(reply.infer_response.id, None)
                if future is not None and not future.done():
                    future.set_result(reply)
        except grpc.aio.AioRpcError as exc:
            self._fail(exc)
            return
        except Exception as exc:  # same as a failed call: nothing on this stream is answered
            self._fail(rpc_error(grpc.StatusCode.UNAVAILABLE, f"stream read: {exc!r}"))
            return
        self._fail(rpc_error(grpc.StatusCode.UNAVAILABLE, "the stream ended"))

    def _fail(self, error: grpc.aio.AioRpcError) -> None:
        error = _unanswered(error)
        if self._failure is None:
            self._failure = error
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(error)
        if not self._writer.done():
            self._send(None)

    def retire(self) -> None:
        """Take no new requests; those on the stream still get their answers."""
        if self._failure is None:
            self._failure = rpc_error(grpc.StatusCode.UNAVAILABLE, "the stream retired")
            self._send(None)

    @property
    def finished(self) -> bool:
        return self._reader.done()

    async def close(self) -> None:
        """End the stream now: requests still on it fail with CANCELLED."""
        self.retire()
        self._call.cancel()
        for task in (self._writer, self._reader):
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        self._fail(rpc_error(grpc.StatusCode.CANCELLED, "the gateway closed the stream"))
