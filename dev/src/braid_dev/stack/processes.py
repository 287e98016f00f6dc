"""Start, watch and stop the local servers of the stack.

Every server runs in its own session (process group), writes its log to a file and leaves a
pid file behind, so a later run can find and end what a crashed run left running.

A long-running command (``braid demo``, ``braid serve``) also records each server it starts
in an ``OwnedProcesses`` registry under the state directory: the command stops what is left
of it on the way out, and ``braid dev cluster down`` stops it when the command could not (it
was killed with SIGKILL, or is still serving). A record holds the pid, its command line and
its start time, and nothing is signalled unless all three still match, so a recycled pid is
never killed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
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
    owner: OwnedProcesses | None = None

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
        if self.owner is not None:
            self.owner.forget(self.popen.pid)
        log_event(logger, "process.stopped", name=self.name, pid=self.popen.pid)


def start_process(
    name: str,
    argv: Sequence[str],
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    pid_path: Path | None = None,
    owned: bool = True,
) -> ManagedProcess:
    """Start ``argv`` in a new session with stdout/stderr to ``log_path``.

    While a command's ``OwnedProcesses`` is open the process is recorded in it, unless
    ``owned`` is false (the control plane keeps its own records and outlives the command).
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    owner = _current_owner if owned else None
    popen: subprocess.Popen[bytes] | None = None
    with owner.starting(name) if owner is not None else contextlib.nullcontext():
        try:
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
            if owner is not None:
                owner.record(name, popen.pid, argv)
        except BaseException:
            # A stop signal between the start and the record: nobody would stop it later.
            if popen is not None:
                stop_group(popen.pid, timeout=5.0)
            raise
    if pid_path is not None:
        pid_path.parent.mkdir(parents=True, exist_ok=True)
        pid_path.write_text(str(popen.pid))
    log_event(logger, "process.started", name=name, pid=popen.pid, log=log_path)
    return ManagedProcess(name=name, popen=popen, log_path=log_path, pid_path=pid_path, owner=owner)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stat_fields(pid: int) -> list[str]:
    """``/proc/<pid>/stat`` from the state on (the name before it may hold spaces)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def group_members(pgid: int) -> list[int]:
    """The live (not zombie) processes of process group ``pgid``."""
    members: list[int] = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            # fields[0] is the state, fields[2] the process group.
            if len(fields) > 2 and fields[0] != "Z" and fields[2] == str(pgid):
                members.append(int(entry.name))
    return members


def stop_group(pid: int, timeout: float = 10.0) -> None:
    """End the process group led by ``pid``: TERM, wait, then KILL.

    Waits for the whole group, not only its leader: a tritonserver's Python-backend stubs
    share its group and may outlive it by seconds.
    """
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            if not group_members(pid):
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


# ---------------------------------------------------------------------------------------------
# Ownership: the servers one command started, on disk so another command can stop them.


@dataclass(frozen=True)
class ProcessIdentity:
    """What tells a process from a later one that got its pid: command line and start time."""

    pid: int
    argv: list[str]
    start_ticks: int

    @classmethod
    def of(cls, pid: int) -> ProcessIdentity | None:
        """The identity of the live process ``pid`` (None when it is gone or a zombie)."""
        fields = _stat_fields(pid)
        try:
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return None
        # fields[19] is field 22 of stat(5): the start time in clock ticks after boot.
        if len(fields) < 20 or fields[0] == "Z" or not raw:
            return None
        argv = [part.decode(errors="replace") for part in raw.split(b"\0") if part]
        return cls(pid=pid, argv=argv, start_ticks=int(fields[19]))

    def alive(self) -> bool:
        """Whether the process this identity was taken from still runs."""
        return ProcessIdentity.of(self.pid) == self


OWNER_FILE = "owner.json"


def owned_root(state: Path) -> Path:
    """Where the commands under state directory ``state`` record the servers they start."""
    return state / "owned"


class OwnedProcesses:
    """The servers a command started, one JSON record per process in ``directory``.

    ``close()`` stops every recorded process still running and refuses later starts, so a
    thread still starting servers while the command stops cannot leave one behind.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.closed = False
        self._lock = threading.Lock()
        directory.mkdir(parents=True, exist_ok=True)
        owner = ProcessIdentity.of(os.getpid())
        assert owner is not None  # this process runs
        _write_json(directory / OWNER_FILE, asdict(owner))

    @contextlib.contextmanager
    def starting(self, name: str) -> Iterator[None]:
        """Held while a process starts and is recorded; refuses once the command stops."""
        with self._lock:
            if self.closed:
                raise StartupError(f"not starting {name}: the command is stopping")
            yield

    def record(self, name: str, pid: int, argv: Sequence[str]) -> None:
        # The argv given, not /proc's: the kernel may not have set the new command line up
        # yet when Popen returns. /proc shows the same once it has (no server here is a
        # script re-executing itself). The start time is the fork's, there from the start.
        fields = _stat_fields(pid)
        start_ticks = int(fields[19]) if len(fields) > 19 else -1
        identity = ProcessIdentity(pid, [str(a) for a in argv], start_ticks)
        _write_json(self.directory / f"{pid}.json", {"name": name, **asdict(identity)})

    def forget(self, pid: int) -> None:
        (self.directory / f"{pid}.json").unlink(missing_ok=True)

    def close(self, timeout: float = 10.0) -> list[str]:
        """Stop whatever is still recorded; returns the names of what was running."""
        with self._lock:
            self.closed = True
        stopped = stop_recorded(self.directory, timeout)
        (self.directory / OWNER_FILE).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.directory.rmdir()
        return stopped


