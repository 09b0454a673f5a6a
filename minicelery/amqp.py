"""Talking AMQP 0-9-1 to RabbitMQ with pika: the only module that imports pika.

:class:`Broker` (an app's client side: publish tasks, receive ``rpc://`` replies, one lazy connection per
process and thread) and :class:`WorkerConnection` (the worker's consuming connection). Pika errors become
``OperationalError`` here, with the URL's password masked.

Celery's counterparts: kombu's ``Connection``/``Producer``/``Consumer`` over py-amqp, the rpc backend's
``ResultConsumer``. Left out: pools, back-off retries (one reconnect, then fail fast), failover, non-AMQP.
"""

from __future__ import annotations

import collections
import contextlib
import os
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import pika
import pika.exceptions as pika_errors

from . import fieldtable
from .exceptions import EncodeError, MessagingError, OperationalError
from .transport import Delivery, QueueSpec, Reply
from .urls import mask_broker_url, parse_broker_url

__all__ = ["QueueSpec", "Reply", "Delivery", "Broker", "WorkerConnection"]

# _LOST: the connection is gone (a new one may work). _PIKA: all pika raises (socket errors come wrapped).
_LOST = (pika_errors.AMQPConnectionError, pika_errors.ChannelWrongStateError)
_PIKA = (pika_errors.AMQPError, pika_errors.ChannelError)
_INHERITED: list[Any] = []  # connections inherited through fork(): kept, never closed (they are the parent's)
_DELIVERY_PROPERTIES = ("content_type", "content_encoding", "headers", "correlation_id", "reply_to",
                        "priority", "expiration", "delivery_mode")


# pika cannot send a float header and truncates one it receives (Celery's ``timelimit`` may hold floats),
# and its encoder is slow for 19 headers a message: our codec takes over, pika's stays the fallback.
_CODEC = fieldtable.Codec(pika.data.encode_value, pika.data.decode_value)
pika.data.encode_value, pika.data.encode_table = _CODEC.encode_value, _CODEC.encode_table
pika.data.decode_value = _CODEC.decode_value  # all three are looked up in pika.data on each call


def _reason(exc: BaseException) -> str:
    """The most useful text of a pika error: the innermost socket error when there is one."""
    inner: Any = exc
    while isinstance(inner, BaseException):  # pika wraps a connect error up to 3 times (args, .exception)
        exc, inner = inner, getattr(inner, "exception", None) or next(iter(inner.args), None)
    return str(exc) or type(exc).__name__


def _translate(exc: BaseException, url: str) -> MessagingError:  # a pika error met on an open connection
    if isinstance(exc, pika_errors.UnsupportedAMQPFieldException):  # raised before anything is sent
        return EncodeError(f"AMQP headers cannot hold {exc.args[-1]!r}: use str, int, float, bool, None, ...")
    if isinstance(exc, pika_errors.NackError | pika_errors.UnroutableError):
        return OperationalError(f"The broker at {url} did not accept the message: {exc!r}")
    if isinstance(exc, pika_errors.ChannelClosed):
        return OperationalError(f"The broker at {url} closed the channel: {exc.reply_code} {exc.reply_text}")
    return OperationalError(f"Connection to {url} lost: {_reason(exc)}")


def _declare(channel: Any, spec: QueueSpec) -> None:
    """Declare the exchange, the queue and the binding, with Celery's exact arguments."""
    if spec.exchange:
        channel.exchange_declare(exchange=spec.exchange, exchange_type=spec.exchange_type,
                                 durable=True, auto_delete=False)
    channel.queue_declare(queue=spec.name, durable=spec.durable, exclusive=spec.exclusive,
                          auto_delete=spec.auto_delete, arguments=dict(spec.arguments or {}) or None)
    if spec.exchange:
        channel.queue_bind(queue=spec.name, exchange=spec.exchange, routing_key=spec.routing_key)


