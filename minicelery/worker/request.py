"""A task message the worker accepted, or why it refused one: what the consumer reads from a delivery.

Every delivery is judged from its headers alone (the body stays raw for the child): malformed headers, a
content type outside ``accept_content`` or an unregistered task name make a :class:`Refusal` with the
log text Celery prints; anything else makes a :class:`Request`. Celery's counterpart is
``celery.worker.request.Request`` with the checks of ``celery.worker.consumer``'s strategy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .. import protocol, serialization
from ..exceptions import ContentDisallowed, InvalidTaskError, NotRegistered
from ..registry import TaskRegistry
from ..saferepr import saferepr
from ..transport import Delivery
from .job import Job

__all__ = ["Refusal", "Request", "read_delivery"]

#: How many characters of a refused message's headers its log line shows.
HEADERS_SHOWN = 4096

# The headers name the task id, so an operator can tell which message was dropped.
_INVALID = """\
Received invalid task message: %s
The message has been ignored and discarded.

The full contents of the message headers:
%s
"""

_UNREGISTERED = """\
Received unregistered task of type %r.
The message has been ignored and discarded.

Did you remember to import the module containing this task?
Or maybe you're using relative imports?

Please see the documentation for more information: the worker imports the modules named by -A,
`include` and `imports`, and a task's name must match between the client and the worker.

The full contents of the message body was:
%r (%db)

The full contents of the message headers:
%s
"""


@dataclass(eq=False)
class Request:
    """A task message the worker accepted: its delivery, its parsed headers and the job for a child."""

    tag: int
    generation: int  # which connection delivered it: a request of a lost connection is never settled
    headers: protocol.TaskHeaders
    task: Any
    job: Job
    time_start: float | None = None  # wall-clock time a child was given it (inspect active)

    @property
    def label(self) -> str:
        """``name[id]``, as Celery's log lines show a task."""
        return f"{self.headers.task}[{self.headers.id}]"

    @property
    def acks_late(self) -> bool:
        """Acknowledge after the outcome rather than when a child takes the job."""
        return bool(self.task.acks_late)

    def limits(self, default: tuple[float | None, float | None]) -> tuple[float | None, float | None]:
        """The (hard, soft) time limits: the message's, else the task's, else the worker's ``default``."""
        hard, soft = self.headers.timelimit
        hard = next((v for v in (hard, self.task.time_limit, default[0]) if v is not None), None)
        soft = next((v for v in (soft, self.task.soft_time_limit, default[1]) if v is not None), None)
        return hard, soft


@dataclass(frozen=True)
class Refusal:
    """A delivery the worker will not run: the error for its sender, and the log line (template, values)."""

    error: BaseException
    task_id: str | None
    reply_to: str | None
    correlation_id: str | None
    template: str
    values: tuple[Any, ...]


def read_delivery(delivery: Delivery, tasks: TaskRegistry, accept: Any, generation: int,
                  send_results: bool, events: bool = False) -> Request | Refusal:
    """Judge a delivery from its headers: the :class:`Request` to run, or the :class:`Refusal` to send
    (``events``: task events are on, so the job's child describes its outcome for them)."""
    props = delivery.properties
    raw_headers = props.get("headers")
    try:
        headers = protocol.parse_headers(raw_headers, props)
    except InvalidTaskError as exc:
        task_id = (raw_headers or {}).get("id")
        return Refusal(exc, task_id if isinstance(task_id, str) else None, props.get("reply_to"),
                       props.get("correlation_id"), _INVALID, (exc, _shown(raw_headers)))
    try:
        serialization.check_accepted(props.get("content_type"), accept)
    except ContentDisallowed as exc:
        return _refusal(headers, exc, _INVALID, (exc, _shown(raw_headers)))
    task = tasks.get(headers.task)
    if task is None:
        missing = NotRegistered(headers.task, tasks.suggest(headers.task))
        return _refusal(headers, missing, _UNREGISTERED,
                        (headers.task, delivery.body[:1024], len(delivery.body), _shown(raw_headers)))
    send_result = bool(send_results and headers.reply_to and not headers.ignore_result
                       and not task.ignore_result)
    job = Job(headers.task, headers.id, delivery.body, props.get("content_type"),
              props.get("content_encoding"), _request_fields(delivery, headers), send_result, events)
    return Request(delivery.delivery_tag, generation, headers, task, job)


def _shown(headers: Any) -> str:
    """Headers as the refusal log shows them: their repr, bounded in length and depth (a hostile message
    may nest them thousands of levels deep, or make them megabytes long)."""
    return saferepr(headers, HEADERS_SHOWN, maxlevels=protocol.MAX_HEADER_DEPTH + 1)


def _refusal(headers: protocol.TaskHeaders, error: BaseException, template: str,
             values: tuple[Any, ...]) -> Refusal:
    return Refusal(error, headers.id, headers.reply_to, headers.correlation_id, template, values)


def _request_fields(delivery: Delivery, headers: protocol.TaskHeaders) -> dict[str, Any]:
    """The task's request context as the child's ``task.request`` shows it (Celery's names)."""
    delivery_info = {"exchange": delivery.exchange, "routing_key": delivery.routing_key,
                     "priority": delivery.properties.get("priority") or 0,
                     "redelivered": delivery.redelivered}
    return {**headers.request_fields(), "delivery_info": delivery_info}
