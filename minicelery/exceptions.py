"""Every exception minicelery raises, in one place.

Celery spreads these over ``celery.exceptions``, ``kombu.exceptions`` and ``billiard.exceptions``; here they
live together, keep Celery's names, and travel on the wire under Celery's module names (see
:data:`WIRE_MODULES`) so a Celery client rebuilds the exceptions a minicelery worker reports, and back.

The tree::

    Exception
    ├── CeleryError
    │   ├── ImproperlyConfigured          bad or missing configuration
    │   │   └── ScheduleFileError         beat's schedule file is corrupt, foreign or unwritable
    │   ├── BrokerDataError               the embedded broker's data directory is locked or damaged
    │   ├── SecurityError                 refused to rebuild or decode something unsafe
    │   │   └── ContentDisallowed         a message's content type is not in accept_content
    │   ├── TaskPredicate                 control flow raised from inside a task
    │   │   ├── Retry                     the task asked to be retried
    │   │   ├── Ignore                    the task asked that no state be stored
    │   │   └── Reject                    the task asked that its message be rejected
    │   ├── SchedulingError               beat could not use or send one entry of the schedule
    │   └── TaskError
    │       ├── NotRegistered (KeyError)  no task of that name in the registry
    │       ├── AlreadyRegistered
    │       ├── TimeoutError              AsyncResult.get() waited too long
    │       ├── MaxRetriesExceededError   retry() past max_retries
    │       ├── TaskRevokedError          the task expired or was revoked
    │       ├── InvalidTaskError          a task message that cannot be run
    │       ├── ChordError                a chord's header failed, so its body cannot run
    │       └── QueueNotFound (KeyError)
    ├── MessagingError                    (kombu's family)
    │   ├── OperationalError              the broker cannot be reached or went away
    │   │   └── NoReplyError              no worker answered a remote control request in time
    │   ├── EncodeError                   a value the serializer cannot encode
    │   └── DecodeError                   a body that cannot be decoded
    ├── SoftTimeLimitExceeded             raised inside a task at its soft time limit   (billiard's family)
    ├── TimeLimitExceeded                 the task hit its hard time limit and its process was killed
    ├── WorkerLostError                   the process running the task died
    ├── Terminated                        the task was terminated by a cold shutdown
    ├── ParseException                    a crontab field that cannot be read (not a ValueError)
    └── UsageError                        a command-line mistake (exit code 64, no traceback)
"""

from __future__ import annotations

import datetime
import numbers
from typing import Any

__all__ = [
    "AlreadyRegistered",
    "AlwaysEagerIgnored",
    "ChordError",
    "BrokerDataError",
    "CeleryError",
    "CeleryWarning",
    "ContentDisallowed",
    "DecodeError",
    "DuplicateTaskNameWarning",
    "EncodeError",
    "Ignore",
    "ImproperlyConfigured",
    "InvalidTaskError",
    "NoReplyError",
    "MaxRetriesExceededError",
    "MessagingError",
    "NotRegistered",
    "OperationalError",
    "ParseException",
    "QueueNotFound",
    "Reject",
    "Retry",
    "ScheduleFileError",
    "SchedulingError",
    "SecurityError",
    "SoftTimeLimitExceeded",
    "TaskError",
    "TaskPredicate",
    "TaskRevokedError",
    "Terminated",
    "TimeLimitExceeded",
    "TimeoutError",
    "UsageError",
    "WorkerLostError",
    "WIRE_MODULES",
]


class CeleryError(Exception):
    """Base class of the errors that belong to Celery's own family."""


class ImproperlyConfigured(CeleryError):
    """Raised when the configuration is missing, inconsistent or names something that does not exist."""


class ScheduleFileError(ImproperlyConfigured):
    """Raised when beat's schedule file is corrupt, not one of ours (e.g. Celery's shelve) or unwritable."""


class SchedulingError(CeleryError):
    """Raised when beat cannot use or send one schedule entry; beat logs it and goes on with the others."""
class BrokerDataError(CeleryError):
    """The embedded broker's data directory is locked by another broker, or damaged (file, offset named)."""


class SecurityError(CeleryError):
    """Raised when minicelery refuses to decode or rebuild something it cannot trust."""


class ContentDisallowed(SecurityError):
    """Raised when a message's content type is not in ``accept_content`` (pickle is never accepted)."""


class TaskPredicate(CeleryError):
    """Base class of the exceptions a task raises to steer its own outcome."""


class Retry(TaskPredicate):
    """Raised by ``Task.retry()``: the task has been re-sent and this run ends in the RETRY state.

    Attributes:
        message: optional text.
        exc: the exception that caused the retry, if any.
        when: the countdown in seconds, or the ETA as a datetime.
    """

    def __init__(self, message: str | None = None, exc: BaseException | None = None,
                 when: Any = None, is_eager: bool = False, sig: Any = None) -> None:
        self.message = message
        self.exc = exc
        self.when = when
        self.is_eager = is_eager
        self.sig = sig
        super().__init__(self, exc, when)

    def humanize(self) -> str:
        """Say when the retry happens: ``in 5s`` or ``at <eta>``."""
        if isinstance(self.when, numbers.Number):
            return f"in {self.when}s"
        if isinstance(self.when, datetime.datetime):
            return f"at {self.when.isoformat()}"
        return f"at {self.when}"

    def __str__(self) -> str:
        if self.message:
            return self.message
        if self.exc:
            return f"Retry {self.humanize()}: {self.exc!r}"
        return f"Retry {self.humanize()}"

    def __reduce__(self) -> Any:
        return self.__class__, (self.message, self.exc, self.when)


