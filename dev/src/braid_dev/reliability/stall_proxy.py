"""A TCP proxy that stalls a download mid-body: the failure that hangs a fetcher with no
read timeout (kserve#5611).

The first ``stall_connections`` connections forward ``stall_after`` bytes of the server's
answer, then nothing more while the connection stays open; later connections pass
everything. Bytes are forwarded as they are, so TLS goes through untouched.
"""

from __future__ import annotations

import contextlib
import socket
import threading


class StallProxy:
    def __init__(self, upstream: tuple[str, int], stall_after: int, stall_connections: int = 1):
        self.upstream = upstream
        self.stall_after = stall_after
        self.stall_connections = stall_connections
        self.connections = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, name="stall-proxy", daemon=True)

    def __enter__(self) -> StallProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            for s in self._sockets:
                with contextlib.suppress(OSError):
                    s.close()
        self._thread.join(5)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
                stall = self.connections <= self.stall_connections
            server = socket.create_connection(self.upstream)
            with self._lock:
                self._sockets += [client, server]
            limit = self.stall_after if stall else None
            for args in ((client, server, None), (server, client, limit)):
                threading.Thread(target=self._pipe, args=args, daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, limit: int | None) -> None:
        sent = 0
        with contextlib.suppress(OSError):
            while not self._stop.is_set():
                data = src.recv(65536)
                if not data:
                    break
                if limit is not None and sent + len(data) > limit:
                    dst.sendall(data[: limit - sent])
                    self._stop.wait()  # stalled: hold the connection, send nothing more
                    return
                dst.sendall(data)
                sent += len(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)
