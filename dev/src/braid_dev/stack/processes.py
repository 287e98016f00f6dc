"""Start, watch and stop the local servers of the stack.

Every server runs in its own session (process group), writes its log to a file and leaves a
pid file behind, so a later run can find and end what a crashed run left running.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from braid.logs import log_event

logger = logging.getLogger(__name__)


class StopsOnExit:
    """``with server:`` stops the server on the way out, whatever happened inside."""

    def stop(self, timeout: float = 15.0) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class StartupError(RuntimeError):
    """A server did not come up; the message carries the end of its log."""


def tail(path: Path, lines: int = 30) -> str:
    """The last ``lines`` lines of a log file (empty when there is none)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


@dataclass
class ManagedProcess:
    """A server process started by the harness."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    pid_path: Path | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the whole process group, SIGKILL what is left after ``timeout``."""
        stop_group(self.popen.pid, timeout=timeout)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=1.0)
        if self.pid_path is not None:
            self.pid_path.unlink(missing_ok=True)
        log_event(logger, "process.stopped", name=self.name, pid=self.popen.pid)


def start_process(
    name: str,
    argv: Sequence[str],
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    pid_path: Path | None = None,
) -> ManagedProcess:
    """Start ``argv`` in a new session with stdout/stderr to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    with log_path.open("ab") as log_file:
        popen = subprocess.Popen(
            list(argv),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=full_env,
            cwd=cwd,
            start_new_session=True,
        )
    if pid_path is not None:
        pid_path.parent.mkdir(parents=True, exist_ok=True)
        pid_path.write_text(str(popen.pid))
    log_event(logger, "process.started", name=name, pid=popen.pid, log=log_path)
    return ManagedProcess(name=name, popen=popen, log_path=log_path, pid_path=pid_path)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_group(pid: int, timeout: float = 10.0) -> None:
    """End the process group led by ``pid``: TERM, wait, then KILL."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            if not pid_alive(pid):
                return
            time.sleep(0.05)


def stop_pid_file(pid_path: Path, timeout: float = 10.0) -> bool:
    """Stop the process group recorded in ``pid_path``; True if one was running."""
    try:
        pid = int(pid_path.read_text().strip())
    except (OSError, ValueError):
        pid_path.unlink(missing_ok=True)
        return False
    running = pid_alive(pid)
    if running:
        stop_group(pid, timeout=timeout)
    pid_path.unlink(missing_ok=True)
    return running


def wait_until(
    check: Callable[[], bool],
    what: str,
    timeout: float,
    process: ManagedProcess | Sequence[ManagedProcess] | None = None,
    interval: float = 0.2,
    ignore: tuple[type[BaseException], ...] = (Exception,),
    tail_lines: int = 30,
) -> None:
    """Poll ``check`` until it is true; fail early if a watched process dies, with its log.

    ``ignore`` lists the errors that only mean "not up yet" when ``check`` raises them.
    """
    watch = (
        []
        if process is None
        else [process]
        if isinstance(process, ManagedProcess)
        else list(process)
    )
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except ignore:
            pass
        for proc in watch:
            if not proc.alive():
                raise StartupError(
                    f"{proc.name} exited with code {proc.popen.returncode} before {what}; "
                    f"log {proc.log_path}:\n{tail(proc.log_path)}"
                )
        if time.monotonic() > deadline:
            logs = "".join(f"\nlog {p.log_path}:\n{tail(p.log_path, tail_lines)}" for p in watch)
            raise StartupError(f"timed out after {timeout:.0f}s waiting for {what}{logs}")
        time.sleep(interval)
