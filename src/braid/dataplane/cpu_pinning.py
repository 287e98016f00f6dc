"""Keep every thread of the gateway on one CPU (``braid gateway --pin-cpu``).

grpc.aio hands each message between two threads: grpc's poller thread reads the socket, then
wakes the event loop's thread, which runs the Python. A request through a hop-by-hop gateway
makes that hand-off ten times (the client's call, four answers from Triton, and the writes
back). When the scheduler runs the two threads on different cores, each hand-off is a wake-up
across cores (an inter-processor interrupt; on a VM, a trip through the hypervisor) and the
message's cache lines move with it; on one core it is a context switch.

Measured by ``bench/gateway.py`` (2 vCPUs, four hops; ``interleaved_c1`` in
``results/gateway.json``: requests interleaved one by one at concurrency 1, pinned against
unpinned): pinned took 0.15-0.18 ms off the hop-by-hop gateway's p50 in each of four full runs.
The cost is the other cores: at concurrency 32 the fused gateway still fits one core (1.03 to
1.23x the requests/s pinned over seven runs, median 1.13x), a hop-by-hop gateway, four calls
per request, does not quite (0.91 to 1.11x, median 0.95x).

It pays where the pod owns its CPUs (the kubelet's static CPU manager policy, a Guaranteed pod
with whole CPUs): ``auto`` takes the first CPU of the pod's own set. In a node's shared pool
every pinned gateway's ``auto`` is the same CPU, so pinning there is off by default.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

AUTO = "auto"


def choose_cpu(spec: str, allowed: set[int]) -> int:
    """The CPU ``spec`` names among ``allowed``: ``auto`` (the lowest) or a number in it.

    Raises ``ValueError`` naming the allowed set when ``spec`` is neither.
    """
    if not allowed:
        raise ValueError("the process may run on no CPU")
    if spec == AUTO:
        return min(allowed)
    choices = f"'auto' or one of the CPUs this process may use: {_ranges(allowed)}"
    try:
        cpu = int(spec)
    except ValueError:
        raise ValueError(f"--pin-cpu {spec!r}: expected {choices}") from None
    if cpu not in allowed:
        raise ValueError(f"--pin-cpu {spec}: expected {choices}")
    return cpu


def pin_to(spec: str) -> None:
    """Pin every thread of this process to the CPU ``spec`` names (see ``choose_cpu``);
    threads started later inherit it from their creator."""
    cpu = choose_cpu(spec, os.sched_getaffinity(0))
    for task in Path("/proc/self/task").iterdir():
        with contextlib.suppress(ProcessLookupError):  # the thread ended meanwhile
            os.sched_setaffinity(int(task.name), {cpu})


def _ranges(cpus: set[int]) -> str:
    """``{0, 1, 2, 5}`` as ``0-2,5`` (the kernel's cpuset list format)."""
    ordered = sorted(cpus)
    parts: list[str] = []
    start = prev = ordered[0]
    for cpu in [*ordered[1:], None]:
        if cpu is not None and cpu == prev + 1:
            prev = cpu
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if cpu is not None:
            start = prev = cpu
    return ",".join(parts)
