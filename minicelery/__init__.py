"""minicelery: a small, readable reimplementation of Celery's core, wire-compatible with Celery 5.

``from minicelery import Celery``, decorate functions with ``@app.task``, send them with ``.delay()``,
and run ``python -m minicelery -A proj worker`` to execute them. Importing this package loads neither
pika nor multiprocessing: the broker connection and the worker pool are loaded when first used. Nor does
it load what creating an app and defining tasks do not need (issue 9): the canvas, results, sending and
remote control are imported on first use, here through ``__getattr__`` below.
"""

from __future__ import annotations

import importlib
from typing import Any

from . import builtin_tasks as builtin_tasks  # registers the celery.* tasks in every app
from . import states
from ._state import current_app, current_task
from .app import Celery
from .exceptions import (
    ImproperlyConfigured,
    MaxRetriesExceededError,
    NotRegistered,
    OperationalError,
    Retry,
    SoftTimeLimitExceeded,
    TimeLimitExceeded,
    TimeoutError,
    WorkerLostError,
)
from .local import PromiseProxy, Proxy
from .shared import shared_task
from .task import Task

__version__ = "0.1.0"

#: Exported names imported on first access (PEP 562's module ``__getattr__``): the canvas and results.
_LAZY = {"Signature": "canvas", "chain": "canvas", "group": "canvas", "maybe_signature": "canvas",
         "signature": "canvas", "subtask": "canvas", "chord": "chords", "AsyncResult": "result",
         "EagerResult": "result", "GroupResult": "resultset", "ResultSet": "resultset"}

__all__ = [
    "Celery", "ImproperlyConfigured", "MaxRetriesExceededError", "NotRegistered", "OperationalError",
    "PromiseProxy", "Proxy", "Retry", "SoftTimeLimitExceeded", "Task", "TimeLimitExceeded", "TimeoutError",
    "WorkerLostError", "current_app", "current_task", "shared_task", "states", "__version__", *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = globals()[name] = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
