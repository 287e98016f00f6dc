"""Repeats, intervals and machine facts for ``bench/``: what an outside reader needs to trust
a figure (CONVENTIONS.md, "Benchmarks").

- **Order.** ``alternated(a, b, repeat)`` runs the two compared modes in turn, the first
  one first in even repeats and last in odd ones, so drift in a shared machine's load does
  not always land on the same side.
- **Interval.** ``median_interval`` is the distribution-free confidence interval of a
  median from order statistics (the ranks come from the binomial distribution with p = 1/2):
  no assumption about the shape of the repeats, and exact for any continuous distribution.
  With 5 repeats the widest such interval (min..max) covers the median with probability
  1 - 2/2^5 = 0.9375, just short of 95 %, so the coverage reached is reported beside it.
- **Machine.** ``machine_facts`` reads cores, CPU model, load average and versions from the
  machine; ``LoadSampler`` records the load average while a benchmark runs, so a figure taken
  on a busy machine says so.
"""

from __future__ import annotations

import importlib.metadata
import math
import os
import platform
import statistics
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

T = TypeVar("T")

CONFIDENCE = 0.95
QUIET_LOAD_PER_CORE = 0.5
"""Without CPU readings (a sampler not run as a context): a 1-minute load average at or below
this share of the cores at every sample counts as quiet."""
QUIET_OTHERS_CPU_SHARE = 0.10
"""The share of the machine's CPU that processes outside the benchmark's own process tree and
the hypervisor's steal may take during a run for it to count as quiet. The load average
cannot say: a benchmark that saturates the cores raises it by itself, and a previous run's
load lingers in it for minutes."""


def is_quiet(others_cpu_share: float | None, steal_share: float | None) -> bool:
    """Quiet: during the run, little CPU went to anything that is not the benchmark, neither
    to other processes here nor to the hypervisor's other guests (steal) (pure)."""
    return (
        others_cpu_share is not None
        and steal_share is not None
        and others_cpu_share + steal_share <= QUIET_OTHERS_CPU_SHARE
    )


def steal_seconds() -> float:
    """CPU seconds the hypervisor gave other guests while this machine wanted them (all
    cores; /proc/stat's ``steal``)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()
    return int(fields[8]) / os.sysconf("SC_CLK_TCK") if len(fields) > 8 else 0.0


_TICKS = os.sysconf("SC_CLK_TCK")


def _proc_stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds used) of a process, or None once it is gone."""
    try:
        text = (Path("/proc") / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICKS


def cpu_seconds_outside(root: int) -> dict[int, float]:
    """CPU seconds used so far by every process that is not ``root`` or a descendant of it."""
    stats = {
        int(p.name): stat
        for p in Path("/proc").iterdir()
        if p.name.isdigit() and (stat := _proc_stat(int(p.name))) is not None
    }
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    own, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid not in own:
            own.add(pid)
            todo += children.get(pid, [])
    return {pid: cpu for pid, (_, cpu) in stats.items() if pid not in own}


def alternated(first: T, second: T, repeat: int) -> tuple[T, T]:
    """The two compared modes in the order repeat ``repeat`` runs them."""
    return (first, second) if repeat % 2 == 0 else (second, first)


def _binomial_cdf(k: int, n: int) -> float:
    """P(X <= k) for X ~ Binomial(n, 1/2)."""
    return sum(math.comb(n, i) for i in range(k + 1)) / (1 << n)


@dataclass(frozen=True)
class Interval:
    """A median with its order-statistic confidence interval over ``n`` repeats."""

    median: float
    low: float
    high: float
    coverage: float
    """The probability that [low, high] holds the true median (>= 0.95 when n >= 6)."""
    n: int

    def as_dict(self, digits: int = 3) -> dict[str, float | int | str]:
        return {
            "median": round(self.median, digits),
            "ci95_low": round(self.low, digits),
            "ci95_high": round(self.high, digits),
            "coverage": round(self.coverage, 4),
            "repeats": self.n,
            "interval": "order statistics of the repeats (distribution-free, binomial ranks)",
        }


def median_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> Interval:
    """The median of ``values`` and the narrowest symmetric order-statistic interval whose
    coverage reaches ``confidence``; min..max (and its lower coverage) when none does."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(float(v) for v in values)
    n = len(ordered)
    # [x_(k+1), x_(n-k)] (1-based) covers the median with probability 1 - 2 P(X <= k).
    best_k = 0
    for k in range(n // 2):
        if 1 - 2 * _binomial_cdf(k, n) >= confidence:
            best_k = k
        else:
            break
    coverage = 1 - 2 * _binomial_cdf(best_k, n) if n > 1 else 0.0
    return Interval(
        median=statistics.median(ordered),
        low=ordered[best_k],
        high=ordered[n - 1 - best_k],
        coverage=coverage,
        n=n,
    )


def cpu_model() -> str:
    """The CPU's model name as the kernel reports it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_facts() -> dict[str, Any]:
    """Cores, CPU model, load average, OS and Python, read now."""
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model(),
        "architecture": platform.machine(),
        "kernel": platform.release(),
        "load_average_1_5_15": [round(v, 2) for v in os.getloadavg()],
        "python": platform.python_version(),
        "braid": _version("braid"),
        "braid_dev": _version("braid-dev"),
    }


