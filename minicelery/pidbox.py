"""Remote control's wire format, shared by the worker that answers and the client that asks.

A request is broadcast to the ``<control_exchange>.pidbox`` fanout exchange; every worker's mailbox
queue (``<nodename>.<control_exchange>.pidbox``) gets a copy and the worker decides from ``destination``
(or ``pattern`` with ``matcher``) whether it is meant for it. Replies go to the
``reply.<control_exchange>.pidbox`` direct exchange with the routing key the request names, as
``{nodename: result}``. This module holds the names, the bodies and the selection rule, without I/O.
Celery's counterpart is ``kombu.pidbox`` (``Mailbox``, ``Node``) with ``kombu.matcher``; left out:
pickle, and the ``expires`` check on replies (workers never send one).
"""

from __future__ import annotations

import fnmatch
import os
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .transport import QueueSpec

__all__ = ["oid_from", "ControlRequest", "mailbox_queue", "reply_queue", "exchange_name",
           "reply_exchange_name", "request_body", "request_headers", "parse_request", "selected"]


def oid_from(instance: Any, scope: Any) -> str:
    """A stable uuid3 for (host, process, scope, object), like Celery's ``oid_from``: an app's id in a
    process or a thread, which names its rpc reply queue and its remote control reply queue."""
    return str(uuid.uuid3(uuid.NAMESPACE_OID,
                          f"{uuid.getnode():x}-{os.getpid():x}-{scope}-{id(instance):x}"))


def exchange_name(conf: Any) -> str:
    """The fanout exchange requests are broadcast to: ``celery.pidbox`` by default."""
    return f"{conf.control_exchange}.pidbox"


def reply_exchange_name(conf: Any) -> str:
    """The direct exchange replies go to: ``reply.celery.pidbox`` by default."""
    return f"reply.{conf.control_exchange}.pidbox"


def _queue_arguments(conf: Any) -> dict[str, int]:
    # Celery's exact arguments: a mailbox nobody reads is removed after control_queue_expires, and a
    # request nobody takes dies after control_queue_ttl.
    return {"x-expires": int(conf.control_queue_expires * 1000),
            "x-message-ttl": int(conf.control_queue_ttl * 1000)}


def mailbox_queue(hostname: str, conf: Any) -> QueueSpec:
    """A worker's own mailbox: exclusive (a second node of the same name is refused), auto-delete."""
    return QueueSpec(f"{hostname}.{conf.control_exchange}.pidbox", exchange=exchange_name(conf),
                     exchange_type="fanout", exchange_durable=False, routing_key="", durable=False,
                     auto_delete=True, exclusive=True, arguments=_queue_arguments(conf))


def reply_queue(oid: str, conf: Any) -> QueueSpec:
    """A client's reply queue ``<oid>.reply.celery.pidbox``, bound to the reply exchange by ``oid``."""
    return QueueSpec(f"{oid}.{reply_exchange_name(conf)}", exchange=reply_exchange_name(conf),
                     exchange_type="direct", exchange_durable=False, routing_key=oid, durable=False,
                     auto_delete=True, exclusive=True, arguments=_queue_arguments(conf))


@dataclass(frozen=True)
class ControlRequest:
    """One request as a worker reads it: the command, its arguments, who it is for, where to answer."""

    method: str
    arguments: Mapping[str, Any] = field(default_factory=dict)
    destination: Any = None  # None, a list of node names, or (Celery's quirk) a string: a substring test
    pattern: str | None = None
    matcher: str | None = None
    ticket: str | None = None
    reply_to: Mapping[str, str] | None = None  # {"exchange": ..., "routing_key": ...}; None for a cast


def request_body(method: str, arguments: Mapping[str, Any] | None = None, *,
                 destination: list[str] | None = None, pattern: str | None = None,
                 matcher: str | None = None, reply_to: Mapping[str, str] | None = None,
                 ticket: str | None = None) -> dict[str, Any]:
    """The body Celery's client sends; a cast (``reply_to`` None) has no ``ticket`` nor ``reply_to``."""
    body: dict[str, Any] = {"method": method, "arguments": dict(arguments or {}), "destination": destination,
                            "pattern": pattern, "matcher": matcher}
    if reply_to is not None:
        body["ticket"] = ticket or str(uuid.uuid4())
        body["reply_to"] = dict(reply_to)
    return body


def request_headers(clock: int, timeout: float) -> dict[str, int]:
    """The request's headers: the client's clock and ``expires``, an int (pika cannot encode a float)."""
    return {"clock": clock, "expires": int(time.time() + timeout)}


def parse_request(body: Any) -> ControlRequest:
    """Read a decoded request body; ``ValueError`` naming what is wrong when it is not one."""
    if not isinstance(body, dict):
        raise ValueError(f"a control request is a JSON object, not {type(body).__name__}")
    method = body.get("method")
    if not isinstance(method, str) or not method:
        raise ValueError(f"a control request needs a method name, got {method!r}")
    arguments = body.get("arguments") or {}
    if not isinstance(arguments, dict) or not all(isinstance(k, str) for k in arguments):
        raise ValueError(f"the arguments of {method!r} must be an object, got {arguments!r}")
    reply_to = body.get("reply_to")
    if reply_to is not None and not (isinstance(reply_to, dict) and _short(reply_to.get("exchange"))
                                     and _short(reply_to.get("routing_key"))):
        raise ValueError(f"reply_to must name an exchange and a routing_key, got {reply_to!r:.200}")
    ticket = body.get("ticket")
    return ControlRequest(method, arguments, body.get("destination"), body.get("pattern"),
                          body.get("matcher"), ticket if isinstance(ticket, str) else None, reply_to)


def _short(value: Any) -> bool:
    """A str AMQP can carry as an exchange name or routing key (a short string: at most 255 bytes)."""
    return isinstance(value, str) and len(value.encode()) <= 255


def selected(hostname: str, destination: Any, pattern: str | None, matcher: str | None) -> bool:
    """Whether node ``hostname`` runs a request, by kombu's rule: a destination decides when given (a
    string one is tested as a substring, Celery's quirk), else a pattern with its matcher (``glob`` or
    ``pcre``), else every node does."""
    if destination:
        return hostname in destination
    if pattern and matcher:
        if matcher == "glob":
            return fnmatch.fnmatch(hostname, pattern)
        if matcher == "pcre":
            return re.match(pattern, hostname) is not None
        raise ValueError(f"unknown matcher {matcher!r}: use 'glob' or 'pcre'")
    return True
