"""How a py-spy raw profile of the gateway is summarised (pure parsing)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from braid_dev.gateway_profile import classify_frame, summarize_py_spy, thread_cpu_s


def test_frames_are_grouped_by_area() -> None:
    assert classify_frame("sendmsg (libc.so.6)") == "socket syscalls (gRPC / HTTP transport)"
    assert classify_frame("infer (braid/dataplane/executor.py:120)") == "braid.dataplane (Python)"
    assert classify_frame("epoll_wait (libc.so.6)") == "waiting in epoll / futex"


def test_leaf_frames_are_counted_into_shares(tmp_path: Path) -> None:
    raw = tmp_path / "spy.txt"
    raw.write_text(
        "main (x.py:1);infer (braid/dataplane/executor.py:120) 3\n"
        "main (x.py:1);sendmsg (libc.so.6) 1\n"
        "not a sample line\n"
    )
    summary = summarize_py_spy(raw)
    assert summary["samples"] == 4
    assert summary["by_area_share"]["braid.dataplane (Python)"] == pytest.approx(0.75)
    assert summary["by_area_share"]["socket syscalls (gRPC / HTTP transport)"] == pytest.approx(
        0.25
    )


def test_a_process_cpu_time_is_read_per_thread() -> None:
    before = sum(thread_cpu_s(os.getpid()).values())
    end = time.process_time() + 0.05
    while time.process_time() < end:  # spend CPU on this thread
        pass
    after = thread_cpu_s(os.getpid())
    assert after
    assert all(v >= 0 for v in after.values())
    assert sum(after.values()) >= before
