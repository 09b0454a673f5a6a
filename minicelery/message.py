"""Building Celery's task message (protocol version 2): what ``send_task`` puts on the wire.

A task message is one AMQP message: 19 headers say what to run and when (``task``, ``id``, ``eta``, ...),
a few properties say where the answer goes (``reply_to``, ``correlation_id``), and the body is the triple
``[args, kwargs, embed]``. :class:`TaskMessage` builds one with Celery's exact keys, key order and values;
:mod:`minicelery.protocol` reads one back. See ``docs/protocol.md``.

Celery's counterpart is ``celery.app.amqp.AMQP.as_task_v2``/``send_task_message``. Left out: protocol 1,
sent events, and canvas stamping (the ``stamps`` headers are sent, but empty).
"""

from __future__ import annotations

import datetime
import logging
import os
import socket
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from . import serialization
from .compression import compress
from .protocol import UTC, aware, parse_iso, read_time_limit
from .saferepr import saferepr

__all__ = ["Envelope", "SendOptions", "TaskMessage", "new_task_id"]

logger = logging.getLogger(__name__)
#: Celery's ``argsrepr_maxsize`` and ``kwargsrepr_maxsize``.
REPR_MAXSIZE = 1024


@dataclass(frozen=True, slots=True)
class Envelope:
    """An encoded message: AMQP properties (as a plain dict, with ``headers``) and the body bytes."""

    properties: dict[str, Any]
    body: bytes


@dataclass(frozen=True, kw_only=True)
class SendOptions:
    """How one task is sent: the options of one ``apply_async``/``send_task`` call, in one value.

    ``Task.apply_async`` makes it with the task's defaults, ``send_task`` from its keywords, and
    ``sending.complete`` fills in once what was left to the app (None: the app's setting). A retry
    makes a new one from the request it retries. ``countdown`` wins over ``eta``.

    Raises:
        ValueError: a negative or non-numeric time limit, or ``soft_time_limit`` greater than
            ``time_limit`` (0 means no limit, as in Celery).
    """

    task_id: str | None = None
    countdown: float | None = None
    eta: datetime.datetime | str | None = None
    expires: float | datetime.datetime | str | None = None  # seconds from now, or a time
    retries: int = 0
    time_limit: float | None = None
    soft_time_limit: float | None = None
    root_id: str | None = None
    parent_id: str | None = None
    group_id: str | None = None
    group_index: int | None = None
    shadow: str | None = None
    reply_to: str | None = None
    priority: int | None = None
    ignore_result: bool | None = None
    headers: Mapping[str, Any] | None = None  # extra headers, merged after Celery's
    origin: str | None = None
    delivery_mode: int | None = None
    callbacks: list[Any] | None = None
    errbacks: list[Any] | None = None
    chain: list[Any] | None = None
    chord: Any = None
    # Where the message goes and how its body is encoded: not headers, but the same call's choices.
    queue: str | None = None
    exchange: str | None = None
    routing_key: str | None = None
    serializer: str | None = None
    compression: str | None = None  # kombu's name (gzip, bzip2, lzma...) or content type

    def __post_init__(self) -> None:
        hard, soft = read_time_limit(self.time_limit), read_time_limit(self.soft_time_limit)
        if hard is not None and soft is not None and soft > hard:
            raise ValueError("soft_time_limit must be less than or equal to time_limit")

    @classmethod
    def from_call(cls, options: Mapping[str, Any]) -> SendOptions:
        """The options given to one call; None means unset, and options minicelery does not use
        (Celery's ``mandatory``...) are ignored, as Celery ignores those it does not know. Celery's
        ``link``/``link_error`` become the body's ``callbacks``/``errbacks`` (always lists there)."""
        known = {key: value for key, value in options.items() if key in _OPTION_NAMES and value is not None}
        for option, field in (("link", "callbacks"), ("link_error", "errbacks")):
            value = options.get(option)
            if value and field not in known:
                known[field] = list(value) if isinstance(value, (list, tuple)) else [value]
        return cls(**known)

    @property
    def needs_clock(self) -> bool:
        """Whether building the message reads the time (a countdown, an eta or an expiry)."""
        return self.countdown is not None or self.eta is not None or self.expires is not None


_OPTION_NAMES = frozenset(field.name for field in fields(SendOptions))


