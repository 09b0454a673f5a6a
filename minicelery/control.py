"""The client side of remote control: ``app.control`` (broadcast, ping, revoke, shutdown...) and
``app.control.inspect()``.

A request is published to the ``celery.pidbox`` fanout exchange, every worker's mailbox receives it, and
those it is meant for answer on this client's reply queue (``<oid>.reply.celery.pidbox``). The client
collects replies until it has ``limit`` of them (one per destination when destinations are named) or
until ``timeout`` seconds pass with no reply, as Celery's does. Like Celery's, the control commands are
casts (no reply wanted) unless ``reply=True``; ``inspect`` always waits. Each call uses a connection of
its own (``app.broker.connection()``), opened and closed around it. Celery's counterpart is
``celery.app.control``; left out: ``autoscale``, ``pool_restart``, ``election``, ``objgraph``, ``mem*``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from . import pidbox, serialization
from .transport import Delivery

__all__ = ["Control", "Inspect"]

#: Seconds to wait for the next reply, Celery's default for the CLI, ``inspect()`` and ``broadcast``.
DEFAULT_TIMEOUT = 1.0


class Control:
    """Remote control of the workers of ``app`` (``app.control``)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def inspect(self, destination: list[str] | None = None, timeout: float = DEFAULT_TIMEOUT,
                callback: Callable[[dict[str, Any]], None] | None = None, limit: int | None = None,
                pattern: str | None = None, matcher: str | None = None) -> Inspect:
        """An :class:`Inspect` asking ``destination`` (None: every worker)."""
        return Inspect(self, destination=destination, timeout=timeout, callback=callback, limit=limit,
                       pattern=pattern, matcher=matcher)

    def broadcast(self, command: str, arguments: dict[str, Any] | None = None,
                  destination: list[str] | None = None, reply: bool = False, timeout: float = DEFAULT_TIMEOUT,
                  limit: int | None = None, callback: Callable[[dict[str, Any]], None] | None = None,
                  pattern: str | None = None, matcher: str | None = None,
                  **_: Any) -> list[dict[str, Any]] | None:
        """Send ``command`` to the workers; with ``reply``, return the list of ``{node: reply}`` received.

        ``limit`` defaults to the number of destinations; replies are awaited until it is reached or
        until ``timeout`` seconds pass without one. Without ``reply`` nothing is awaited (None)."""
        if limit is None and destination:
            limit = len(destination)
        connection = self.app.broker.connection()
        connection.connect()
        try:
            return _Call(self.app, connection).run(
                pidbox.request_body(command, arguments, destination=destination, pattern=pattern,
                                    matcher=matcher, reply_to={} if reply else None),
                timeout=timeout, limit=limit, callback=callback)
        finally:
            connection.close()

    def ping(self, destination: list[str] | None = None, timeout: float = DEFAULT_TIMEOUT,
             **kwargs: Any) -> list[dict[str, Any]]:
        """``[{node: {"ok": "pong"}}, ...]`` from the workers that answer within ``timeout``."""
        return self.broadcast("ping", reply=True, destination=destination, timeout=timeout, **kwargs) or []

    def revoke(self, task_id: str | list[str], destination: list[str] | None = None, terminate: bool = False,
               signal: str = "SIGTERM", **kwargs: Any) -> list[dict[str, Any]] | None:
        """Revoke task ids on every worker (``terminate``: also signal the child running one)."""
        return self.broadcast("revoke", {"task_id": task_id, "terminate": terminate, "signal": signal},
                              destination=destination, **kwargs)

    def terminate(self, task_id: str | list[str], destination: list[str] | None = None,
                  signal: str = "SIGTERM", **kwargs: Any) -> list[dict[str, Any]] | None:
        """``revoke(..., terminate=True)``."""
        return self.revoke(task_id, destination=destination, terminate=True, signal=signal, **kwargs)

    def shutdown(self, destination: list[str] | None = None, **kwargs: Any) -> list[dict[str, Any]] | None:
        """Ask workers for a warm shutdown (they do not reply)."""
        return self.broadcast("shutdown", destination=destination, **kwargs)

    def enable_events(self, destination: list[str] | None = None, **kwargs: Any) -> Any:
        """Turn task events on in the workers."""
        return self.broadcast("enable_events", destination=destination, **kwargs)

    def disable_events(self, destination: list[str] | None = None, **kwargs: Any) -> Any:
        """Turn task events off in the workers."""
        return self.broadcast("disable_events", destination=destination, **kwargs)

    def heartbeat(self, destination: list[str] | None = None, **kwargs: Any) -> Any:
        """Ask workers to send a worker-heartbeat event now."""
        return self.broadcast("heartbeat", destination=destination, **kwargs)

    def time_limit(self, task_name: str, soft: float | None = None, hard: float | None = None,
                   destination: list[str] | None = None, **kwargs: Any) -> Any:
        """Change a task's time limits in the workers."""
        return self.broadcast("time_limit", {"task_name": task_name, "soft": soft, "hard": hard},
                              destination=destination, **kwargs)

    def rate_limit(self, task_name: str, rate_limit: str, destination: list[str] | None = None,
                   **kwargs: Any) -> Any:
        """Ask workers to change a task's rate limit (minicelery workers answer it is not supported)."""
        return self.broadcast("rate_limit", {"task_name": task_name, "rate_limit": rate_limit},
                              destination=destination, **kwargs)


