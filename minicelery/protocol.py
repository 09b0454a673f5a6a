"""Celery's task message (protocol version 2) and the result message the rpc backend sends back.

A task message is one AMQP message: 19 headers say what to run and when (``task``, ``id``, ``eta``, ...),
a few properties say where the answer goes (``reply_to``, ``correlation_id``), and the body is the triple
``[args, kwargs, embed]``. :class:`TaskMessage` builds one with Celery's exact keys, key order and values;
:func:`parse_headers` and :func:`decode_body` read one back in two steps, because a worker's main process
looks only at the headers and leaves the body to the child that runs the task. See ``docs/protocol.md``.

Celery's counterparts are ``celery.app.amqp.AMQP.as_task_v2``/``send_task_message`` (building),
``celery.worker.request``/``strategy`` (reading) and ``celery.backends.rpc`` with ``base.Backend``
(``_get_result_meta``). Exceptions travel as dicts made by ``serialization.exception_to_meta``, re-exported
here with its inverse. Left out: protocol 1, which Celery still reads (it is refused here with a message
that says so), sent events, and canvas stamping (the ``stamps`` headers are sent, but empty).
"""

from __future__ import annotations

import datetime
import logging
import os
import socket
import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import serialization, states
from .exceptions import InvalidTaskError
from .serialization import exception_to_meta, meta_to_exception, saferepr

__all__ = [
    "Envelope", "TaskHeaders", "TaskMessage", "decode_body", "exception_to_meta", "meta_to_exception",
    "new_task_id", "parse_headers", "parse_iso", "result_meta",
]

logger = logging.getLogger(__name__)
UTC = datetime.timezone.utc
#: Celery's ``argsrepr_maxsize`` and ``kwargsrepr_maxsize``.
REPR_MAXSIZE = 1024


@dataclass(frozen=True, slots=True)
class Envelope:
    """An encoded message: AMQP properties (as a plain dict, with ``headers``) and the body bytes."""

    properties: dict[str, Any]
    body: bytes