@dataclass(frozen=True, slots=True)
class TaskMessage:
    """One task message: its options, plus what was worked out from them in wire form.

    Build one with :meth:`create`; :meth:`encode` lays it out as Celery does.
    """

    id: str
    task: str
    args: Sequence[Any]
    kwargs: dict[str, Any]
    options: SendOptions
    eta: str | None  # ISO 8601
    expires: str | None  # ISO 8601
    expiration: str | None  # the AMQP per-message TTL, whole milliseconds as a string
    argsrepr: str
    kwargsrepr: str
    origin: str

    @classmethod
    def create(cls, name: str, args: Sequence[Any] | None = None, kwargs: Mapping[str, Any] | None = None,
               options: SendOptions | None = None, now: datetime.datetime | None = None) -> TaskMessage:
        """Build the message ``apply_async(args, kwargs, **options)`` sends, with Celery's defaults.

        ``now`` (default: the current UTC time) anchors ``countdown`` and an ``expires`` given in
        seconds. ``args`` and ``kwargs`` are kept as given, not copied.

        Raises:
            TypeError: ``args`` is not a list or tuple, or ``kwargs`` is not a mapping (Celery's texts).
        """
        options = options or SendOptions()
        args, kwargs = args or (), kwargs or {}  # Celery's `args or ()`: None and [] both mean no args
        if not isinstance(args, (list, tuple)):
            raise TypeError("task args must be a list or tuple")
        if not isinstance(kwargs, Mapping):
            raise TypeError("task keyword arguments must be a mapping")
        kwargs = kwargs if type(kwargs) is dict else dict(kwargs)
        task_id = options.task_id or new_task_id()
        if now is None and (options.countdown or options.expires is not None):
            now = datetime.datetime.now(UTC)
        expires, expiration = _expiry(task_id, options.expires, now)
        return cls(id=task_id, task=name, args=args, kwargs=kwargs, options=options,
                   eta=_eta(options.countdown, options.eta, now), expires=expires, expiration=expiration,
                   argsrepr=saferepr(args, REPR_MAXSIZE), kwargsrepr=saferepr(kwargs, REPR_MAXSIZE),
                   origin=options.origin or _anon_nodename())

    @property
    def reply_to(self) -> str | None:
        """Where the result goes (the ``reply_to`` property)."""
        return self.options.reply_to

    def headers(self) -> dict[str, Any]:
        """The AMQP headers: Celery's 19 keys in Celery's order, then the caller's extra headers."""
        options = self.options
        headers: dict[str, Any] = {
            "lang": "py", "task": self.task, "id": self.id, "shadow": options.shadow, "eta": self.eta,
            "expires": self.expires, "group": options.group_id, "group_index": options.group_index,
            "retries": options.retries, "timelimit": [options.time_limit, options.soft_time_limit],
            "root_id": options.root_id or self.id, "parent_id": options.parent_id,
            "argsrepr": self.argsrepr, "kwargsrepr": self.kwargsrepr, "origin": self.origin,
            "ignore_result": bool(options.ignore_result), "replaced_task_nesting": 0,
            "stamped_headers": None, "stamps": {},
        }
        if options.headers:  # like Celery, extra headers are merged last and may override
            headers.update(options.headers)
        return headers

    def properties(self) -> dict[str, Any]:
        """The AMQP properties other than the content type and encoding (``encode`` adds those)."""
        options = self.options
        properties: dict[str, Any] = {"correlation_id": self.id}
        if options.reply_to:
            properties["reply_to"] = options.reply_to
        properties["delivery_mode"] = options.delivery_mode or 2
        if options.priority is not None:
            properties["priority"] = options.priority
        if self.expiration is not None:
            properties["expiration"] = self.expiration
        properties["headers"] = self.headers()
        return properties

    def body(self) -> list[Any]:
        """The body before encoding: ``[args, kwargs, embed]``, embed with exactly Celery's four keys."""
        options = self.options
        embed = {"callbacks": options.callbacks, "errbacks": options.errbacks, "chain": options.chain,
                 "chord": options.chord}
        return [list(self.args), self.kwargs, embed]

    def encode(self, serializer: str | None = None) -> Envelope:
        """Serialize the body (with ``serializer``, else the options', else json), compress it if the
        options say so (adding kombu's ``compression`` header), and return it with the full properties.

        Raises:
            EncodeError: an argument cannot be encoded; nothing has been sent.
            ImproperlyConfigured: an unknown serializer or compression.
        """
        serializer = serializer or self.options.serializer or "json"
        content_type, content_encoding, body = serialization.dumps(self.body(), serializer)
        properties = self.properties()
        if self.options.compression:  # like kombu, after the serializer and after every other header
            body, properties["headers"]["compression"] = compress(body, self.options.compression)
        properties["content_type"] = content_type
        properties["content_encoding"] = content_encoding
        return Envelope(properties, body)


def _eta(countdown: float | None, eta: datetime.datetime | str | None,
         now: datetime.datetime | None) -> str | None:
    if countdown and now is not None:  # Celery tests `if countdown:`, so countdown=0 means no ETA
        return (aware(now) + datetime.timedelta(seconds=countdown)).isoformat()
    if isinstance(eta, datetime.datetime):
        return eta.isoformat()  # sent as given, like Celery; a naive ETA is read back as UTC
    return eta  # None, or already an ISO string (a retried message keeps its header)


def _expiry(task_id: str, expires: float | datetime.datetime | str | None,
            now: datetime.datetime | None) -> tuple[str | None, str | None]:
    """Return the ``expires`` header and the AMQP ``expiration`` property (whole ms, as a string)."""
    if expires is None or now is None:
        return None, None
    now = aware(now)
    if isinstance(expires, (int, float)):
        seconds = float(expires)
        header = (now + datetime.timedelta(seconds=seconds)).isoformat()
    else:
        header = expires if isinstance(expires, str) else expires.isoformat()
        when = parse_iso(expires) if isinstance(expires, str) else aware(expires)
        seconds = (when - now).total_seconds()
    if seconds < 0:
        # RabbitMQ drops a message with TTL 0 unless a consumer takes it at once, as Celery intends.
        logger.warning("%s has an expiration date in the past (%ss ago); sending it with expiration 0.",
                       task_id, -seconds)
        seconds = 0
    return header, str(int(seconds * 1000))


def _anon_nodename() -> str:
    return f"gen{os.getpid()}@{socket.gethostname()}"  # Celery's anon_nodename


def new_task_id() -> str:
    """A new task id: a random uuid4, as Celery's."""
    return str(uuid.uuid4())