class _Link:
    """One open connection, its one channel, and what has been declared on it (the per-connection cache)."""

    def __init__(self, params: pika.ConnectionParameters, url: str, confirm: bool, mandatory: bool) -> None:
        try:
            self.connection = pika.BlockingConnection(params)
            self.channel = self.connection.channel()
            if confirm:
                # basic_publish waits for the ack; raises on a nack or return. rabbitmq.com/docs/confirms
                self.channel.confirm_delivery()
        except (*_PIKA, OSError) as exc:  # OSError: a name that does not resolve is raised unwrapped
            if hasattr(self, "connection"):
                self.close()
            raise OperationalError(f"Cannot connect to {url}: {_reason(exc)}") from exc
        self.mandatory = mandatory
        self.declared: set[QueueSpec] = set()
        self.consuming: set[str] = set()

    def publish(self, body: bytes, properties: dict[str, Any], exchange: str, routing_key: str,
                declare: Iterable[QueueSpec]) -> None:
        # The hot path: a set lookup per queue, the properties, the publish. Nothing else.
        for spec in declare:
            if spec not in self.declared:
                _declare(self.channel, spec)
                self.declared.add(spec)
        self.channel.basic_publish(exchange, routing_key, body, pika.BasicProperties(**properties),
                                   mandatory=self.mandatory)

    def close(self) -> None:  # politely if still open; a failed connection has nothing left to close
        with contextlib.suppress(*_PIKA):
            if self.connection.is_open:
                self.connection.close()


class _Client:
    """What both clients share: connection parameters built once, so the hot path parses no URL.

    Args:
        url: the broker URL (``amqp://user:password@host:port/vhost``); None means Celery's default.
        heartbeat: AMQP heartbeat in seconds; None or 0 turns heartbeats off.
        connect_timeout: seconds to wait for a connection before failing (default 4, Celery's).
        transport_options: ``{'confirm_publish': True}`` turns on publisher confirms.
    """

    def __init__(self, url: str | None = None, *, heartbeat: float | None = None,
                 connect_timeout: float | None = None,
                 transport_options: Mapping[str, Any] | None = None) -> None:
        #: The URL with its password masked as ``**``, for logs and error messages.
        self.url_for_display = mask_broker_url(url, "**")
        self._confirm = bool((transport_options or {}).get("confirm_publish"))
        self._local = threading.local()  # the Broker's per-thread state
        address = parse_broker_url(url)
        timeout = connect_timeout or 4.0
        self._params = pika.ConnectionParameters(
            host=address.host, port=address.port, virtual_host=address.virtual_host,
            credentials=pika.PlainCredentials(address.userid, address.password),
            # 0 turns heartbeats off (--without-heartbeat); pika's None would take the broker's 60 s.
            heartbeat=int(heartbeat or 0),
            # Fail fast: one attempt, bounded by the timeout. Retrying is the caller's decision.
            connection_attempts=1, retry_delay=0, socket_timeout=timeout, stack_timeout=timeout,
            ssl_options=pika.SSLOptions(ssl.create_default_context(), address.host) if address.ssl else None,
            client_properties={"connection_name": "minicelery", "product": "minicelery"})