class Ignore(TaskPredicate):
    """Raised by a task to end without storing any state."""


class Reject(TaskPredicate):
    """Raised by a task to reject its message, optionally asking the broker to requeue it."""

    def __init__(self, reason: Any = None, requeue: bool = False) -> None:
        self.reason = reason
        self.requeue = requeue
        super().__init__(reason, requeue)

    def __repr__(self) -> str:
        return f"reject requeue={self.requeue}: {self.reason}"


class TaskError(CeleryError):
    """Base class of the errors about one task."""


class NotRegistered(KeyError, TaskError):
    """Raised when a task name is not in the registry; suggests close names and reminds to import."""

    def __init__(self, name: Any = None, suggestions: tuple[str, ...] = ()) -> None:
        super().__init__(name)
        self.suggestions = tuple(suggestions)

    def __repr__(self) -> str:
        text = f"Task of kind {self} never registered, please make sure it's imported."
        if self.suggestions:
            text += " Did you mean " + " or ".join(repr(s) for s in self.suggestions) + "?"
        return text

    def __reduce__(self) -> Any:
        return self.__class__, (self.args[0] if self.args else None, self.suggestions)


class AlreadyRegistered(TaskError):
    """Raised when a task name is registered twice where that is not allowed."""


class TimeoutError(TaskError):  # noqa: A001 - Celery's name, deliberately not the builtin
    """Raised by ``AsyncResult.get()`` when the result did not arrive in time."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*(args or ("The operation timed out.",)))


class MaxRetriesExceededError(TaskError):
    """Raised by ``Task.retry()`` when the task has been retried ``max_retries`` times already."""

    def __init__(self, *args: Any, task_args: Any = None, task_kwargs: Any = None) -> None:
        self.task_args = task_args
        self.task_kwargs = task_kwargs
        super().__init__(*args)


class TaskRevokedError(TaskError):
    """Raised (and stored as REVOKED) when a task expired before it could run."""


class InvalidTaskError(TaskError):
    """Raised when a task message or a task class is malformed; the message says what is wrong."""


class ChordError(TaskError):
    """Stored as the chord body's FAILURE when a header task failed (its text is the header's error)."""


class QueueNotFound(KeyError, TaskError):
    """Raised when a task is routed to a queue that is not defined."""


class MessagingError(Exception):
    """Base class of the errors from talking to the broker (kombu's family in Celery)."""


class OperationalError(MessagingError):
    """Raised when the broker cannot be reached or the connection is lost; the URL's password is masked.

    ``url`` (masked) and ``reason`` (what the transport reported) are kept as fields, so that a caller
    can log them in its own words without taking the message apart."""

    def __init__(self, message: str = "", *, url: str | None = None, reason: str | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.reason = reason

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild_operational_error, (str(self), self.url, self.reason)


class NoReplyError(OperationalError):
    """Raised by ``inspect``/``control`` on the command line when no worker answered within ``--timeout``
    (exit 69, as Celery's CLI); check the worker runs, its node name (``-d``), and the broker."""


class EncodeError(MessagingError):
    """Raised when the serializer cannot encode a value; nothing has been sent."""


class DecodeError(MessagingError):
    """Raised when a message body cannot be decoded with its declared content type."""


class SoftTimeLimitExceeded(Exception):
    """Raised inside a task when its soft time limit expires; the task may catch it and clean up."""

    def __str__(self) -> str:
        return f"SoftTimeLimitExceeded{self.args}"


class TimeLimitExceeded(Exception):
    """The task's hard time limit expired and the process running it was killed."""

    def __str__(self) -> str:
        return f"TimeLimitExceeded{self.args}"


class WorkerLostError(Exception):
    """The process running the task exited or was killed before the task finished."""


class Terminated(Exception):
    """The task was terminated by a cold shutdown of the worker."""


class ParseException(Exception):
    """Raised by ``crontab_parser`` for a field it cannot read; like Celery's, it is not a ValueError."""


class UsageError(Exception):
    """A command-line mistake (a bad option, no app): the command line reports it in one paragraph and
    exits with ``EX_USAGE``. Celery's is click's ``UsageError``."""


class CeleryWarning(UserWarning):
    """Base class of minicelery's warnings."""


class DuplicateTaskNameWarning(CeleryWarning):
    """Two different functions were registered under one task name; the first one wins."""


class AlwaysEagerIgnored(CeleryWarning):
    """``task_always_eager`` was ignored for a call that cannot run eagerly."""


#: The module each exception is reported under on the wire, so Celery peers can rebuild it.
WIRE_MODULES: dict[str, str] = {
    **{name: "celery.exceptions" for name in (
        "CeleryError", "ImproperlyConfigured", "SecurityError", "TaskPredicate", "Retry", "Ignore",
        "Reject", "TaskError", "NotRegistered", "AlreadyRegistered", "TimeoutError",
        "MaxRetriesExceededError", "TaskRevokedError", "InvalidTaskError", "QueueNotFound", "ChordError",
    )},
    **{name: "kombu.exceptions" for name in (
        "OperationalError", "EncodeError", "DecodeError", "ContentDisallowed",
    )},
    **{name: "billiard.exceptions" for name in (
        "SoftTimeLimitExceeded", "TimeLimitExceeded", "WorkerLostError", "Terminated",
    )},
}


def _rebuild_operational_error(message: str, url: str | None, reason: str | None) -> OperationalError:
    """Unpickle an :class:`OperationalError` with its fields (they are keyword-only)."""
    return OperationalError(message, url=url, reason=reason)
