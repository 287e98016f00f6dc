"""A TCP proxy on loopback that delays what passes through it: a slow host, on demand.

Placed between the gateway and a host tier's tritonserver, it makes that host slow without
touching the server: every chunk from the client is held ``delay_s`` before it is forwarded
(the answers come back undelayed), so each request's round trip grows by about ``delay_s``
while throughput and the order of bytes (HTTP/2 frames) stay intact. ``delay_s`` can be
changed while connections are open; the change applies to chunks read after it.

The proxy runs its own event loop on a thread, so synchronous tests and benchmarks drive it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time


class LatencyProxy:
    """Listens on ``127.0.0.1:<port>`` and forwards to ``upstream`` (``host:port``)."""

    def __init__(self, upstream: str, delay_s: float = 0.0, *, host: str = "127.0.0.1") -> None:
        up_host, _, up_port = upstream.rpartition(":")
        self.upstream = (up_host, int(up_port))
        self.delay_s = delay_s
        self.host = host
        self.port = 0
        self.connections = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._stopped: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name="latency-proxy", daemon=True)
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> LatencyProxy:
        self._thread.start()
        if not self._ready.wait(10) or self._server is None:
            raise RuntimeError("the latency proxy did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stopped is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stopped.set)
        self._thread.join(10)

    def __enter__(self) -> LatencyProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _main(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, 0))
        self.port = sock.getsockname()[1]
        self._server = await asyncio.start_server(self._handle, sock=sock)
        self._ready.set()
        try:
            await self._stopped.wait()
        finally:
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            with contextlib.suppress(Exception):
                await asyncio.gather(*self._tasks, return_exceptions=True)
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.close()
            self._tasks.discard(task)
            return
        try:
            await self._both_ways(reader, writer, up_reader, up_writer)
        except asyncio.CancelledError:
            pass  # the proxy is stopping
        finally:
            for w in (writer, up_writer):
                with contextlib.suppress(Exception):
                    w.close()
            self._tasks.discard(task)

    async def _both_ways(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
    ) -> None:
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._pipe(reader, up_writer, delayed=True))
                tasks.create_task(self._pipe(up_reader, writer, delayed=False))
        except* (OSError, asyncio.IncompleteReadError):
            pass  # a side went away: the connection is over

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, delayed: bool
    ) -> None:
        """Copy until EOF; with ``delayed``, each chunk leaves ``delay_s`` after it arrived.

        Chunks queue in arrival order and each waits only for its own due time, so a delay
        adds latency without serialising requests behind one another.
        """
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def send() -> None:
            while True:
                due, chunk = await queue.get()
                if not chunk:
                    break
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(chunk)
                await writer.drain()
            with contextlib.suppress(OSError):
                writer.write_eof()

        sender = asyncio.create_task(send())
        try:
            while True:
                chunk = await reader.read(65536)
                due = time.monotonic() + (self.delay_s if delayed else 0.0)
                await queue.put((due, chunk))
                if not chunk:
                    break
            await sender
        finally:
            sender.cancel()
            with contextlib.suppress(BaseException):
                await sender
            # One side closed: close the other so the peer sees it.
            with contextlib.suppress(Exception):
                writer.close()
