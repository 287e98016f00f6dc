"""What a long build reports while it runs (the CLI plugs a rich progress bar in here)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from braid.logs import log_event

logger = logging.getLogger(__name__)


class Progress:
    """What the build reports while it runs; the CLI plugs a rich progress bar in here."""

    def stage(self, name: str, total: int) -> Callable[[], None]:
        """Start a stage of ``total`` steps; returns the function that advances it."""
        return lambda: None

    def done(self, name: str) -> None:
        """The stage ``name`` has finished."""


@contextmanager
def stage(progress: Progress, name: str, total: int) -> Iterator[Callable[[], None]]:
    """A stage of ``total`` steps, reported to ``progress`` and logged with its duration."""
    started = time.monotonic()
    step = progress.stage(name, max(1, total))
    try:
        yield step
    finally:
        progress.done(name)
        log_event(logger, "build.stage", stage=name, seconds=f"{time.monotonic() - started:.1f}")
