"""One gRPC channel (or a few) per Triton endpoint, created once and shared by every request.

The gateway calls Triton through the service definitions ``tritonclient`` ships
(``tritonclient.grpc.service_pb2_grpc``) over ``grpc.aio`` channels rather than through
``tritonclient.grpc.aio.InferenceServerClient.infer``: that wrapper turns every tensor into an
``InferInput`` and every answer into an ``InferResult`` via numpy, while a hop's output only
has to be handed to the next hop. Forwarding ``raw_output_contents`` as the next request's
``raw_input_contents`` keeps tensors as bytes end to end and saves that work on each hop. The
channel options are tritonclient's own (no message size limit, keepalive), so a Triton
server sees the same client it always does, plus a reconnect backoff capped at 2 s, so a
restarted server gets its traffic back within seconds. grpc's threading (how an answer
reaches the event loop) is chosen once, when ``braid.dataplane`` imports grpc.

Inference goes as messages on a few long-lived ``ModelStreamInfer`` streams per endpoint
(``braid.dataplane.streams``: cheaper than a call each) unless ``streams=False``; a refusal
is repeated as a unary call so it fails with Triton's status code. Everything else (health,
readiness, configs) is unary.

The pool also remembers which endpoints just failed (a small circuit breaker), so that after
a host dies requests stop paying a failed connection attempt before they fall back.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc

from braid.dataplane.streams import InferStream
from braid.logs import log_event

logger = logging.getLogger(__name__)

_UNLIMITED = 2**31 - 1
CHANNEL_OPTIONS: tuple[tuple[str, int | str], ...] = (
    ("grpc.max_send_message_length", _UNLIMITED),
    ("grpc.max_receive_message_length", _UNLIMITED),
    ("grpc.keepalive_time_ms", 2**31 - 1),
    ("grpc.keepalive_timeout_ms", 20000),
    ("grpc.keepalive_permit_without_calls", 0),
    ("grpc.http2.max_pings_without_data", 2),
    # Triton endpoints are direct addresses; an http_proxy in the environment must not apply.
    ("grpc.enable_http_proxy", 0),
    # gRPC's default reconnect backoff grows to 120 s: a host back after a minute's outage
    # would wait that long for its traffic. A loopback or in-cluster reconnect is cheap.
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.min_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 2000),
    # A failed connection asks the resolver for fresh addresses (a replaced pod has a new
    # IP); by default it answers at most every 30 s.
    ("grpc.dns_min_time_between_resolutions_ms", 1000),
    # A Block's Service is headless: its DNS name lists every ready pod, and round robin
    # spreads calls over them (pick_first, the default, would send all to the first).
    ("grpc.lb_policy_name", "round_robin"),
)


@dataclass
class EndpointState:
    """What the pool knows about one Triton endpoint's health."""

    address: str
    down_until: float = 0.0
    failures: int = 0
    last_error: str = ""
    renewed_at: float = 0.0

    def available(self, now: float) -> bool:
        return now >= self.down_until


@dataclass
class _Endpoint:
    channels: list[grpc.aio.Channel]
    stubs: list[service_pb2_grpc.GRPCInferenceServiceStub]
    state: EndpointState
    turn: Iterator[int] = field(default_factory=lambda: itertools.count())
    streams: list[InferStream | None] = field(default_factory=list)
    stream_turn: Iterator[int] = field(default_factory=lambda: itertools.count())