class _ThreadState:
    """What one thread of one process owns: its link, and its reply queues with the replies not drained."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.link: _Link | None = None
        self.reply_queues: dict[str, tuple[int | None, collections.deque[Reply]]] = {}  # x-expires, buffer

    def drop(self) -> None:
        link, self.link = self.link, None
        if link is not None:
            link.close()


class Broker(_Client):
    """An app's client side: publish messages, receive rpc replies (arguments: see ``_Client``).

    Connections open on first use, one per process and thread: a pika connection must never be shared by
    threads nor used by a forked child (https://pika.readthedocs.io/en/stable/faq.html)."""

    def _state(self) -> _ThreadState:
        state: _ThreadState | None = getattr(self._local, "state", None)
        if state is None or state.pid != os.getpid():
            if state is not None:  # inherited through fork: forget it; closing it would close the parent's
                _INHERITED.append(state)
            state = self._local.state = _ThreadState()
        return state

    def _link(self, state: _ThreadState) -> _Link:
        if state.link is None:
            state.link = _Link(self._params, self.url_for_display, self._confirm, self._confirm)
            for name in state.reply_queues:  # consume them again at once, before a reply can be missed
                self._reply_link(state, name)
        return state.link

    def publish(self, body: bytes, properties: dict[str, Any], *, exchange: str = "", routing_key: str,
                declare: Iterable[QueueSpec] = ()) -> None:
        """Publish one message, declaring each queue of ``declare`` first (once per connection).

        ``properties``: AMQP basic properties (content_type, delivery_mode, headers, ...). On a dead cached
        connection (broker restarted, missed heartbeats) the message is sent once more on a new one, so it may
        rarely arrive twice. ``OperationalError`` if the broker is unreachable or refuses the message."""
        state = self._state()
        for attempt in (1, 2):
            link = state.link or self._link(state)
            try:
                link.publish(body, properties, exchange, routing_key, declare)
                return
            except _PIKA as exc:
                if not link.channel.is_open:  # closed by the broker, or with its connection
                    state.drop()
                if attempt == 2 or not isinstance(exc, _LOST):
                    raise _translate(exc, self.url_for_display) from exc

    def declare_reply_queue(self, name: str, expires_ms: int | None, consume: bool = True) -> None:
        """Declare an rpc reply queue as Celery does (spec §9.1) and, unless told not to, consume it.

        Durable, auto-delete, not exclusive, ``x-expires`` = ``expires_ms`` (left out when None), bound only
        to the default exchange; declared once per connection. Replies are consumed without acks into a
        buffer that :meth:`drain_replies` empties. ``consume=False`` only declares: a queue that never had a
        consumer is not auto-deleted, so another process can read it later (the CLI's ``call``/``result``).
        ``OperationalError`` if the broker is unreachable."""
        state = self._state()
        if not consume:
            spec = QueueSpec(name, exchange="", durable=True, auto_delete=True,
                             arguments={"x-expires": expires_ms} if expires_ms else None)
            return self._declare_only(state, spec)
        state.reply_queues.setdefault(name, (expires_ms, collections.deque()))
        self._reply_link(state, name)
        return None

    def _declare_only(self, state: _ThreadState, spec: QueueSpec) -> None:
        """Declare ``spec`` on this thread's connection, as a publish would, without publishing."""
        link = self._link(state)
        try:
            _declare(link.channel, spec)
        except _PIKA as exc:
            state.drop()
            raise _translate(exc, self.url_for_display) from exc

    def purge(self, queues: Iterable[str]) -> int:
        """Delete the messages waiting in ``queues``; return how many (a missing queue counts as 0)."""
        count = 0
        for name in queues:
            state = self._state()
            try:
                count += self._link(state).channel.queue_purge(name).method.message_count
            except pika_errors.ChannelClosedByBroker as exc:
                state.drop()  # a missing queue closes the channel: 404, as Celery reports it, is no error
                if exc.reply_code != 404:
                    raise _translate(exc, self.url_for_display) from exc
        return count

    def _reply_link(self, state: _ThreadState, name: str) -> _Link:
        """The thread's link, consuming reply queue ``name`` (once per connection, so again after a drop)."""
        expires_ms, buffer = state.reply_queues[name]
        link = self._link(state)
        if name in link.consuming:
            return link

        def on_reply(_channel: Any, _method: Any, props: Any, body: bytes) -> None:
            buffer.append(Reply(props.correlation_id, props.content_type, props.content_encoding, body))

        try:
            link.channel.queue_declare(queue=name, durable=True, auto_delete=True, exclusive=False,
                                       arguments={"x-expires": expires_ms} if expires_ms else None)
            link.channel.basic_consume(queue=name, on_message_callback=on_reply, auto_ack=True)
        except _PIKA as exc:
            state.drop()
            raise _translate(exc, self.url_for_display) from exc
        link.consuming.add(name)
        return link

    def drain_replies(self, name: str, timeout: float | None) -> list[Reply]:
        """Return the replies received on reply queue ``name``, waiting up to ``timeout`` s for one.

        Returns what is buffered at once, else the first replies to arrive, or ``[]`` when ``timeout`` expires
        (None: forever). A dropped connection is reopened and consumed again; replies sent meanwhile are lost
        with the auto-delete queue. ``ValueError`` if :meth:`declare_reply_queue` was not called first."""
        state = self._state()
        if name not in state.reply_queues:
            raise ValueError(f"declare_reply_queue({name!r}) must be called before drain_replies()")
        buffer = state.reply_queues[name][1]
        deadline = None if timeout is None else time.monotonic() + timeout
        while not buffer:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            link = self._reply_link(state, name)
            try:
                link.connection.process_data_events(time_limit=remaining)
            except _PIKA as exc:
                state.drop()
                if not isinstance(exc, _LOST):
                    raise _translate(exc, self.url_for_display) from exc
                self._reply_link(state, name)  # consume again at once, so replies from now on are kept
            if remaining == 0.0:
                break
        return [buffer.popleft() for _ in range(len(buffer))]

    def close(self) -> None:
        """Close the calling thread's connection; the next call opens a new one."""
        self._state().drop()


class WorkerConnection(_Client):
    """The worker main process's one connection (arguments: see ``_Client``), driven from one thread.

    Only :meth:`call_threadsafe` may be called from another thread (the pool's collector uses it to hand
    over acks). Callbacks run inside :meth:`process_events`, which also services heartbeats."""

    _link: _Link | None = None

    @property
    def is_open(self) -> bool:
        """True while the connection and its channel are open."""
        return self._link is not None and self._link.connection.is_open and self._link.channel.is_open

    def connect(self) -> None:
        """Open the connection and its channel (closing any previous one); OperationalError if it can't."""
        self.close()
        # Never mandatory: a result for a reply queue that expired is dropped by the broker, as with Celery.
        self._link = _Link(self._params, self.url_for_display, self._confirm, mandatory=False)

    @contextlib.contextmanager
    def _using(self) -> Iterator[_Link]:
        link = self._link  # translate pika errors, and forget the connection if they broke it
        if link is None:
            raise OperationalError(f"Not connected to {self.url_for_display}: call connect() first")
        try:
            yield link
        except _PIKA as exc:
            if not self.is_open:
                self.close()  # the worker decides whether to connect() again
            raise _translate(exc, self.url_for_display) from exc

    def qos(self, prefetch_count: int) -> None:
        """Set the prefetch limit of the whole channel, as Celery does on RabbitMQ (spec §8.3)."""
        with self._using() as link:
            # global_qos=True: RabbitMQ applies the limit per channel, shared by all its consumers.
            link.channel.basic_qos(prefetch_size=0, prefetch_count=prefetch_count, global_qos=True)

    def declare(self, spec: QueueSpec) -> None:
        """Declare a queue, its exchange and its binding."""
        with self._using() as link:
            _declare(link.channel, spec)

    def consume(self, queue: str, on_message: Callable[[Delivery], None]) -> str:
        """Consume ``queue`` with manual acks, calling ``on_message`` for each message; return the tag."""
        def deliver(_channel: Any, method: Any, props: Any, body: bytes) -> None:
            properties = {name: getattr(props, name) for name in _DELIVERY_PROPERTIES}
            properties["headers"] = properties["headers"] or {}
            on_message(Delivery(method.delivery_tag, method.exchange, method.routing_key,
                                method.redelivered, properties, body))

        with self._using() as link:
            return str(link.channel.basic_consume(queue=queue, on_message_callback=deliver, auto_ack=False))

    def cancel_all(self) -> None:
        """Stop every consumer; messages received but not yet dispatched go back to their queues."""
        with self._using() as link:
            for tag in list(link.channel.consumer_tags):
                link.channel.basic_cancel(tag)

    def ack(self, delivery_tag: int, multiple: bool = False) -> None:
        """Acknowledge a message: the broker forgets it."""
        with self._using() as link:
            link.channel.basic_ack(delivery_tag=delivery_tag, multiple=multiple)

    def reject(self, delivery_tag: int, requeue: bool) -> None:
        """Reject a message: the broker requeues it, or drops (or dead-letters) it."""
        with self._using() as link:
            link.channel.basic_reject(delivery_tag=delivery_tag, requeue=requeue)

    def publish(self, body: bytes, properties: dict[str, Any], *, exchange: str = "",
                routing_key: str) -> None:
        """Publish one message (a result, a retried task) on the worker's channel."""
        with self._using() as link:
            link.publish(body, properties, exchange, routing_key, ())

    def process_events(self, time_limit: float | None) -> None:
        """Run I/O and callbacks for up to ``time_limit`` s (None: until something happens).

        Callbacks' exceptions propagate unchanged; a lost connection raises ``OperationalError``.
        """
        with self._using() as link:
            link.connection.process_data_events(time_limit=time_limit)

    def call_threadsafe(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` in the loop's thread at its next :meth:`process_events`; a no-op once closed."""
        link = self._link
        if link is not None:
            with contextlib.suppress(pika_errors.ConnectionWrongStateError):
                link.connection.add_callback_threadsafe(callback)

    def close(self) -> None:
        """Close the connection: its consumers go with it, and unacked messages return to their queues."""
        link, self._link = self._link, None
        if link is not None:
            link.close()