def server_metadata(http_address: str) -> dict[str, Any]:
    """A KServe v2 server's own metadata (``GET /v2``): name, version, extensions."""
    try:
        answer = httpx.get(f"http://{http_address}/v2", timeout=10)
        answer.raise_for_status()
        meta: dict[str, Any] = answer.json()
        return meta
    except (httpx.HTTPError, ValueError) as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}


@dataclass
class LoadSampler:
    """Samples the machine's 1-minute load average every ``every_s`` on a thread."""

    every_s: float = 5.0
    samples: list[float] = field(default_factory=list)
    before: tuple[float, float, float] | None = None
    """``uptime``'s 1/5/15-minute load averages just before the run: what others left running."""
    after: tuple[float, float, float] | None = None
    """The same just after it (its 1-minute figure includes the benchmark's own processes)."""
    others_cpu_share: float | None = None
    """CPU used during the run by processes outside this one's tree, as a share of the cores
    (processes that started and ended inside the run are missed)."""
    steal_share: float | None = None
    """CPU the hypervisor took for other guests during the run, as a share of the cores."""
    _others: dict[int, float] = field(default_factory=dict)
    _steal: float = 0.0
    _started: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> LoadSampler:
        self._others = cpu_seconds_outside(os.getpid())
        self._steal = steal_seconds()
        self._started = time.monotonic()
        self.before = os.getloadavg()
        self.samples.append(self.before[0])
        self._thread = threading.Thread(target=self._run, name="load-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.every_s + 1)
        self.after = os.getloadavg()
        self.samples.append(self.after[0])
        wall = time.monotonic() - self._started
        now = cpu_seconds_outside(os.getpid())
        used = sum(cpu - self._others.get(pid, 0.0) for pid, cpu in now.items())
        capacity = wall * (os.cpu_count() or 1)
        self.others_cpu_share = used / capacity if wall > 0 else None
        self.steal_share = (steal_seconds() - self._steal) / capacity if wall > 0 else None

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.samples.append(os.getloadavg()[0])

    def summary(self, cpus: int | None = None) -> dict[str, Any]:
        """Min, median and max of the samples, and whether the machine was quiet."""
        cores = cpus or os.cpu_count() or 1
        if not self.samples:
            return {"samples": 0}
        peak = max(self.samples)
        uptime = {
            f"uptime_{when}_1_5_15": [round(v, 2) for v in reading]
            for when, reading in (("before", self.before), ("after", self.after))
            if reading is not None
        }
        return {
            "samples": len(self.samples),
            "every_s": self.every_s,
            "load_1min_min": round(min(self.samples), 2),
            "load_1min_median": round(statistics.median(self.samples), 2),
            "load_1min_max": round(peak, 2),
            "others_cpu_share": (
                None if self.others_cpu_share is None else round(self.others_cpu_share, 3)
            ),
            "steal_share": None if self.steal_share is None else round(self.steal_share, 3),
            "quiet": (
                is_quiet(self.others_cpu_share, self.steal_share)
                if self.others_cpu_share is not None
                else peak <= QUIET_LOAD_PER_CORE * cores
            ),
            "quiet_means": (
                f"processes outside the benchmark's tree and the hypervisor's steal took <="
                f" {QUIET_OTHERS_CPU_SHARE:.0%} of the {cores} cores during the run (without"
                f" those readings: a 1-minute load average <= {QUIET_LOAD_PER_CORE} x {cores}"
                " at every sample)"
            ),
            **uptime,
        }


def now_utc() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
