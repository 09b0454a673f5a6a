"""What the prefork pool reports to its owner: one event per thing that happened to a job or a child.

The pool queues them as it reads its children's messages, reaps children and enforces time limits; the
worker's consumer turns them into results and acknowledgements. Celery counterpart: the callbacks
billiard's ``ApplyResult`` calls (``accept_callback``, ``callback``, ``error_callback``,
``timeout_callback``) and its ``WorkerLostError`` path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["ChildExited", "JobDone", "JobLost", "JobStarted", "PoolEvent", "SoftLimitExceeded"]


@dataclass(frozen=True)
class JobStarted:
    """A child began running a job; ``started_at`` is the child's wall-clock time (``time.time()``)."""

    job_id: Any  # the caller's hashable id
    pid: int
    started_at: float


@dataclass(frozen=True)
class JobDone:
    """A job's handler returned ``result`` (a ``HandlerError`` if it raised) after ``runtime`` seconds."""

    job_id: Any  # the caller's hashable id
    pid: int
    result: Any
    runtime: float


@dataclass(frozen=True)
class JobLost:
    """A job ended without a result: ``WorkerLostError``, ``TimeLimitExceeded`` or ``Terminated``."""

    job_id: Any  # the caller's hashable id
    pid: int
    error: BaseException


@dataclass(frozen=True)
class SoftLimitExceeded:
    """A job passed its soft time limit; the child was signalled and the job keeps running."""

    job_id: Any  # the caller's hashable id
    pid: int
    limit: float


@dataclass(frozen=True)
class ChildExited:
    """A child exited unexpectedly (not recycled, not stopped); ``reason`` reads ``'signal 9 (SIGKILL)'``."""

    pid: int
    name: str
    reason: str


PoolEvent = JobStarted | JobDone | JobLost | SoftLimitExceeded | ChildExited