class Inspect:
    """Ask workers about their state; every method returns ``{node: reply}``, or None if none answered."""

    def __init__(self, control: Control, *, destination: list[str] | None = None,
                 timeout: float = DEFAULT_TIMEOUT, callback: Callable[[dict[str, Any]], None] | None = None,
                 limit: int | None = None, pattern: str | None = None, matcher: str | None = None) -> None:
        self.control, self.destination, self.timeout = control, destination, timeout
        self.callback, self.limit, self.pattern, self.matcher = callback, limit, pattern, matcher

    def _request(self, command: str, **arguments: Any) -> dict[str, Any] | None:
        replies = self.control.broadcast(command, arguments, destination=self.destination, reply=True,
                                         timeout=self.timeout, limit=self.limit, callback=self.callback,
                                         pattern=self.pattern, matcher=self.matcher) or []
        flat = {node: answer for reply in replies for node, answer in reply.items()}
        return flat or None

    def ping(self) -> dict[str, Any] | None:
        """``{node: {"ok": "pong"}}``."""
        return self._request("ping")

    def clock(self) -> dict[str, Any] | None:
        """Each worker's Lamport clock."""
        return self._request("clock")

    def stats(self) -> dict[str, Any] | None:
        """Each worker's statistics (total, pid, clock, uptime, pool, broker, prefetch_count, rusage)."""
        return self._request("stats")

    def active(self, safe: bool | None = None) -> dict[str, Any] | None:
        """The tasks running now."""
        return self._request("active", **({"safe": safe} if safe is not None else {}))

    def reserved(self, safe: bool | None = None) -> dict[str, Any] | None:
        """The tasks received and waiting for a child."""
        return self._request("reserved", **({"safe": safe} if safe is not None else {}))

    def scheduled(self, safe: bool | None = None) -> dict[str, Any] | None:
        """The tasks held for their ETA."""
        return self._request("scheduled", **({"safe": safe} if safe is not None else {}))

    def registered(self, *taskinfoitems: str) -> dict[str, Any] | None:
        """The registered task names (with the given attributes)."""
        return self._request("registered", taskinfoitems=list(taskinfoitems) or None)

    registered_tasks = registered

    def revoked(self) -> dict[str, Any] | None:
        """The revoked ids."""
        return self._request("revoked")

    def active_queues(self) -> dict[str, Any] | None:
        """The queues consumed."""
        return self._request("active_queues")

    def conf(self, with_defaults: bool = False) -> dict[str, Any] | None:
        """The workers' (censored) configuration."""
        return self._request("conf", with_defaults=with_defaults)

    def query_task(self, *ids: str) -> dict[str, Any] | None:
        """Where each id stands on each worker."""
        return self._request("query_task", ids=list(ids[0] if len(ids) == 1 and not isinstance(ids[0], str)
                                                    else ids))

    def report(self) -> dict[str, Any] | None:
        """Each worker's bug report."""
        return self._request("report")

    def hello(self, from_node: str, revoked: list[str] | None = None) -> dict[str, Any] | None:
        """Mingle's greeting."""
        return self._request("hello", from_node=from_node, revoked=revoked or [])


class _Call:
    """One request and the wait for its replies, on one connection."""

    def __init__(self, app: Any, connection: Any) -> None:
        self.app, self.connection, self.conf = app, connection, app.conf
        self.arrived: list[Delivery] = []

    def run(self, body: dict[str, Any], *, timeout: float, limit: int | None,
            callback: Callable[[dict[str, Any]], None] | None) -> list[dict[str, Any]] | None:
        conf, connection = self.conf, self.connection
        wants_reply = "reply_to" in body
        if wants_reply:
            oid = self.app.thread_oid  # per thread: the reply queue is exclusive to one consumer
            spec = pidbox.reply_queue(oid, conf)
            connection.declare(spec)
            connection.consume(spec.name, self.arrived.append, lambda _queue: None, no_ack=True)
            body["reply_to"] = {"exchange": pidbox.reply_exchange_name(conf), "routing_key": oid}
        connection.declare_exchange(pidbox.exchange_name(conf), "fanout", durable=False)
        content_type, encoding, data = serialization.dumps(body, conf.task_serializer)
        headers = pidbox.request_headers(self.app.clock.forward(), timeout if wants_reply else 1.0)
        connection.publish(data, {"content_type": content_type, "content_encoding": encoding,
                                  "headers": headers, "delivery_mode": 2, "priority": 0},
                           exchange=pidbox.exchange_name(conf), routing_key="")
        if not wants_reply:
            connection.wait(0)
            return None
        return self._collect(body["ticket"], timeout, limit, callback)

    def _collect(self, ticket: str, timeout: float, limit: int | None,
                 callback: Callable[[dict[str, Any]], None] | None) -> list[dict[str, Any]]:
        """Replies for ``ticket`` until ``limit`` or until ``timeout`` s pass without one."""
        replies: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while (limit is None or len(replies) < limit) and (remaining := deadline - time.monotonic()) > 0:
            self.connection.wait(remaining)
            for delivery in self.arrived:
                reply = self._decode(delivery, ticket)
                if reply is not None:
                    replies.append(reply)
                    deadline = time.monotonic() + timeout
                    if callback is not None:
                        callback(reply)
            self.arrived.clear()
        return replies

    def _decode(self, delivery: Delivery, ticket: str) -> dict[str, Any] | None:
        props = delivery.properties
        if (props.get("headers") or {}).get("ticket") != ticket:
            return None  # an answer to an earlier call of this client
        clock = props["headers"].get("clock")
        if isinstance(clock, int):
            self.app.clock.adjust(clock)
        try:
            reply = serialization.loads(delivery.body, props.get("content_type"),
                                        props.get("content_encoding"), self.conf.accept_content)
        except Exception:  # noqa: BLE001 - a reply that cannot be read is no reply
            return None
        return reply if isinstance(reply, dict) else None
