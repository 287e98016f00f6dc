"""What a long build or training reports while it runs (the CLI plugs rich progress bars in)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol, TypeVar

from braid.logs import log_event

logger = logging.getLogger(__name__)

Step = TypeVar("Step", covariant=True)


class Reporter(Protocol[Step]):
    """Anything that shows stages: ``stage`` returns the function that advances one."""

    def stage(self, name: str, total: int) -> Step: ...

    def done(self, name: str) -> None: ...


class Progress:
    """What the build reports while it runs; the CLI plugs a rich progress bar in here."""

    def stage(self, name: str, total: int) -> Callable[[], None]:
        """Start a stage of ``total`` steps; returns the function that advances it."""
        return lambda: None

    def done(self, name: str) -> None:
        """The stage ``name`` has finished."""


S = TypeVar("S")


@contextmanager
def stage(progress: Reporter[S], name: str, total: int, event: str = "build.stage") -> Iterator[S]:
    """A stage of ``total`` steps shown by ``progress``, logged as ``event`` with its duration."""
    started = time.monotonic()
    step = progress.stage(name, max(1, total))
    try:
        yield step
    finally:
        progress.done(name)
        log_event(logger, event, stage=name, seconds=f"{time.monotonic() - started:.1f}")
