"""Run the gateway: the REST (uvicorn) and gRPC (grpc.aio) front ends in one event loop.

One process, one loop, one executor per model: both protocols share the channel pool, the
routing table and the metrics, which is what makes them behave the same. uvloop runs the
loop (it measured ~40 % less time per gRPC round trip than asyncio's default loop here).

``Gateway`` is the async object; ``serve_gateway`` runs it in the foreground until SIGINT or
SIGTERM (the CLI), ``GatewayThread`` runs it on a background thread (tests, benchmarks).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import socket
import threading
from collections.abc import Awaitable, Callable, Coroutine, Generator, Iterator
from dataclasses import dataclass
from types import TracebackType

import grpc
import uvicorn
import uvloop

from braid.dataplane.grpc_server import create_grpc_server
from braid.dataplane.rest import DEFAULT_MAX_BODY_BYTES, create_rest_app
from braid.dataplane.service import InferenceService
from braid.logs import log_event

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GatewayOptions:
    """Where the gateway listens and how much it accepts; port 0 picks a free port."""

    host: str = "127.0.0.1"
    http_port: int = 0
    grpc_port: int = 0
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    grace_s: float = 5.0
    """How long a stop waits for requests in flight to finish."""
    keep_alive_s: float = 75.0
    """How long an idle REST connection stays open: longer than client pools keep theirs
    (aiohttp 15 s, httpx 5 s). A server that closes first races a client that is just reusing
    the connection, and the client's request fails to write (uvicorn's own default, 5 s,
    failed the gateway benchmark's REST client that way). 75 s is nginx's default."""


class _Uvicorn(uvicorn.Server):
    """uvicorn without its own signal handling: the gateway stops both servers together."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


class Gateway:
    """The two front ends over one ``InferenceService``."""

    def __init__(self, service: InferenceService, options: GatewayOptions | None = None) -> None:
        self.service = service
        self.options = options or GatewayOptions()
        self.http_port = 0
        self.grpc_port = 0
        self._grpc: grpc.aio.Server | None = None
        self._uvicorn: _Uvicorn | None = None
        self._uvicorn_task: asyncio.Task[None] | None = None

    @property
    def http_url(self) -> str:
        return f"http://{self.options.host}:{self.http_port}"

    @property
    def http_address(self) -> str:
        return f"{self.options.host}:{self.http_port}"

    @property
    def grpc_address(self) -> str:
        return f"{self.options.host}:{self.grpc_port}"

    async def start(self) -> None:
        """Start the executors, then both servers; returns once both accept connections."""
        opts = self.options
        await self.service.start()
        self._grpc, self.grpc_port = create_grpc_server(
            self.service, f"{opts.host}:{opts.grpc_port}", max_message_bytes=opts.max_body_bytes
        )
        await self._grpc.start()
        sock = _bind(opts.host, opts.http_port)
        self.http_port = sock.getsockname()[1]
        app = create_rest_app(self.service, max_body_bytes=opts.max_body_bytes)
        config = uvicorn.Config(
            app,
            lifespan="off",
            access_log=False,
            log_level="warning",
            http="httptools",
            loop="none",
            timeout_graceful_shutdown=int(max(1, opts.grace_s)),
            timeout_keep_alive=int(max(1, opts.keep_alive_s)),
        )
        self._uvicorn = _Uvicorn(config)
        self._uvicorn_task = asyncio.get_running_loop().create_task(
            self._uvicorn.serve(sockets=[sock])
        )
        while not self._uvicorn.started:
            if self._uvicorn_task.done():
                self._uvicorn_task.result()  # raises what stopped it
                raise RuntimeError("uvicorn exited during start-up")
            await asyncio.sleep(0.01)
        log_event(
            logger,
            "gateway.started",
            http=self.http_address,
            grpc=self.grpc_address,
            models=",".join(sorted(self.service.executors)),
            ready=self.service.ready,
        )

    async def stop(self) -> None:
        """Stop accepting, let requests in flight finish (up to ``grace_s``), close channels."""
        if self._uvicorn is not None and self._uvicorn_task is not None:
            self._uvicorn.should_exit = True
            with contextlib.suppress(Exception):
                await self._uvicorn_task
        if self._grpc is not None:
            await self._grpc.stop(self.options.grace_s)
        await self.service.close()
        log_event(logger, "gateway.stopped", http=self.http_address, grpc=self.grpc_address)


