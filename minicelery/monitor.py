"""Monitoring events: what a worker (and a client) tells ``celery events``, Flower and other workers.

Events are JSON objects published to the ``celeryev`` topic exchange, routing key = the type with ``-``
made ``.`` (``worker.heartbeat``, ``task.succeeded``), transient, with the header ``hostname``. Every
event carries, in Celery's order, ``hostname``, ``utcoffset`` (hours *west* of UTC), ``pid``, ``clock``
(the sender's Lamport clock, forwarded once per event), its own fields, ``timestamp`` and ``type``: a
worker event without ``type`` makes every Celery 5 worker on the exchange crash, so :func:`event` is the
only way one is built. The :class:`EventDispatcher` buffers events and publishes them when the worker
flushes its results, on the same connection, in the same loop turn.

Celery's counterpart is ``celery.events.dispatcher.EventDispatcher`` and ``celery.events.event``; left
out: ``task.multi`` arrays (single events are accepted by every receiver) and the Redis fanout variant.
A client sends ``task-sent`` (:func:`task_sent`) when ``task_send_sent_event`` is set.
"""

from __future__ import annotations

import math
import os
import platform
import socket
import time
from collections.abc import Callable
from typing import Any

from . import serialization
from .clock import LamportClock
from .transport import Connection

__all__ = ["event", "routing_key", "utcoffset", "worker_fields", "EventDispatcher", "SW_IDENT",
           "HEARTBEAT_FREQ", "task_sent"]

#: What ``sw_ident`` says (Flower shows it; Celery checks nothing).
SW_IDENT = "py-minicelery"

#: Seconds between two ``worker-heartbeat`` events (Celery's ``--heartbeat-interval`` default).
HEARTBEAT_FREQ = 2.0


def utcoffset() -> float:
    """This machine's offset in hours *west* of UTC, as Celery sends it (Berlin in winter: -1.0)."""
    local = time.localtime()
    seconds = time.altzone if local.tm_isdst > 0 and time.daylight else time.timezone
    return seconds / 3600


def routing_key(event_type: str) -> str:
    """``task-succeeded`` → ``task.succeeded``."""
    return event_type.replace("-", ".")


def event(event_type: str, *, hostname: str, clock: int, pid: int | None = None,
          offset: float | None = None, timestamp: float | None = None, **fields: Any) -> dict[str, Any]:
    """One event in Celery's field order; ``type``, ``hostname`` and ``timestamp`` are always there."""
    return {"hostname": hostname, "utcoffset": utcoffset() if offset is None else offset,
            "pid": os.getpid() if pid is None else pid, "clock": clock, **fields,
            "timestamp": time.time() if timestamp is None else timestamp, "type": event_type}


def _loadavg() -> list[float]:
    """``os.getloadavg()``, each value rounded *up* to two decimals as Celery does; zeros where missing."""
    try:
        return [math.ceil(value * 100) / 100 for value in os.getloadavg()]
    except OSError:
        return [0.0, 0.0, 0.0]


def worker_fields(*, freq: float, version: str, active: int | None = None,
                  processed: int | None = None) -> dict[str, Any]:
    """The fields of ``worker-online``/``-heartbeat``/``-offline`` (without the counters when None, as the
    answer to the ``heartbeat`` command); ``version`` is minicelery's, for ``sw_ver``."""
    fields: dict[str, Any] = {"freq": freq}
    if active is not None:
        fields.update(active=active, processed=processed or 0, loadavg=_loadavg())
    fields.update(sw_ident=SW_IDENT, sw_ver=version, sw_sys=platform.system())
    return fields


class EventDispatcher:
    """Builds events stamped with one node's name, pid and clock, and publishes them in batches.

    Args:
        hostname: the node name events are sent as.
        exchange: the event exchange (``event_exchange``).
        clock: the Lamport clock to forward for each event.
        serializer: ``event_serializer`` (json).
        on_publish: called with nothing after each flush that published (tests count them).
    """

    def __init__(self, hostname: str, *, exchange: str = "celeryev", clock: LamportClock | None = None,
                 serializer: str = "json", on_publish: Callable[[], None] | None = None) -> None:
        self.hostname, self.exchange, self.serializer = hostname, exchange, serializer
        self.clock = clock or LamportClock()
        self.pid = os.getpid()
        self.offset = utcoffset()
        self._buffer: list[dict[str, Any]] = []
        self._declared_on: Connection | None = None
        self._on_publish = on_publish

    def __len__(self) -> int:
        return len(self._buffer)

    def send(self, event_type: str, **fields: Any) -> dict[str, Any]:
        """Queue one event for the next :meth:`flush` and return it."""
        built = event(event_type, hostname=self.hostname, clock=self.clock.forward(), pid=self.pid,
                      offset=self.offset, **fields)
        self._buffer.append(built)
        return built

    def flush(self, connection: Connection) -> None:
        """Publish every queued event on ``connection`` (declaring the topic exchange once per connection).

        The buffer is emptied first: an event that cannot travel is lost rather than blocking the others
        (events are a live view, never a record)."""
        if not self._buffer:
            return
        events, self._buffer = self._buffer, []
        if self._declared_on is not connection or not connection.is_open:
            connection.declare_exchange(self.exchange, "topic", durable=True)
            self._declared_on = connection
        for item in events:
            content_type, encoding, body = serialization.dumps(item, self.serializer)
            properties = {"content_type": content_type, "content_encoding": encoding, "delivery_mode": 1,
                          "priority": 0, "headers": {"hostname": self.hostname}}
            key = routing_key(item["type"])
            connection.publish(body, properties, exchange=self.exchange, routing_key=key)
        if self._on_publish is not None:
            self._on_publish()

    def forget_connection(self) -> None:
        """The connection was replaced: declare the exchange again on the next one."""
        self._declared_on = None


def task_sent(app: Any, message: Any, queue: str | None, exchange: str, routing_key: str) -> None:
    """Publish ``task-sent`` for a task message ``app`` just sent (``task_send_sent_event``), as Celery's
    client does: from the anonymous node ``gen<pid>@<host>``, with the client's pid and clock."""
    conf, options = app.conf, message.options
    built = event("task-sent", hostname=f"gen{os.getpid()}@{socket.gethostname()}", clock=app.clock.forward(),
                  uuid=message.id, root_id=options.root_id or message.id, parent_id=options.parent_id,
                  name=message.task, args=message.argsrepr, kwargs=message.kwargsrepr,
                  retries=options.retries, eta=message.eta, expires=message.expires, queue=queue,
                  exchange=exchange, routing_key=routing_key)
    content_type, encoding, body = serialization.dumps(built, conf.event_serializer)
    app.broker.declare_exchange(conf.event_exchange, "topic", durable=True)
    app.broker.publish(body, {"content_type": content_type, "content_encoding": encoding, "delivery_mode": 1,
                              "priority": 0, "headers": {"hostname": built["hostname"]}},
                       exchange=conf.event_exchange, routing_key="task.sent")