_current_owner: OwnedProcesses | None = None


@contextlib.contextmanager
def owned_processes(directory: Path, stay_closed: bool = False) -> Iterator[OwnedProcesses]:
    """Record every server this process starts in ``directory``; stop what is left on exit.

    With ``stay_closed`` (a command about to exit) the closed registry stays installed after
    the block, so a late thread cannot start a server that nothing would stop.
    """
    global _current_owner
    previous = _current_owner
    owner = OwnedProcesses(directory)
    _current_owner = owner
    try:
        yield owner
    finally:
        owner.close()
        if not stay_closed:
            _current_owner = previous


def _write_json(path: Path, data: object) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def _read_identity(path: Path) -> tuple[str, ProcessIdentity] | None:
    try:
        data = json.loads(path.read_text())
        identity = ProcessIdentity(int(data["pid"]), list(data["argv"]), int(data["start_ticks"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return str(data.get("name") or Path(identity.argv[0]).name), identity


def stop_recorded(directory: Path, timeout: float = 10.0) -> list[str]:
    """Stop the process group of each record in ``directory`` that is still ours.

    A leader that is alive but no longer matches its record is a recycled pid: left alone,
    with its group. A leader that is gone may have left its group behind (Python-backend
    stubs); the kernel does not reuse a pid while it names a live group, so those are ours.
    """
    stopped: list[str] = []
    for path in sorted(directory.glob("*.json")):
        if path.name == OWNER_FILE or (found := _read_identity(path)) is None:
            path.unlink(missing_ok=True)
            continue
        name, identity = found
        current = ProcessIdentity.of(identity.pid)
        if current == identity or (current is None and group_members(identity.pid)):
            stop_group(identity.pid, timeout)
            stopped.append(name)
            log_event(logger, "process.stopped_from_record", name=name, pid=identity.pid)
        path.unlink(missing_ok=True)
    return stopped


def stop_owned(
    state_root: Path, owner_timeout: float = 180.0, running_owners: bool = True
) -> list[str]:
    """Stop every other command's servers recorded under ``state_root``; what was stopped.

    A command still running is asked first (SIGTERM), so it tears down as on Ctrl-C (its
    cluster objects too); after ``owner_timeout`` it is killed and its servers are stopped
    from their records, as are those of a command that is already gone. Without
    ``running_owners`` only the leftovers of commands that are gone are stopped.
    """
    stopped: list[str] = []
    if not state_root.is_dir():
        return stopped
    for directory in sorted(p for p in state_root.iterdir() if p.is_dir()):
        found = _read_identity(directory / OWNER_FILE)
        owner = found[1] if found is not None else None
        if owner is not None and owner.pid == os.getpid():
            continue
        if owner is not None and owner.alive() and not running_owners:
            continue
        if owner is not None and owner.alive():
            command = " ".join(owner.argv[:4])
            with contextlib.suppress(ProcessLookupError):  # it may just have ended
                os.kill(owner.pid, signal.SIGTERM)
            deadline = time.monotonic() + owner_timeout
            while owner.alive() and time.monotonic() < deadline:
                time.sleep(0.2)
            if owner.alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(owner.pid, signal.SIGKILL)
            stopped.append(f"{command} (pid {owner.pid})")
            log_event(logger, "process.owner_stopped", pid=owner.pid, command=command)
        stopped += stop_recorded(directory)
        (directory / OWNER_FILE).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            directory.rmdir()
    return stopped
