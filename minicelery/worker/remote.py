"""A worker's remote control mailbox and its monitoring events, run in the consumer's loop.

:class:`Remote` is the consumer's one hook for both. On each new connection it declares the
``celery.pidbox`` fanout exchange and the worker's exclusive mailbox queue and consumes it without
acknowledgement (a request is for now or never). Each loop turn it answers the requests that arrived
(:mod:`minicelery.worker.control` holds the commands) and sends a ``worker-heartbeat`` every two
seconds; its events leave after the turn's results once they are due (``monitor.EventDispatcher``).
Nothing here runs on another thread, and nothing a client sends can stop the worker: a malformed
request is logged and dropped, a failing command answers ``{"error": repr(exc)}``. Celery's
counterpart is ``celery.worker.pidbox.Pidbox`` with kombu's ``Node.dispatch``, and the consumer's
``Events`` and ``Heart`` steps.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from .. import __version__, pidbox, serialization
from ..exceptions import OperationalError
from ..monitor import HEARTBEAT_FREQ, EventDispatcher, worker_fields
from ..transport import Connection, Delivery
from .control import HANDLERS, NO_REPLY
from .request import Request
from .revoked import RevokedSet

__all__ = ["Remote"]

logger = logging.getLogger("minicelery.worker.control")


class Remote:
    """One worker's remote control and events.

    Args:
        app: the worker's app (settings, tasks, clock).
        consumer: the worker's consumer (its dispatcher, pool, queues and shutdown flag).
        hostname: the node name.
        concurrency: the number of children, for ``stats``.
        max_tasks_per_child: for ``stats``.
        control: consume the mailbox (``worker_enable_remote_control``).
        heartbeats: send worker-online/-heartbeat/-offline (off with ``--without-heartbeat``).
        task_events: send task events from the start (``-E``, ``worker_send_task_events``).
    """

    def __init__(self, app: Any, consumer: Any, *, hostname: str, concurrency: int,
                 max_tasks_per_child: int | None = None, control: bool = True, heartbeats: bool = True,
                 task_events: bool = False) -> None:
        self.app, self.consumer, self.hostname = app, consumer, hostname
        self.concurrency, self.max_tasks_per_child = concurrency, max_tasks_per_child
        self.control, self.heartbeats = control, heartbeats
        self.clock = app.clock
        self.started = time.monotonic()
        self.revoked = RevokedSet()
        consumer.dispatch.revoked = self.revoked
        conf = app.conf
        self.events = EventDispatcher(hostname, exchange=conf.event_exchange, clock=self.clock,
                                      serializer=conf.event_serializer)
        self.inbox: list[Delivery] = []
        self.task_events = False
        self.set_task_events(task_events)
        self._online = False
        self._next_heartbeat = 0.0
        self._reply_exchange = pidbox.reply_exchange_name(conf)
        self._reply_declared = False  # on the current connection

    # -- the consumer's calls ---------------------------------------------------------------------------

    def connected(self, connection: Connection) -> None:
        """Declare and consume the mailbox on a new connection; the first time, queue ``worker-online``
        (before any task event: a delivery may arrive in the very next wait)."""
        self.events.forget_connection()
        self._reply_declared = False
        if self.heartbeats and not self._online:
            self.send_heartbeat(wakeup=False)
        if not self.control:
            return
        spec = pidbox.mailbox_queue(self.hostname, self.app.conf)
        try:
            connection.declare(spec, isolated=True)
            connection.consume(spec.name, self.inbox.append, self._mailbox_cancelled, no_ack=True)
        except OperationalError as exc:
            if not connection.is_open:
                raise  # the connection itself is gone: the consumer reconnects
            # Celery's words (kombu's W_PIDBOX_IN_USE): the worker runs on, without remote control.
            logger.warning("A node named %s is already using this process mailbox!\n\nMaybe you forgot to "
                           "shutdown the other node or did not do so properly?\nOr if you meant to start "
                           "multiple nodes on the same host please make sure\nyou give each node a unique "
                           "node name! (%s)", self.hostname, exc.reason or exc)

    def turn(self, connection: Connection) -> None:
        """Answer the requests received, and send a heartbeat when one is due (before the flush)."""
        requests = list(self.inbox)
        self.inbox.clear()  # the same list: the connection holds its append
        for delivery in requests:
            self._handle(delivery, connection)
        if self.heartbeats and time.monotonic() >= self._next_heartbeat:
            self.send_heartbeat(wakeup=False)

    def flush(self, connection: Connection) -> None:
        """Publish the events that are due (at the end of the consumer's turn, after its results, acks
        and jobs)."""
        self.events.publish_due(connection)

    def next_deadline(self) -> float | None:
        """When the loop must turn again for this object: buffered events or a heartbeat falling due."""
        deadlines = [d for d in (self.events.due(), self._next_heartbeat if self.heartbeats else None)
                     if d is not None]
        return min(deadlines, default=None)

    def stopped(self, connection: Connection) -> None:
        """The worker is going away: send the events still buffered and say ``worker-offline`` (best
        effort: the broker may be gone)."""
        if not connection.is_open:
            return
        if self.heartbeats and self._online:
            self.events.send("worker-offline", self._worker_fields())
        self.events.flush(connection)
        connection.wait(0)

    # -- what the commands call -------------------------------------------------------------------------

    def set_task_events(self, enabled: bool) -> None:
        """Turn task events on or off: the dispatcher's callback is set only while they are on."""
        self.task_events = enabled
        self.consumer.dispatch.on_event = self._task_event if enabled else None

    def send_heartbeat(self, *, wakeup: bool) -> None:
        """Queue ``worker-online`` (the first time) or ``worker-heartbeat``; a wake-up asked by a monitor
        carries ``freq=5`` and no counters, as Celery's answer to the ``heartbeat`` command does."""
        if wakeup:
            self.events.send("worker-heartbeat", worker_fields(freq=5, version=__version__))
            return
        kind = "worker-heartbeat" if self._online else "worker-online"
        self.events.send(kind, self._worker_fields())
        self._online = True
        self._next_heartbeat = time.monotonic() + HEARTBEAT_FREQ

    def _worker_fields(self) -> dict[str, Any]:
        dispatch = self.consumer.dispatch
        return worker_fields(freq=HEARTBEAT_FREQ, version=__version__, active=len(dispatch.requests.running),
                             processed=sum(dispatch.total.values()))

    # -- requests ---------------------------------------------------------------------------------------

    def _handle(self, delivery: Delivery, connection: Connection) -> None:
        """Decode, select, run and answer one request; log and drop what is not one."""
        props = delivery.properties
        try:
            body = serialization.loads(delivery.body, props.get("content_type"),
                                       props.get("content_encoding"), accept=self.app.conf.accept_content)
            request = pidbox.parse_request(body)
            if not pidbox.selected(self.hostname, request.destination, request.pattern, request.matcher):
                return
            if request.reply_to is not None and request.reply_to["exchange"] != self._reply_exchange:
                # Declaring or publishing to a foreign exchange could close the channel (a wrong type,
                # or no such exchange): a client must not be able to cut the worker's connection.
                raise ValueError(f"replies go to {self._reply_exchange!r}, "
                                 f"not {request.reply_to['exchange']!r}")
        except Exception as exc:  # noqa: BLE001 - whatever a client sends, the worker goes on
            logger.error("Dropped a malformed remote control message (%r): %.200r", exc, delivery.body)
            return
        clock = (props.get("headers") or {}).get("clock")
        if isinstance(clock, int):
            self.clock.adjust(clock)
        else:
            self.clock.forward()
        reply = self._run(request)
        if reply is not NO_REPLY and request.reply_to is not None:
            self._reply(connection, request, reply)

    def _run(self, request: pidbox.ControlRequest) -> Any:
        handler = HANDLERS.get(request.method)
        try:
            if handler is None:
                raise KeyError(request.method)
            return handler(self, **request.arguments)
        except Exception as exc:  # noqa: BLE001 - Celery answers every error as {"error": repr}
            logger.exception("pidbox command error: %r", exc)
            return {"error": repr(exc)}

    def _reply(self, connection: Connection, request: pidbox.ControlRequest, reply: Any) -> None:
        assert request.reply_to is not None
        try:
            content_type, encoding, body = serialization.dumps({self.hostname: reply},
                                                               self.app.conf.task_serializer)
        except Exception as exc:  # noqa: BLE001 - a reply that cannot be encoded says so instead
            content_type, encoding, body = serialization.dumps({self.hostname: {"error": repr(exc)}}, "json")
        exchange = request.reply_to["exchange"]
        if not self._reply_declared:
            connection.declare_exchange(exchange, "direct", durable=False)
            self._reply_declared = True
        connection.publish(body, {"content_type": content_type, "content_encoding": encoding,
                                  "delivery_mode": 1, "priority": 0,
                                  "headers": {"ticket": request.ticket, "clock": self.clock.forward()}},
                           exchange=exchange, routing_key=request.reply_to["routing_key"])

    def _mailbox_cancelled(self, queue: str) -> None:
        logger.warning("The broker cancelled the remote control mailbox %r: remote control is off until "
                       "the next connection", queue)

    # -- task events ------------------------------------------------------------------------------------

    def _task_event(self, kind: str, request: Request, fields: dict[str, Any]) -> None:
        """The dispatcher's callback: one task event, with the fields Celery's receivers need."""
        headers = request.headers
        if kind == "received":
            fields = {"name": headers.task, "args": headers.argsrepr, "kwargs": headers.kwargsrepr,
                      "root_id": headers.root_id, "parent_id": headers.parent_id, "retries": headers.retries,
                      "eta": headers.headers.get("eta"), "expires": headers.headers.get("expires")}
        self.events.send(f"task-{kind}", {"uuid": headers.id, **fields})
