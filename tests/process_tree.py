"""What a command started, read from /proc: its descendants and the ports they listen on.

The tests of SIGTERM/SIGHUP handling take a snapshot while the command runs and check that
none of it outlives the command. A process is named by its identity (pid, command line, start
time), so a pid the kernel hands to a newcomer in between is not mistaken for a survivor.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from braid_dev.stack.processes import ProcessIdentity

_SOCKET = re.compile(r"socket:\[(\d+)\]")
TCP_LISTEN = "0A"


def _parents() -> dict[int, int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        parents[int(entry.name)] = int(fields[1])
    return parents


def descendants(root: int) -> list[ProcessIdentity]:
    """Every live process below ``root`` (children, theirs, ...), as identities."""
    children: dict[int, list[int]] = {}
    for pid, parent in _parents().items():
        children.setdefault(parent, []).append(pid)
    found: list[ProcessIdentity] = []
    todo = list(children.get(root, []))
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        identity = ProcessIdentity.of(pid)
        if identity is not None:
            found.append(identity)
    return found


def _listening_inodes() -> dict[int, int]:
    """Socket inode -> port of every TCP socket in LISTEN state (IPv4 and IPv6)."""
    inodes: dict[int, int] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == TCP_LISTEN:
                inodes[int(fields[9])] = int(fields[1].rsplit(":", 1)[1], 16)
    return inodes


def listening_ports(pids: list[int]) -> set[int]:
    """The TCP ports the processes ``pids`` listen on."""
    inodes = _listening_inodes()
    ports: set[int] = set()
    for pid in pids:
        try:
            links = [os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()]
        except OSError:
            continue
        for link in links:
            match = _SOCKET.fullmatch(link)
            if match and int(match.group(1)) in inodes:
                ports.add(inodes[int(match.group(1))])
    return ports


def all_listening_ports() -> set[int]:
    return set(_listening_inodes().values())


@dataclass(frozen=True)
class Snapshot:
    """What a command had started at one moment."""

    processes: list[ProcessIdentity]
    ports: set[int]

    @classmethod
    def of(cls, root: int) -> Snapshot:
        """``root``'s descendants, and the ports they or ``root`` itself listen on."""
        processes = descendants(root)
        return cls(processes, listening_ports([root, *(p.pid for p in processes)]))

    def names(self) -> set[str]:
        """Program names, with the module or script of Python processes (``braid.cli
        gateway``, ``operator/main.py``) so a test can tell them apart."""
        out: set[str] = set()
        for p in self.processes:
            out.add(Path(p.argv[0]).name)
            out.add(" ".join(p.argv[1:5]))
        return out

    def survivors(self) -> list[str]:
        return [" ".join(p.argv)[:200] for p in self.processes if p.alive()]

    def open_ports(self) -> set[int]:
        return self.ports & all_listening_ports()


def wait_until_gone(snapshot: Snapshot, timeout: float = 60.0) -> None:
    """Give the last processes time to exit (a bounded wait, not a timing check)."""
    deadline = time.monotonic() + timeout
    while (snapshot.survivors() or snapshot.open_ports()) and time.monotonic() < deadline:
        time.sleep(0.5)
