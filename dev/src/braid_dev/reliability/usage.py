"""What a process holds (resident memory, open file descriptors), read from ``/proc``.

A fuzz campaign reads the gateway's usage before and after: a request path that leaks a
socket, a buffer or a task shows up as growth that survives the campaign.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ProcessUsage:
    rss_bytes: int
    open_fds: int

    @classmethod
    def of(cls, pid: int) -> ProcessUsage:
        rss = 0
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
                break
        return cls(rss_bytes=rss, open_fds=len(os.listdir(f"/proc/{pid}/fd")))

    def growth_mib(self, after: ProcessUsage) -> float:
        """Resident memory gained between this reading and ``after``, MiB."""
        return round((after.rss_bytes - self.rss_bytes) / 2**20, 1)

    def notes(self, prefix: str) -> dict[str, float | int | str]:
        """The figures as ``FuzzTally.notes`` entries (``rss_mib_<prefix>``, ``fds_<prefix>``)."""
        return {
            f"rss_mib_{prefix}": round(self.rss_bytes / 2**20, 1),
            f"fds_{prefix}": self.open_fds,
        }


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not count)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
