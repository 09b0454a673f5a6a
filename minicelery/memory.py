"""``memory://``: a broker inside this process, for tests and scripts that have no RabbitMQ.

A real transport, not a mock: :class:`MemoryTransport` and :class:`MemoryConnection` implement the
protocols of :mod:`minicelery.transport` with AMQP's semantics where minicelery relies on them — the
default exchange routes by queue name, a declared queue is bound to a direct exchange of its name, the
prefetch window limits unacknowledged deliveries, a rejected or unacknowledged message goes back to its
queue marked ``redelivered``, reply queues are consumed without acknowledgement. The real worker (its
consumer and its prefork pool) runs on it in-process: see :func:`minicelery.testing.start_worker`.

One broker per URL (``memory://`` and ``memory://name``), shared by every thread of the process that created
it. Its forked children (pool processes retrying a task) cannot share its memory, so what they publish
travels to it as datagrams over a socket pair they inherit, and enters the queues when the broker's process
next waits or publishes. Exchanges route as AMQP's direct, fanout and topic do (:mod:`minicelery.exchanges`).
Left out: headers exchanges, TTLs, exclusive and auto-delete queues (they stay until the process ends),
priorities, dead-lettering, persistence, and processes started with ``spawn`` (they start with an empty
broker of their own). Dramatiq's ``StubBroker`` and httpx's ``MockTransport`` are the models; Celery has
kombu's ``memory``.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import os
import pickle
import select
import socket
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from .exceptions import OperationalError
from .exchanges import routes
from .transport import Delivery, QueueSpec, Reply

__all__ = ["MemoryTransport", "MemoryConnection"]


@dataclass(frozen=True)
class _Message:
    body: bytes
    properties: dict[str, Any]
    exchange: str
    routing_key: str
    redelivered: bool = False


@dataclass
class _Queue:
    messages: collections.deque[_Message] = field(default_factory=collections.deque)
    consumers: list[MemoryConnection] = field(default_factory=list)  # round robin: the first goes next


class _Broker:
    """The queues and exchanges behind one ``memory://`` URL, guarded by one lock."""

    def __init__(self) -> None:
        self.owner = os.getpid()
        self.lock = threading.Lock()
        self.arrived = threading.Condition(self.lock)  # a message entered some queue
        self.queues: dict[str, _Queue] = {}
        # exchange → {(binding key, queue, exchange type)}: an exchange without bindings drops everything
        self.bindings: dict[str, set[tuple[str, str, str]]] = {}
        # Forked children publish through this pair: a datagram arrives whole or not at all.
        self.inbox, self.outbox = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.inbox.setblocking(False)
        weakref.finalize(self, self.inbox.close)  # at exit at the latest (also for an unused broker)
        weakref.finalize(self, self.outbox.close)

    def declare(self, spec: QueueSpec) -> None:
        with self.lock:
            self.queues.setdefault(spec.name, _Queue())
            if spec.exchange:
                key = spec.name if spec.routing_key is None else spec.routing_key
                self.bindings.setdefault(spec.exchange, set()).add((key, spec.name, spec.exchange_type))

    def publish(self, message: _Message) -> None:
        """Route a message (lost when no queue matches, as AMQP drops an unroutable message)."""
        if os.getpid() != self.owner:
            self._send_to_owner(message)
            return
        with self.lock:
            self._pump()
            self._route(message)

    def _send_to_owner(self, message: _Message) -> None:
        try:
            self.outbox.send(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))
        except OSError as exc:
            raise OperationalError(f"memory:// cannot take this message from a child process: {exc}",
                                   url="memory://", reason=str(exc)) from exc

    def _route(self, message: _Message) -> None:
        """Put ``message`` into its queues and wake their consumers (the lock is held)."""
        if message.exchange:
            names = sorted({queue for binding, queue, kind in self.bindings.get(message.exchange, ())
                            if routes(kind, binding, message.routing_key)})
        else:
            names = [message.routing_key] if message.routing_key in self.queues else []
        for name in names:
            queue = self.queues[name]
            queue.messages.append(message)
            for consumer in queue.consumers:
                consumer.nudge()
        if names:
            self.arrived.notify_all()

    def take_all(self, name: str, timeout: float | None) -> list[_Message]:
        """Remove and return every message of queue ``name`` (none if it does not exist), waiting up to
        ``timeout`` s (None: forever) for the first one."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.lock:
            while True:
                self._pump()  # what forked children published is waiting too
                queue = self.queues.get(name)
                if queue is None:
                    return []
                if queue.messages:
                    break
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return []
                # Woken by a publish; children's datagrams are pumped at least every 50 ms.
                self.arrived.wait(0.05 if remaining is None else min(remaining, 0.05))
            messages = list(queue.messages)
            queue.messages.clear()
        return messages

    def pump(self) -> None:
        """Take in what forked children published (in the owner process only)."""
        with self.lock:
            self._pump()

    def _pump(self) -> None:
        if os.getpid() != self.owner:
            return
        while True:
            try:
                data = self.inbox.recv(1 << 20)
            except BlockingIOError:
                return
            # Our own children pickled this (the pair was made here); never bytes from a network.
            self._route(pickle.loads(data))


_BROKERS: dict[str, _Broker] = {}
_BROKERS_LOCK = threading.Lock()


def _broker(url: str) -> _Broker:
    name = url.partition("://")[2].strip("/") or "default"
    with _BROKERS_LOCK:
        if name not in _BROKERS:
            _BROKERS[name] = _Broker()
        return _BROKERS[name]


class MemoryTransport:
    """The :class:`~minicelery.transport.Transport` of an in-process broker (``memory://[name]``)."""

    def __init__(self, url: str | None = "memory://", **_options: Any) -> None:
        self.url = url or "memory://"
        self._broker = _broker(self.url)
        self._local = threading.local()  # this thread's reply queues

    def publish(self, body: bytes, properties: dict[str, Any], *, exchange: str = "", routing_key: str,
                declare: Iterable[QueueSpec] = ()) -> None:
        """See :meth:`Transport.publish <minicelery.transport.Transport.publish>`."""
        for spec in declare:
            self._broker.declare(spec)
        self._broker.publish(_Message(body, _copy(properties), exchange, routing_key))

    def declare_exchange(self, name: str, exchange_type: str, durable: bool) -> None:
        """See :meth:`Transport.declare_exchange <minicelery.transport.Transport.declare_exchange>`: nothing
        to keep, as an exchange routes by its bindings, which carry its type."""

    def declare_reply_queue(self, name: str, expires_ms: int | None, consume: bool = True) -> None:
        """See :meth:`Transport.declare_reply_queue <minicelery.transport.Transport.declare_reply_queue>`."""
        self._broker.declare(QueueSpec(name, exchange=""))
        if consume:
            self._reply_queues().add(name)

    def _reply_queues(self) -> set[str]:
        if getattr(self._local, "pid", None) != os.getpid():
            self._local.pid, self._local.queues = os.getpid(), set()
        queues: set[str] = self._local.queues
        return queues

    def drain_replies(self, name: str, timeout: float | None) -> list[Reply]:
        """See :meth:`Transport.drain_replies <minicelery.transport.Transport.drain_replies>`."""
        if name not in self._reply_queues():
            raise ValueError(f"declare_reply_queue({name!r}) must be called before drain_replies()")
        messages = self._broker.take_all(name, timeout)
        return [Reply(m.properties.get("correlation_id"), m.properties.get("content_type"),
                      m.properties.get("content_encoding"), m.body) for m in messages]

    def purge(self, queues: Iterable[str]) -> int:
        """See :meth:`Transport.purge <minicelery.transport.Transport.purge>`."""
        return sum(len(self._broker.take_all(name, 0)) for name in queues)

    def connection(self, *, heartbeat: float | None = None) -> MemoryConnection:
        """A new consuming connection to the same broker (heartbeats mean nothing in memory)."""
        return MemoryConnection(self.url)

    def close(self) -> None:
        """Nothing to close: the broker lives as long as the process."""


class MemoryConnection:
    """The :class:`~minicelery.transport.Connection` of an in-process broker."""

    def __init__(self, url: str | None = "memory://", **_options: Any) -> None:
        self.url = url or "memory://"
        self._broker = _broker(self.url)
        self._open = False
        self._prefetch = 0
        # queue → (on_message, on_cancel, no_ack)
        self._consumers: dict[str, tuple[Callable[[Delivery], None], Callable[[str], None], bool]] = {}
        self._unacked: dict[int, tuple[str, _Message]] = {}  # delivery tag → (queue, message)
        self._tags = itertools.count(1)
        self._watched: tuple[int, Callable[[], None]] | None = None
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)

    @property
    def is_open(self) -> bool:
        """See :attr:`Connection.is_open <minicelery.transport.Connection.is_open>`."""
        return self._open

    def connect(self) -> None:
        """See :meth:`Connection.connect <minicelery.transport.Connection.connect>`."""
        self.close()
        self._open = True

    def qos(self, prefetch_count: int) -> None:
        """See :meth:`Connection.qos <minicelery.transport.Connection.qos>`."""
        self._check()
        self._prefetch = prefetch_count

    def declare(self, spec: QueueSpec, *, isolated: bool = False) -> None:
        """See :meth:`Connection.declare <minicelery.transport.Connection.declare>` (exclusivity is not
        modelled here, so nothing is ever refused)."""
        self._check()
        self._broker.declare(spec)

    def declare_exchange(self, name: str, exchange_type: str, durable: bool) -> None:
        """See :meth:`Connection.declare_exchange <minicelery.transport.Connection.declare_exchange>`
        (nothing to keep: see :meth:`MemoryTransport.declare_exchange`)."""
        self._check()

    def consume(self, queue: str, on_message: Callable[[Delivery], None],
                on_cancel: Callable[[str], None], *, no_ack: bool = False) -> str:
        """See :meth:`Connection.consume <minicelery.transport.Connection.consume>`."""
        self._check()
        with self._broker.lock:
            found = self._broker.queues.get(queue)
            if found is not None:
                found.consumers.append(self)
        if found is None:  # RabbitMQ closes the channel for this (404), so the connection is closed too
            self.close()
            raise OperationalError(f"memory:// has no queue {queue!r}: declare it first", url=self.url,
                                   reason="404 NOT_FOUND")
        self._consumers[queue] = (on_message, on_cancel, no_ack)
        self.nudge()
        return f"ctag-{queue}"

    def cancel_all(self) -> None:
        """See :meth:`Connection.cancel_all <minicelery.transport.Connection.cancel_all>`."""
        with self._broker.lock:
            for name in self._consumers:
                with contextlib.suppress(ValueError):
                    self._broker.queues[name].consumers.remove(self)
        self._consumers.clear()

    def ack(self, delivery_tag: int, multiple: bool = False) -> None:
        """See :meth:`Connection.ack <minicelery.transport.Connection.ack>`."""
        for tag in self._settled(delivery_tag, multiple):
            del self._unacked[tag]
        self.nudge()  # the window has room again

    def reject(self, delivery_tag: int, requeue: bool) -> None:
        """See :meth:`Connection.reject <minicelery.transport.Connection.reject>`."""
        for tag in self._settled(delivery_tag, multiple=False):
            queue, message = self._unacked.pop(tag)
            if requeue:
                self._requeue([(queue, message)])
        self.nudge()

    def _settled(self, delivery_tag: int, multiple: bool) -> list[int]:
        self._check()
        if delivery_tag not in self._unacked:
            # RabbitMQ closes the channel for this (406 PRECONDITION_FAILED, unknown delivery tag).
            self.close()
            raise OperationalError(f"memory:// closed the channel: unknown delivery tag {delivery_tag}",
                                   url=self.url, reason=f"406 PRECONDITION_FAILED - unknown delivery tag "
                                                        f"{delivery_tag}")
        return [tag for tag in self._unacked if tag <= delivery_tag] if multiple else [delivery_tag]

    def publish(self, body: bytes, properties: dict[str, Any], *, exchange: str = "",
                routing_key: str) -> None:
        """See :meth:`Connection.publish <minicelery.transport.Connection.publish>`."""
        self._check()
        self._broker.publish(_Message(body, _copy(properties), exchange, routing_key))

    def watch(self, fd: int, on_ready: Callable[[], None]) -> None:
        """See :meth:`Connection.watch <minicelery.transport.Connection.watch>`."""
        self._watched = (fd, on_ready)

    def unwatch(self) -> None:
        """See :meth:`Connection.unwatch <minicelery.transport.Connection.unwatch>`."""
        self._watched = None

    def nudge(self) -> None:
        """Wake this connection's :meth:`wait` (from any thread): a message may be waiting for it."""
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_w, b"x")

    def wait(self, timeout: float) -> None:
        """See :meth:`Connection.wait <minicelery.transport.Connection.wait>`."""
        self._check()
        if self._deliver():
            return
        watched = [self._watched[0]] if self._watched is not None else []
        inbox = self._broker.inbox.fileno()
        try:
            ready, _, _ = select.select([self._wake_r, inbox, *watched], [], [], max(0.0, timeout))
        except ValueError:  # the watched descriptor was closed under us: only the pool closes it, at the end
            ready = [self._wake_r]
        if self._wake_r in ready:
            with contextlib.suppress(BlockingIOError):
                os.read(self._wake_r, 4096)
        if inbox in ready:
            self._broker.pump()
        if self._watched is not None and self._watched[0] in ready:
            self._watched[1]()
        self._deliver()

    def _deliver(self) -> bool:
        """Hand waiting messages to the consumers, within the prefetch window; return whether any."""
        if not self._consumers:
            return False
        deliveries: list[tuple[Callable[[Delivery], None], Delivery]] = []
        with self._broker.lock:
            for name, (on_message, _, no_ack) in self._consumers.items():
                queue = self._broker.queues[name]
                # no_ack deliveries never count against the prefetch window, as on RabbitMQ.
                while queue.messages and (no_ack or not self._prefetch
                                          or len(self._unacked) < self._prefetch):
                    message = queue.messages.popleft()
                    tag = next(self._tags)
                    if not no_ack:
                        self._unacked[tag] = (name, message)
                    deliveries.append((on_message, Delivery(tag, message.exchange, message.routing_key,
                                                            message.redelivered, _copy(message.properties),
                                                            message.body)))
        for on_message, delivery in deliveries:
            on_message(delivery)
        return bool(deliveries)

    def close(self) -> None:
        """See :meth:`Connection.close <minicelery.transport.Connection.close>`."""
        self.cancel_all()
        unacked = list(self._unacked.values())
        self._unacked.clear()
        self._requeue(unacked)
        self._open = False

    def _requeue(self, messages: list[tuple[str, _Message]]) -> None:
        """Put messages back at the head of their queues, in their order, marked redelivered."""
        with self._broker.lock:
            for name, message in reversed(messages):
                queue = self._broker.queues.get(name)
                if queue is not None:
                    queue.messages.appendleft(replace(message, redelivered=True))
                    for consumer in queue.consumers:
                        consumer.nudge()

    def _check(self) -> None:
        if not self._open:
            raise OperationalError(f"Not connected to {self.url}: call connect() first", url=self.url,
                                   reason="not connected")

    def __del__(self) -> None:
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)


def _copy(properties: Mapping[str, Any]) -> dict[str, Any]:
    """A delivery's own copy of the properties, with ``headers`` always a dict (as from AMQP)."""
    copied = dict(properties)
    copied["headers"] = dict(copied.get("headers") or {})
    return copied
