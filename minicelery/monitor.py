"""Monitoring events: what a worker (and a client) tells ``celery events``, Flower and other workers.

Events are JSON objects published to the ``celeryev`` topic exchange, routing key = the type with ``-``
made ``.`` (``worker.heartbeat``, ``task.succeeded``), transient, with the header ``hostname``. Every
event carries, in Celery's order, ``hostname``, ``utcoffset`` (hours *west* of UTC), ``pid``, ``clock``
(the sender's Lamport clock, forwarded once per event), its own fields, ``timestamp`` and ``type``: a
worker event without ``type`` makes every Celery 5 worker on the exchange crash, so :func:`event` is the
only way one is built. The :class:`EventDispatcher` buffers events until the worker's loop publishes
them on its own connection (:meth:`EventDispatcher.publish_due`): worker events at once, one by one;
task events as Celery's workers send them, JSON arrays of up to :data:`MULTI_LIMIT` with the routing
key ``task.multi``, once an array is full or its oldest event has waited :data:`BUFFER_TIME`. A task
has three events to tell, and a busy worker many tasks per second: one message for 33 tasks instead
of three per task is what keeps events from costing the task path (``docs/performance.md``, "Task
events").

Celery's counterpart is ``celery.events.dispatcher.EventDispatcher`` and ``celery.events.event``; left
out: the Redis fanout variant. A client sends ``task-sent`` (:func:`task_sent`) when
``task_send_sent_event`` is set.
"""

from __future__ import annotations

import math
import os
import platform
import socket
import time
from typing import Any

from . import serialization
from .clock import LamportClock
from .transport import Connection

__all__ = ["event", "routing_key", "utcoffset", "worker_fields", "EventDispatcher", "SW_IDENT",
           "HEARTBEAT_FREQ", "MULTI_LIMIT", "MULTI_MAX_BYTES", "BUFFER_TIME", "task_sent"]

#: What ``sw_ident`` says (Flower shows it; Celery checks nothing).
SW_IDENT = "py-minicelery"

#: Seconds between two ``worker-heartbeat`` events (Celery's ``--heartbeat-interval`` default).
HEARTBEAT_FREQ = 2.0

#: The most task events one ``task.multi`` array carries. Celery's dispatcher flushes its buffer at 24;
#: receivers take arrays of any length, and each message costs a busy worker about 50 µs to publish.
MULTI_LIMIT = 100

#: The largest ``task.multi`` body sent as one message: a larger array (a burst of failures with long
#: tracebacks) is split, far below what brokers refuse (``max_message_size``, 16 MiB on RabbitMQ 4 and
#: the embedded broker), which would close the worker's channel.
MULTI_MAX_BYTES = 1 << 20

#: Seconds a task event may wait for others to share its message (Celery's waits for the next loop turn;
#: a monitor does not see the difference, a worker running thousands of tasks a second does).
BUFFER_TIME = 0.1


def utcoffset() -> float:
    """This machine's offset in hours *west* of UTC, as Celery sends it (Berlin in winter: -1.0)."""
    local = time.localtime()
    seconds = time.altzone if local.tm_isdst > 0 and time.daylight else time.timezone
    return seconds / 3600


def routing_key(event_type: str) -> str:
    """``task-succeeded`` → ``task.succeeded``."""
    return event_type.replace("-", ".")


