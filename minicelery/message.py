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
from dataclasses import dataclass, field
from typing import Any

from . import serialization
from .protocol import UTC, aware, parse_iso
from .saferepr import saferepr

__all__ = ["Envelope", "TaskMessage", "new_task_id"]

logger = logging.getLogger(__name__)
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