class TritonPool:
    """Channels to Triton servers, keyed by ``host:port``; ``close()`` ends them all.

    ``channels_per_endpoint`` > 1 spreads concurrent calls over several HTTP/2 connections
    (one connection serialises frames through one socket); 1 is enough on loopback.
    ``cooldown_s`` is how long an endpoint that failed at the transport level is skipped.
    ``streams``: infer over ``streams_per_endpoint`` streams, each replaced after
    ``stream_max_age_s`` (so new pods behind a headless Service get some); else unary calls.
    A stream stays on the pod round robin gave it, so requests spread over a Block's pods
    by streams, not by call. Streams open one at a time, and round robin deals them out over
    the pods it has connected, in turn from a random start: each pod gets about 12 / n of
    them, off by a stream or two where some opened before every pod was connected, and
    the 30 s renewals keep dealing. An idle stream costs the two ends a few kilobytes.
    """

    def __init__(
        self,
        *,
        channels_per_endpoint: int = 1,
        cooldown_s: float = 2.0,
        renew_every_s: float = 5.0,
        retire_after_s: float = 30.0,
        streams: bool = True,
        streams_per_endpoint: int = 12,
        stream_max_age_s: float = 30.0,
    ) -> None:
        if channels_per_endpoint < 1:
            raise ValueError("channels_per_endpoint must be >= 1")
        if streams_per_endpoint < 1:
            raise ValueError("streams_per_endpoint must be >= 1")
        self.streams = streams
        self.streams_per_endpoint = streams_per_endpoint
        self.stream_max_age_s = stream_max_age_s
        self._retired_streams: set[InferStream] = set()
        self.channels_per_endpoint = channels_per_endpoint
        self.cooldown_s = cooldown_s
        self.renew_every_s = renew_every_s
        self.retire_after_s = retire_after_s
        self._endpoints: dict[str, _Endpoint] = {}
        self._retiring: set[asyncio.Task[None]] = set()

    def _new_channels(self, address: str) -> list[grpc.aio.Channel]:
        return [
            grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
            for _ in range(self.channels_per_endpoint)
        ]

    def _endpoint(self, address: str) -> _Endpoint:
        endpoint = self._endpoints.get(address)
        if endpoint is None:
            channels = self._new_channels(address)
            endpoint = _Endpoint(
                channels=channels,
                stubs=[service_pb2_grpc.GRPCInferenceServiceStub(c) for c in channels],
                state=EndpointState(address),
            )
            self._endpoints[address] = endpoint
            log_event(logger, "pool.channel_opened", address=address, channels=len(channels))
        return endpoint

    def open(self, address: str) -> None:
        """Create the channels of ``address`` now (the executor opens every endpoint at start)."""
        self._endpoint(address)

    def stub(self, address: str) -> service_pb2_grpc.GRPCInferenceServiceStub:
        endpoint = self._endpoint(address)
        if len(endpoint.stubs) == 1:
            return endpoint.stubs[0]
        return endpoint.stubs[next(endpoint.turn) % len(endpoint.stubs)]

    def state(self, address: str) -> EndpointState:
        return self._endpoint(address).state

    def available(self, address: str) -> bool:
        """False while ``address`` is in its cool-down after a transport failure."""
        return self._endpoint(address).state.available(time.monotonic())

    def mark_down(self, address: str, error: str) -> None:
        state = self._endpoint(address).state
        was_up = state.available(time.monotonic())
        state.down_until = time.monotonic() + self.cooldown_s
        state.failures += 1
        state.last_error = error
        if was_up:
            log_event(
                logger,
                "pool.endpoint_down",
                level=logging.WARNING,
                address=address,
                cooldown_s=self.cooldown_s,
                error=error,
            )

    def mark_up(self, address: str) -> None:
        state = self._endpoint(address).state
        if not state.available(time.monotonic()):
            log_event(logger, "pool.endpoint_up", address=address)
        state.down_until = 0.0

    def renew(self, address: str) -> bool:
        """Give ``address`` fresh channels, at most every ``renew_every_s``; True if it did.

        The prober calls this while an endpoint stays unreachable. A Block's address is its
        headless Service's DNS name, which has no record while no pod is ready; gRPC's DNS
        resolver then backs off up to 120 s between attempts and ignores requests to
        re-resolve meanwhile, so a host back after a minute could wait two more for its
        traffic. A fresh channel resolves at once. The old channels are closed only after
        ``retire_after_s``, so a call still in flight on them finishes."""
        endpoint = self._endpoint(address)
        now = time.monotonic()
        if now - endpoint.state.renewed_at < self.renew_every_s:
            return False
        old = endpoint.channels
        endpoint.channels = self._new_channels(address)
        endpoint.stubs = [service_pb2_grpc.GRPCInferenceServiceStub(c) for c in endpoint.channels]
        self._retire_streams(endpoint)
        endpoint.state.renewed_at = now
        task = asyncio.get_running_loop().create_task(self._retire(old))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)
        log_event(logger, "pool.channels_renewed", address=address)
        return True

    async def _retire(self, channels: list[grpc.aio.Channel]) -> None:
        await asyncio.sleep(self.retire_after_s)
        for channel in channels:
            await channel.close()

    def _stream(self, address: str) -> InferStream:
        """The next of the endpoint's streams, opened (or replaced) as needed."""
        endpoint = self._endpoint(address)
        if not endpoint.streams:
            endpoint.streams = [None] * self.streams_per_endpoint
        slot = next(endpoint.stream_turn) % len(endpoint.streams)
        stream = endpoint.streams[slot]
        now = time.monotonic()
        if stream is not None and stream.open and now - stream.opened_at < self.stream_max_age_s:
            return stream
        if stream is not None:
            self._retire_stream(stream)
        stream = InferStream(endpoint.stubs[slot % len(endpoint.stubs)], opened_at=now)
        endpoint.streams[slot] = stream
        return stream

    def _retire_stream(self, stream: InferStream) -> None:
        stream.retire()
        self._retired_streams = {s for s in self._retired_streams if not s.finished}
        if not stream.finished:
            self._retired_streams.add(stream)

    def _retire_streams(self, endpoint: _Endpoint) -> None:
        for stream in endpoint.streams:
            if stream is not None:
                self._retire_stream(stream)
        endpoint.streams = []

    async def infer(
        self, address: str, request: service_pb2.ModelInferRequest, timeout_s: float | None
    ) -> service_pb2.ModelInferResponse:
        """Triton's answer; raises ``grpc.aio.AioRpcError`` as a unary call would."""
        if self.streams:
            started = time.perf_counter()
            reply = await self._stream(address).infer(request, timeout_s)
            if not reply.error_message:
                return reply.infer_response
            # Refused: a stream's refusal has no status code, a unary call's has (NOT_FOUND,
            # INVALID_ARGUMENT, ...), and the gateway tells clients and fallbacks apart by it.
            if timeout_s is not None:
                timeout_s -= time.perf_counter() - started
        response: service_pb2.ModelInferResponse = await self.stub(address).ModelInfer(
            request, timeout=timeout_s
        )
        return response

    async def model_ready(self, address: str, model: str, timeout_s: float = 1.0) -> bool:
        """Whether ``model`` is ready on ``address``; False (never raises) when unreachable."""
        try:
            response = await self.stub(address).ModelReady(
                service_pb2.ModelReadyRequest(name=model), timeout=timeout_s
            )
        except grpc.aio.AioRpcError:
            return False
        return bool(response.ready)

    async def max_batch_size(self, address: str, model: str, timeout_s: float = 2.0) -> int | None:
        """The model's ``max_batch_size`` from its config; ``None`` when it cannot be read."""
        try:
            response = await self.stub(address).ModelConfig(
                service_pb2.ModelConfigRequest(name=model), timeout=timeout_s
            )
        except grpc.aio.AioRpcError:
            return None
        return int(response.config.max_batch_size)

    @property
    def addresses(self) -> list[str]:
        return sorted(self._endpoints)

    async def close(self) -> None:
        for task in list(self._retiring):
            task.cancel()
        streams = [s for e in self._endpoints.values() for s in e.streams if s is not None]
        for stream in [*streams, *self._retired_streams]:
            await stream.close()
        self._retired_streams.clear()
        for endpoint in self._endpoints.values():
            for channel in endpoint.channels:
                await channel.close()
        self._endpoints.clear()