@dataclass(frozen=True, slots=True)
class TaskMessage:
    """Everything of one task message, already in wire form (ISO strings, milliseconds as a string).

    Build one with :meth:`create`; :meth:`encode` lays it out as Celery does.
    """

    id: str
    task: str
    args: Sequence[Any] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    eta: str | None = None
    expires: str | None = None
    retries: int = 0
    timelimit: tuple[float | None, float | None] = (None, None)  # (hard, soft): hard first, as sent
    root_id: str | None = None
    parent_id: str | None = None
    group: str | None = None
    group_index: int | None = None
    shadow: str | None = None
    argsrepr: str = "()"
    kwargsrepr: str = "{}"
    origin: str | None = None
    ignore_result: bool = False
    replaced_task_nesting: int = 0
    stamped_headers: list[str] | None = None
    stamps: dict[str, Any] = field(default_factory=dict)
    callbacks: list[Any] | None = None
    errbacks: list[Any] | None = None
    chain: list[Any] | None = None
    chord: Any = None
    reply_to: str | None = None
    correlation_id: str | None = None
    priority: int | None = None
    delivery_mode: int = 2
    expiration: str | None = None  # the AMQP per-message TTL, whole milliseconds as a string
    extra_headers: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def create(cls, name: str, args: Sequence[Any] | None = None, kwargs: Mapping[str, Any] | None = None,
               *, task_id: str | None = None, countdown: float | None = None,
               eta: datetime.datetime | str | None = None,
               expires: float | datetime.datetime | str | None = None, now: datetime.datetime | None = None,
               retries: int = 0, time_limit: float | None = None, soft_time_limit: float | None = None,
               root_id: str | None = None, parent_id: str | None = None, group_id: str | None = None,
               group_index: int | None = None, shadow: str | None = None, reply_to: str | None = None,
               priority: int | None = None, ignore_result: bool = False,
               headers: Mapping[str, Any] | None = None, origin: str | None = None,
               callbacks: list[Any] | None = None, errbacks: list[Any] | None = None,
               chain: list[Any] | None = None, chord: Any = None, delivery_mode: int = 2) -> TaskMessage:
        """Build the message ``apply_async(args, kwargs, **options)`` sends, with Celery's defaults.

        ``countdown`` wins over ``eta``; ``now`` (default: the current UTC time) anchors ``countdown`` and
        ``expires`` given in seconds. ``args`` and ``kwargs`` are kept as given, not copied.

        Raises:
            TypeError: ``args`` is not a list or tuple, or ``kwargs`` is not a mapping (Celery's texts).
        """
        args, kwargs = args or (), kwargs or {}  # Celery's `args or ()`: None and [] both mean no args
        if not isinstance(args, (list, tuple)):
            raise TypeError("task args must be a list or tuple")
        if not isinstance(kwargs, Mapping):
            raise TypeError("task keyword arguments must be a mapping")
        kwargs = kwargs if type(kwargs) is dict else dict(kwargs)
        task_id = task_id or new_task_id()
        if now is None and (countdown or expires is not None):
            now = datetime.datetime.now(UTC)
        expires_iso, expiration = _expiry(task_id, expires, now)
        return cls(
            id=task_id, task=name, args=args, kwargs=kwargs, eta=_eta(countdown, eta, now),
            expires=expires_iso, retries=retries, timelimit=(time_limit, soft_time_limit),
            root_id=root_id or task_id, parent_id=parent_id, group=group_id, group_index=group_index,
            shadow=shadow, argsrepr=saferepr(args, REPR_MAXSIZE),
            kwargsrepr=saferepr(kwargs, REPR_MAXSIZE),
            origin=origin or _anon_nodename(), ignore_result=ignore_result, callbacks=callbacks,
            errbacks=errbacks, chain=chain, chord=chord, reply_to=reply_to, correlation_id=task_id,
            priority=priority, delivery_mode=delivery_mode, expiration=expiration,
            extra_headers=dict(headers) if headers else {},
        )

    def headers(self) -> dict[str, Any]:
        """The AMQP headers: Celery's 19 keys in Celery's order, then the caller's extra headers."""
        headers = {
            "lang": "py", "task": self.task, "id": self.id, "shadow": self.shadow, "eta": self.eta,
            "expires": self.expires, "group": self.group, "group_index": self.group_index,
            "retries": self.retries, "timelimit": list(self.timelimit), "root_id": self.root_id,
            "parent_id": self.parent_id, "argsrepr": self.argsrepr, "kwargsrepr": self.kwargsrepr,
            "origin": self.origin, "ignore_result": self.ignore_result,
            "replaced_task_nesting": self.replaced_task_nesting, "stamped_headers": self.stamped_headers,
            "stamps": self.stamps,
        }
        if self.extra_headers:  # like Celery, extra headers are merged last and may override
            headers.update(self.extra_headers)
        return headers

    def properties(self) -> dict[str, Any]:
        """The AMQP properties other than the content type and encoding (``encode`` adds those)."""
        properties: dict[str, Any] = {"correlation_id": self.correlation_id or self.id}
        if self.reply_to:
            properties["reply_to"] = self.reply_to
        properties["delivery_mode"] = self.delivery_mode
        if self.priority is not None:
            properties["priority"] = self.priority
        if self.expiration is not None:
            properties["expiration"] = self.expiration
        properties["headers"] = self.headers()
        return properties

    def body(self) -> list[Any]:
        """The body before encoding: ``[args, kwargs, embed]``, embed with exactly Celery's four keys."""
        embed = {"callbacks": self.callbacks, "errbacks": self.errbacks, "chain": self.chain,
                 "chord": self.chord}
        return [list(self.args), self.kwargs, embed]

    def encode(self, serializer: str = "json") -> Envelope:
        """Serialize the body and return it with the full properties.

        Raises:
            EncodeError: an argument cannot be encoded; nothing has been sent.
            ImproperlyConfigured: an unknown serializer.
        """
        content_type, content_encoding, body = serialization.dumps(self.body(), serializer)
        properties = self.properties()
        properties["content_type"] = content_type
        properties["content_encoding"] = content_encoding
        return Envelope(properties, body)


