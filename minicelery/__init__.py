"""minicelery: a small, readable reimplementation of Celery's core, wire-compatible with Celery 5.

``from minicelery import Celery``, decorate functions with ``@app.task``, send them with ``.delay()``,
and run ``python -m minicelery -A proj worker`` to execute them. Importing this package loads neither
pika nor multiprocessing: the broker connection and the worker pool are loaded when first used.
"""

from . import builtin_tasks as builtin_tasks  # registers the celery.* tasks in every app
from . import states
from ._state import current_app, current_task
from .app import Celery
from .canvas import Signature, chain, group, maybe_signature, signature, subtask
from .chords import chord
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
from .result import AsyncResult, EagerResult
from .resultset import GroupResult, ResultSet
from .shared import shared_task
from .task import Task

__version__ = "0.1.0"

__all__ = [
    "AsyncResult",
    "Celery",
    "EagerResult",
    "GroupResult",
    "ImproperlyConfigured",
    "MaxRetriesExceededError",
    "NotRegistered",
    "OperationalError",
    "PromiseProxy",
    "Proxy",
    "ResultSet",
    "Retry",
    "Signature",
    "SoftTimeLimitExceeded",
    "Task",
    "TimeLimitExceeded",
    "TimeoutError",
    "WorkerLostError",
    "chain",
    "chord",
    "current_app",
    "current_task",
    "group",
    "maybe_signature",
    "shared_task",
    "signature",
    "states",
    "subtask",
    "__version__",
]
