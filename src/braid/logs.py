"""Structured logs: one event per line, ``event key=value ...``, greppable and parseable."""

from __future__ import annotations

import logging
from typing import Any


def _fmt(value: Any) -> str:
    text = str(value)
    return repr(text) if (" " in text or "=" in text or not text) else text


def kv(event: str, **fields: Any) -> str:
    """Render one event with its fields in a stable order."""
    return " ".join([event, *(f"{k}={_fmt(v)}" for k, v in fields.items())])


def log_event(logger: logging.Logger, event: str, level: int = logging.INFO, **fields: Any) -> None:
    if logger.isEnabledFor(level):
        logger.log(level, kv(event, **fields))


CLIENT_LIBRARIES = ("httpx", "httpcore", "urllib3", "kubernetes")
"""Their DEBUG lines (every connection, every request) drowned a controller's decisions:
~490 KB in a few minutes of demo. They log at WARNING, also under ``-v``."""


def setup_logging(level: int = logging.INFO) -> None:
    """One line per event, ``time LEVEL logger event key=value ...``; clients at WARNING."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    for name in CLIENT_LIBRARIES:
        logging.getLogger(name).setLevel(logging.WARNING)