def _eta(countdown: float | None, eta: datetime.datetime | str | None,
         now: datetime.datetime | None) -> str | None:
    if countdown and now is not None:  # Celery tests `if countdown:`, so countdown=0 means no ETA
        return (_aware(now) + datetime.timedelta(seconds=countdown)).isoformat()
    if isinstance(eta, datetime.datetime):
        return eta.isoformat()  # sent as given, like Celery; a naive ETA is read back as UTC
    return eta  # None, or already an ISO string (a retried message keeps its header)


def _expiry(task_id: str, expires: float | datetime.datetime | str | None,
            now: datetime.datetime | None) -> tuple[str | None, str | None]:
    """Return the ``expires`` header and the AMQP ``expiration`` property (whole ms, as a string)."""
    if expires is None or now is None:
        return None, None
    now = _aware(now)
    if isinstance(expires, (int, float)):
        seconds = float(expires)
        header = (now + datetime.timedelta(seconds=seconds)).isoformat()
    else:
        header = expires if isinstance(expires, str) else expires.isoformat()
        when = parse_iso(expires) if isinstance(expires, str) else _aware(expires)
        seconds = (when - now).total_seconds()
    if seconds < 0:
        # RabbitMQ drops a message with TTL 0 unless a consumer takes it at once, as Celery intends.
        logger.warning("%s has an expiration date in the past (%ss ago); sending it with expiration 0.",
                       task_id, -seconds)
        seconds = 0
    return header, str(int(seconds * 1000))


def _aware(when: datetime.datetime) -> datetime.datetime:
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _anon_nodename() -> str:
    return f"gen{os.getpid()}@{socket.gethostname()}"


def new_task_id() -> str:
    """A new task id: a random uuid4, as Celery's."""
    return str(uuid.uuid4())


def parse_iso(value: str) -> datetime.datetime:
    """Parse an ISO-8601 ``eta``/``expires``/``date_done`` to an aware datetime; naive means UTC.

    Raises:
        ValueError: not an ISO-8601 date and time.
    """
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    return _aware(datetime.datetime.fromisoformat(value))


@dataclass(frozen=True, slots=True)
class TaskHeaders:
    """What a worker reads from a task message before the body: checked headers and properties."""

    task: str
    id: str
    eta: datetime.datetime | None
    expires: datetime.datetime | None
    retries: int
    timelimit: tuple[float | None, float | None]  # (hard, soft)
    root_id: str | None
    parent_id: str | None
    group: str | None
    group_index: int | None
    shadow: str | None
    argsrepr: str | None
    kwargsrepr: str | None
    origin: str | None
    ignore_result: bool
    reply_to: str | None
    correlation_id: str
    priority: int | None
    headers: dict[str, Any]  # every header as received, the caller's custom ones included


_PROTOCOL_1 = (": this is not a protocol 2 task message. Celery's protocol 1, which carries the task in "
               "the body, is not supported; send with task_protocol=2 (Celery's default).")


def parse_headers(headers: Mapping[str, Any] | None,
                  properties: Mapping[str, Any] | None = None) -> TaskHeaders:
    """Check a received message's headers and read them, with ``eta``/``expires`` as aware datetimes.

    Raises:
        InvalidTaskError: ``task`` or ``id`` is missing or not a string, or a header has the wrong type.
    """
    headers = dict(headers or {})
    properties = properties or {}
    task = _required(headers, "task")
    task_id = _required(headers, "id")
    return TaskHeaders(
        task=task, id=task_id, eta=_header_time(headers, "eta"), expires=_header_time(headers, "expires"),
        retries=_header_int(headers, "retries"), timelimit=_timelimit(headers.get("timelimit")),
        root_id=headers.get("root_id"), parent_id=headers.get("parent_id"), group=headers.get("group"),
        group_index=headers.get("group_index"), shadow=headers.get("shadow"),
        argsrepr=headers.get("argsrepr"), kwargsrepr=headers.get("kwargsrepr"),
        origin=headers.get("origin"), ignore_result=bool(headers.get("ignore_result", False)),
        reply_to=properties.get("reply_to") or None,
        correlation_id=properties.get("correlation_id") or task_id,
        priority=properties.get("priority"), headers=headers,
    )