def settle_garbage_collector() -> None:
    """Keep the collector off the hot path of a long-running gateway.

    Everything built at start (modules, the catalog, compiled paths, channels) lives as long
    as the process: ``gc.freeze`` moves it out of the collector's sight, so a full collection
    no longer walks it. A request allocates dozens of containers (coroutines, futures,
    dataclasses), so the default young-generation threshold of 700 ran a collection every
    few requests; 10 times that keeps the young generation small and collects 10 times less
    often (a profile under load had the collector at ~2 % of the gateway's samples, and the
    pauses in the p99).
    """
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(7000, middle, old)


def _run(main: Callable[[], Coroutine[object, object, None]]) -> None:
    uvloop.run(main())


def serve_gateway(
    build: Callable[[], Awaitable[InferenceService]],
    options: GatewayOptions,
    on_ready: Callable[[Gateway], None] | None = None,
) -> None:
    """Run a gateway in the foreground until SIGINT, SIGTERM or SIGHUP (its terminal closed),
    then stop it gracefully.

    ``build`` makes the service inside the gateway's event loop (grpc.aio channels belong to
    the loop that creates them).
    """

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(sig, stop.set)
        gateway = Gateway(await build(), options)
        await gateway.start()
        settle_garbage_collector()
        try:
            if on_ready is not None:
                on_ready(gateway)
            await stop.wait()
        finally:
            await gateway.stop()

    _run(main)


class GatewayThread:
    """A gateway on a background thread with its own event loop (tests and benchmarks).

    Use as a context manager; ``gateway`` is available once the context is entered.
    """

    def __init__(
        self,
        build: Callable[[], Awaitable[InferenceService]],
        options: GatewayOptions | None = None,
        *,
        start_timeout_s: float = 60.0,
    ) -> None:
        self.build = build
        self.options = options or GatewayOptions()
        self.start_timeout_s = start_timeout_s
        self.gateway: Gateway | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._target, name="braid-gateway", daemon=True)

    def _target(self) -> None:
        async def main() -> None:
            self.loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            gateway = Gateway(await self.build(), self.options)
            try:
                await gateway.start()
            except BaseException:
                await gateway.stop()
                raise
            self.gateway = gateway
            self._ready.set()
            try:
                await self._stop.wait()
            finally:
                await gateway.stop()

        try:
            _run(main)
        except BaseException as exc:
            self._error = exc
        finally:
            self._ready.set()

    def start(self) -> Gateway:
        self._thread.start()
        if not self._ready.wait(self.start_timeout_s):
            raise TimeoutError(f"the gateway did not start in {self.start_timeout_s} s")
        if self._error is not None or self.gateway is None:
            raise RuntimeError(f"the gateway failed to start: {self._error!r}") from self._error
        return self.gateway

    def call(self, coro: Awaitable[object], timeout_s: float = 30.0) -> object:
        """Run ``coro`` on the gateway's loop (to reach its executors) and return its result."""
        assert self.loop is not None

        async def wrap() -> object:
            return await coro

        return asyncio.run_coroutine_threadsafe(wrap(), self.loop).result(timeout_s)

    def stop(self) -> None:
        if self.loop is not None and self._stop is not None and self._thread.is_alive():
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=self.options.grace_s + 30)

    def __enter__(self) -> Gateway:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@contextlib.contextmanager
def running_gateway(
    build: Callable[[], Awaitable[InferenceService]], options: GatewayOptions | None = None
) -> Iterator[GatewayThread]:
    """``GatewayThread`` as a context manager yielding the thread (``.gateway``, ``.call``)."""
    thread = GatewayThread(build, options)
    thread.start()
    try:
        yield thread
    finally:
        thread.stop()
