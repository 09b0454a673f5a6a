"""Logging set-up for the worker, in Celery's format.

``[%(asctime)s: %(levelname)s/%(processName)s] %(message)s`` on stderr, so that pool children show as
``ForkPoolWorker-1`` and the main process as ``MainProcess``. Celery's counterpart is ``celery.app.log``;
left out are colours, log files per child and stdout redirection.
"""

from __future__ import annotations

import logging
import sys

__all__ = ["LOG_FORMAT", "LEVELS", "parse_level", "setup"]

LOG_FORMAT = "[%(asctime)s: %(levelname)s/%(processName)s] %(message)s"
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL", "FATAL")


def parse_level(name: str | int) -> int:
    """Turn ``'info'``/``'INFO'``/``20`` into a logging level; raise ``ValueError`` for anything else."""
    if isinstance(name, int):
        return name
    upper = str(name).strip().upper()
    if upper not in LEVELS:
        raise ValueError(f"invalid log level {name!r} (choose from {', '.join(LEVELS)})")
    return logging.getLevelName(upper) if upper != "FATAL" else logging.CRITICAL


def setup(level: int, fmt: str = LOG_FORMAT, stream: object = None) -> None:
    """Send the root logger to stderr in Celery's format at ``level`` (idempotent)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_minicelery", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)  # type: ignore[arg-type]
    handler.setFormatter(logging.Formatter(fmt))
    handler._minicelery = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    # pika logs each failed connection attempt at ERROR, with a traceback; minicelery reports the failure
    # itself, in one paragraph (and one log line per attempt). Its warnings and errors show at DEBUG only.
    logging.getLogger("pika").setLevel(logging.WARNING if level <= logging.DEBUG else logging.CRITICAL)