def _required(headers: Mapping[str, Any], key: str) -> str:
    value = headers.get(key)
    if isinstance(value, str) and value:
        return value
    if value is None:
        raise InvalidTaskError(f"Missing required header {key!r}" + (_PROTOCOL_1 if key == "task" else ""))
    raise InvalidTaskError(f"Header {key!r} must be a non-empty string, got {type(value).__name__} "
                           f"{value!r:.100}")


def _header_time(headers: Mapping[str, Any], key: str) -> datetime.datetime | None:
    value = headers.get(key)
    if value is None:
        return None
    reason = f"a {type(value).__name__}"
    if isinstance(value, str):
        try:
            return parse_iso(value)
        except ValueError as exc:
            reason = str(exc)
    raise InvalidTaskError(f"Header {key!r} must be an ISO-8601 date and time, got {value!r:.100} ({reason})")


def _header_int(headers: Mapping[str, Any], key: str) -> int:
    value = headers.get(key) or 0
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise InvalidTaskError(f"Header {key!r} must be an integer, got {type(value).__name__} {value!r:.100}")


def _timelimit(value: Any) -> tuple[float | None, float | None]:
    if value is None:
        return None, None
    if (isinstance(value, (list, tuple)) and len(value) == 2
            and all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in value)):
        return value[0], value[1]
    raise InvalidTaskError(f"Header 'timelimit' must be [hard, soft] seconds or nulls, got {value!r:.100}")


def decode_body(body: bytes, content_type: str | None, content_encoding: str | None,
                accept: Collection[str]) -> tuple[list[Any], dict[str, Any], dict[str, Any]]:
    """Decode and check a task body: ``(args, kwargs, embed)``, embed ``{}`` when the message had null.

    Raises:
        ContentDisallowed: the content type is not in ``accept``.
        DecodeError: the body cannot be decoded.
        InvalidTaskError: the body decodes to something other than ``[list, dict, dict-or-null]``.
    """
    payload = serialization.loads(body, content_type, content_encoding, accept)
    if not isinstance(payload, (list, tuple)) or len(payload) != 3:
        got = f"an array of {len(payload)}" if isinstance(payload, (list, tuple)) else type(payload).__name__
        raise InvalidTaskError(f"Task body must be a 3-element array [args, kwargs, embed], got {got}")
    args, kwargs, embed = payload
    if not isinstance(args, (list, tuple)):
        raise InvalidTaskError(f"Task args (the body's first item) must be an array, "
                               f"got {type(args).__name__}")
    if not isinstance(kwargs, dict) or not all(isinstance(key, str) for key in kwargs):
        raise InvalidTaskError("Task kwargs (the body's second item) must be an object with string keys, "
                               f"got {type(kwargs).__name__}")
    if embed is not None and not isinstance(embed, dict):
        raise InvalidTaskError(f"Task embed (the body's third item) must be an object or null, "
                               f"got {type(embed).__name__}")
    return list(args), kwargs, embed or {}


def result_meta(task_id: str, status: str, result: Any, *, traceback: str | None = None,
                children: list[Any] | None = None, date_done: datetime.datetime | str | None = None,
                parent_id: str | None = None, group_id: str | None = None,
                serializer: str = "json") -> dict[str, Any]:
    """The body of a result message, with Celery's keys in Celery's order.

    An exception ``result`` in an exception state becomes :func:`exception_to_meta`. ``date_done``
    (default: now, in UTC) is sent only for ready states and is ``None`` otherwise.
    """
    if status in states.EXCEPTION_STATES and isinstance(result, BaseException):
        result = exception_to_meta(result, serializer)
    done: str | None = None
    if status in states.READY_STATES:
        when = date_done or datetime.datetime.now(UTC)
        done = when if isinstance(when, str) else _aware(when).isoformat()
    meta = {"status": status, "result": result, "traceback": traceback, "children": list(children or ()),
            "date_done": done}
    if group_id:
        meta["group_id"] = group_id
    if parent_id:
        meta["parent_id"] = parent_id
    meta["task_id"] = task_id
    return meta
