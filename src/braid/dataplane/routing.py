"""Choosing a path per request, and keeping the routing table current without a restart.

The choice is a pure function of the table and one uniform random number, so tests feed the
numbers and check the split exactly. The table itself arrives as a JSON file (a ConfigMap
volume in a cluster, a file the person edits in local mode); ``RoutingTableWatcher`` polls it
and hands every valid new version to a callback. An invalid file is logged and ignored: the
gateway keeps serving with the last good table rather than failing requests. The endpoints
file beside it is watched the same way (``FileWatcher``); its addresses only ever grow
(``grown_endpoints``).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path
from typing import Generic, TypeVar

from pydantic import ValidationError

from braid.api.routing import Endpoints, RoutingTable
from braid.logs import log_event

logger = logging.getLogger(__name__)

T = TypeVar("T")


class RoutingTableError(ValueError):
    """A routing table that cannot be used: unreadable, invalid, or naming unknown paths."""


@dataclass(frozen=True)
class WeightedChoice:
    """Path ids with cumulative weights, built once per table, so a choice is one bisect."""

    ids: tuple[str, ...]
    cumulative: tuple[float, ...]

    @classmethod
    def of(cls, table: RoutingTable) -> WeightedChoice:
        active = [(p.id, p.weight) for p in table.paths if p.weight > 0]
        return cls(
            ids=tuple(i for i, _ in active),
            cumulative=tuple(accumulate(w for _, w in active)),
        )

    def pick(self, u: float) -> str:
        """The path for a uniform ``u`` in [0, 1): path i gets a share w_i / sum(w)."""
        if not 0.0 <= u < 1.0:
            raise ValueError(f"u must be in [0, 1), got {u}")
        index = bisect.bisect_right(self.cumulative, u * self.cumulative[-1])
        return self.ids[min(index, len(self.ids) - 1)]

    def shares(self) -> dict[str, float]:
        """The expected fraction of requests per path."""
        total = self.cumulative[-1]
        previous = 0.0
        out = {}
        for path_id, cum in zip(self.ids, self.cumulative, strict=True):
            out[path_id] = (cum - previous) / total
            previous = cum
        return out


def parse_routing_table(
    text: str | bytes, known_paths: Iterable[str] | None = None
) -> RoutingTable:
    """Parse and check a routing table document; ``RoutingTableError`` says what is wrong."""
    try:
        table = RoutingTable.model_validate_json(text)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}"
            for err in exc.errors()
        )
        raise RoutingTableError(f"invalid routing table: {problems}") from None
    if known_paths is not None:
        unknown = table.unknown_paths(known_paths)
        if unknown:
            raise RoutingTableError(f"routing table names paths not in the catalog: {unknown}")
    return table


def read_routing_table(path: Path, known_paths: Iterable[str] | None = None) -> RoutingTable:
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise RoutingTableError(f"cannot read routing table {path}: {exc}") from None
    return parse_routing_table(text, known_paths)


def read_endpoints(path: Path) -> Endpoints:
    """An ``endpoints.json``; ``ValueError`` (pydantic's included) or ``OSError`` if unusable."""
    return Endpoints.model_validate_json(path.read_bytes())


def grown_endpoints(current: Endpoints, published: Endpoints, overrides: Endpoints) -> Endpoints:
    """What a gateway serving ``current`` routes to once ``published`` arrives: every address
    it knew, the published ones over them, and the command line's ``overrides`` over all.

    Nothing is dropped. The operator publishes a Block's models only while the Block has a
    ready pod, so a host restarting vanishes from the file for a while; forgetting it would
    refuse the requests pinned to its paths and the controller's tables naming them, where
    keeping it lets the prober mark it down and those requests fall back until it is back.
    A Block published after the gateway started (a host Ready later) is added.
    """
    return Endpoints(
        servers={**current.servers, **published.servers, **overrides.servers},
        models={**current.models, **published.models, **overrides.models},
    )


def write_routing_table(table: RoutingTable, path: Path) -> None:
    """Write atomically (rename), so a watching gateway never reads half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(table.model_dump_json(indent=2) + "\n")
    tmp.replace(path)


def _file_key(path: Path) -> tuple[int, int, int] | None:
    # stat() follows symlinks: a ConfigMap update swaps the ``..data`` link, which changes
    # the inode of the file reached through it, so the key changes even if mtime does not.
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


class FileWatcher(Generic[T]):
    """Poll a file and call ``on_change`` with each new version that ``read`` accepts.

    ``read`` raises one of ``refused`` for a version to ignore (logged as ``<what>.rejected``;
    the last good one stays in force). ``check`` forgets nothing: ``recheck`` reads the
    file again even if it did not change (a version refused before may be good now).
    """

    def __init__(
        self,
        path: Path,
        read: Callable[[Path], T],
        on_change: Callable[[T], None],
        *,
        refused: tuple[type[Exception], ...],
        what: str,
        interval_s: float = 0.5,
    ) -> None:
        self.path = path
        self.read = read
        self.on_change = on_change
        self.refused = refused
        self.what = what
        self.interval_s = interval_s
        self._key: tuple[int, int, int] | None = None
        self._task: asyncio.Task[None] | None = None
        self.reloads = 0
        self.rejected = 0

    def check(self) -> bool:
        """Read the file if it changed since the last look; True when a new version was applied."""
        key = _file_key(self.path)
        if key is None or key == self._key:
            return False
        self._key = key
        try:
            value = self.read(self.path)
        except self.refused as exc:
            self.rejected += 1
            log_event(
                logger, f"{self.what}.rejected", level=logging.WARNING, path=self.path, error=exc
            )
            return False
        self.on_change(value)
        self.reloads += 1
        return True

    def recheck(self) -> bool:
        """Read the file now, changed or not."""
        self._key = None
        return self.check()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                self.check()
            except Exception as exc:  # the watcher must outlive any surprise in one poll
                log_event(logger, f"{self.what}.watch_failed", level=logging.ERROR, error=exc)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


class RoutingTableWatcher(FileWatcher[RoutingTable]):
    """Poll a routing table file and call ``on_change`` with each new valid table; one that
    names a path outside ``known_paths`` (settable: the executor's paths can grow) is refused."""

    def __init__(
        self,
        path: Path,
        on_change: Callable[[RoutingTable], None],
        *,
        known_paths: Iterable[str] | None = None,
        interval_s: float = 0.5,
    ) -> None:
        super().__init__(
            path,
            lambda p: read_routing_table(p, self.known_paths),
            on_change,
            refused=(RoutingTableError,),
            what="routing",
            interval_s=interval_s,
        )
        self.known_paths = None if known_paths is None else frozenset(known_paths)
