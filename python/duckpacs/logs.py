"""Logging: one human-readable line per event, with ``key=value`` fields that scripts can grep.

    2026-11-21 21:40:02 INFO  dimse  association accepted peer=CT1 addr=10.0.0.5:50123

Use :func:`event` so fields are formatted the same way everywhere.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

LOGGER_NAME = "duckpacs"
CORE_LOGGER_NAME = "duckpacs_core"


def setup(level: str = "INFO") -> None:
    """Configure the ``duckpacs`` logger to write to stderr; quieten pynetdicom's chatter."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter(
            "%(asctime)s %(levelname)-5s %(component)-6s %(message)s", "%Y-%m-%d %H:%M:%S"
        )
    )
    handler.addFilter(_ComponentFilter())
    # The Rust core logs through its own loggers (`duckpacs_core.net...`, see pyo3-log).
    for name in (LOGGER_NAME, CORE_LOGGER_NAME):
        root = logging.getLogger(name)
        root.handlers[:] = [handler]
        root.setLevel(level)
        root.propagate = False
    # pynetdicom logs every PDU at INFO; we log one line per association ourselves.
    logging.getLogger("pynetdicom").setLevel(logging.DEBUG if level == "DEBUG" else logging.WARNING)


class _ComponentFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        name = record.name
        if name.startswith(CORE_LOGGER_NAME + ".net"):
            record.component = "dimse"
        elif name.startswith(CORE_LOGGER_NAME):
            record.component = "core"
        elif name.startswith(LOGGER_NAME + "."):
            record.component = name.split(".", 1)[1]
        else:
            record.component = "main"
        return True


def get(component: str) -> logging.Logger:
    """The logger of one component (``dimse``, ``http``, ``store``, ...)."""
    return logging.getLogger(f"{LOGGER_NAME}.{component}")


def fields(**values: Any) -> str:
    """Format ``key=value`` pairs; values with spaces are quoted."""
    parts = []
    for key, value in values.items():
        text = str(value)
        if not text or any(c in text for c in ' "='):
            text = '"' + text.replace('"', '\\"') + '"'
        parts.append(f"{key}={text}")
    return " ".join(parts)


def event(logger: logging.Logger, message: str, level: int = logging.INFO, **values: Any) -> None:
    """Log ``message`` followed by its fields, as one line."""
    if logger.isEnabledFor(level):
        logger.log(level, f"{message} {fields(**values)}" if values else message)
