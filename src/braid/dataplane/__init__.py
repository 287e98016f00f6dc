"""The gateway, the Triton client pool and the path executor.

grpc's transport is chosen here, before any module of the package imports ``grpc``: grpc core
reads ``GRPC_EXPERIMENTS`` once, when it is imported, and never again. By default (grpc
1.6x-1.8x) a ``grpc.aio`` answer crosses four threads before the event loop sees it (the
EventEngine's epoll thread wakes a worker, which wakes another, which wakes the completion
queue's poller, which wakes the loop); with the EventEngine client and listener turned off,
the poller thread reads the socket itself and wakes the loop once. Measured on the gateway
benchmark's hop-by-hop path (2 vCPUs): ~45 -> ~20 context switches and ~1.5 -> ~1.2 ms of
gateway CPU per request (``bench/gateway_cpu.py``). The variable is set only while grpc is
imported, so the processes the gateway's process starts (a Triton in the rig) keep their
defaults; an operator's own ``GRPC_EXPERIMENTS`` wins, and where grpc was imported before
(a test process that imported ``tritonclient`` first) nothing changes.
"""

from __future__ import annotations

import os
import sys

GRPC_EXPERIMENTS = "-event_engine_client,-event_engine_listener"
"""grpc core experiments the gateway turns off (names as grpc 1.85 spells them)."""


def _import_grpc_with_poller_transport() -> None:
    if "grpc" in sys.modules or "GRPC_EXPERIMENTS" in os.environ:
        return
    os.environ["GRPC_EXPERIMENTS"] = GRPC_EXPERIMENTS
    try:
        import grpc  # noqa: F401 (imported for its side effect: grpc core reads the variable)
    finally:
        del os.environ["GRPC_EXPERIMENTS"]


_import_grpc_with_poller_transport()
