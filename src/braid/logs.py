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


def setup_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