def event(event_type: str, fields: dict[str, Any], *, hostname: str, clock: int, pid: int | None = None,
          offset: float | None = None, timestamp: float | None = None) -> dict[str, Any]:
    """One event in Celery's field order; ``type``, ``hostname`` and ``timestamp`` are always there.

    ``fields`` are the type's own (``uuid``, ``result``, ...), passed as one mapping rather than as keywords:
    a busy worker builds three task events a task, and unpacking and repacking keywords twice per event
    cost it as much as the dict itself (``docs/performance.md``, "Task events").
    """
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
    """

    def __init__(self, hostname: str, *, exchange: str = "celeryev", clock: LamportClock | None = None,
                 serializer: str = "json") -> None:
        self.hostname, self.exchange, self.serializer = hostname, exchange, serializer
        self.clock = clock or LamportClock()
        self.pid = os.getpid()
        self.offset = utcoffset()
        # Messages ready to leave, in order: (routing key, one worker event or a full task.multi array).
        self._ready: list[tuple[str, Any]] = []
        self._array: list[dict[str, Any]] = []  # task events waiting for company
        self._array_due: float | None = None  # when the array leaves even if not full (monotonic)
        self._declared_on: Connection | None = None

    def __len__(self) -> int:
        return sum(len(body) if key == "task.multi" else 1 for key, body in self._ready) + len(self._array)

    def send(self, event_type: str, fields: dict[str, Any]) -> dict[str, Any]:
        """Queue one event with the type's own ``fields`` for :meth:`publish_due` (or :meth:`flush`) and
        return it."""
        built = event(event_type, fields, hostname=self.hostname, clock=self.clock.forward(), pid=self.pid,
                      offset=self.offset)
        if event_type.startswith("task-"):
            if not self._array:
                self._array_due = time.monotonic() + BUFFER_TIME
            self._array.append(built)
            if len(self._array) == MULTI_LIMIT:
                self._close_array()
        else:  # a worker event leaves at once, after the task events sent before it
            self._close_array()
            self._ready.append((routing_key(event_type), built))
        return built

    def _close_array(self) -> None:
        if self._array:
            self._ready.append(("task.multi", self._array))
            self._array, self._array_due = [], None

    def due(self) -> float | None:
        """The monotonic time by which :meth:`publish_due` has something to send, or None when empty."""
        return 0.0 if self._ready else self._array_due  # made messages are due at once

    def publish_due(self, connection: Connection) -> None:
        """Publish what is due on ``connection``: full arrays and worker events, and the array being
        filled once its oldest event has waited :data:`BUFFER_TIME`."""
        if self._array_due is not None and self._array_due <= time.monotonic():
            self._close_array()
        self._publish_ready(connection)

    def flush(self, connection: Connection) -> None:
        """Publish every queued event on ``connection``, in the order they were sent: consecutive task
        events in ``task.multi`` arrays, worker events one by one."""
        self._close_array()
        self._publish_ready(connection)

    def _publish_ready(self, connection: Connection) -> None:
        if not self._ready:
            return
        # The queue is emptied first: an event that cannot travel is lost rather than blocking the
        # others (events are a live view, never a record).
        ready, self._ready = self._ready, []
        if self._declared_on is not connection or not connection.is_open:
            connection.declare_exchange(self.exchange, "topic", durable=True)
            self._declared_on = connection
        for key, body in ready:
            self._publish(connection, key, body)

    def _publish(self, connection: Connection, key: str, body: Any) -> None:
        """Publish one event or array; an array over :data:`MULTI_MAX_BYTES` goes as two halves, each
        measured again (rare: a burst of long tracebacks)."""
        content_type, encoding, data = serialization.dumps(body, self.serializer)
        if key == "task.multi" and len(data) > MULTI_MAX_BYTES and len(body) > 1:
            half = len(body) // 2
            self._publish(connection, key, body[:half])
            self._publish(connection, key, body[half:])
            return
        properties = {"content_type": content_type, "content_encoding": encoding, "delivery_mode": 1,
                      "priority": 0, "headers": {"hostname": self.hostname}}
        connection.publish(data, properties, exchange=self.exchange, routing_key=key)

    def forget_connection(self) -> None:
        """The connection was replaced: declare the exchange again on the next one."""
        self._declared_on = None


def task_sent(app: Any, message: Any, queue: str | None, exchange: str, routing_key: str) -> None:
    """Publish ``task-sent`` for a task message ``app`` just sent (``task_send_sent_event``), as Celery's
    client does: from the anonymous node ``gen<pid>@<host>``, with the client's pid and clock."""
    conf, options = app.conf, message.options
    fields = {"uuid": message.id, "root_id": options.root_id or message.id, "parent_id": options.parent_id,
              "name": message.task, "args": message.argsrepr, "kwargs": message.kwargsrepr,
              "retries": options.retries, "eta": message.eta, "expires": message.expires, "queue": queue,
              "exchange": exchange, "routing_key": routing_key}
    built = event("task-sent", fields, hostname=f"gen{os.getpid()}@{socket.gethostname()}",
                  clock=app.clock.forward())
    content_type, encoding, body = serialization.dumps(built, conf.event_serializer)
    app.broker.declare_exchange(conf.event_exchange, "topic", durable=True)
    app.broker.publish(body, {"content_type": content_type, "content_encoding": encoding, "delivery_mode": 1,
                              "priority": 0, "headers": {"hostname": built["hostname"]}},
                       exchange=conf.event_exchange, routing_key="task.sent")
