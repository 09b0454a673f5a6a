"""An app's client side on RabbitMQ: publish task messages and read ``rpc://`` replies, with one
:class:`~minicelery.amqp.connection.AmqpConnection` per process and thread, opened on first use.

It is the worker's connection class, on its own loop: a publish writes its frames and runs the loop
until they have left (one ``sendmsg()``; pika's ``BlockingConnection`` sent each frame on its own), and
waiting for replies is running that loop.
"""

from __future__ import annotations

import atexit
import collections
import os
import threading
import time
import weakref
from collections.abc import Iterable, Mapping
from typing import Any

import pika.exceptions as pika_errors

from ..exceptions import OperationalError
from ..transport import Delivery, QueueSpec, Reply
from ..urls import mask_broker_url
from .connection import STEP, AmqpConnection
from .wire import parameters

__all__ = ["AmqpTransport"]

#: Errors that mean the connection is gone (a new one may work), as causes of an ``OperationalError``.
_LOST = (pika_errors.AMQPConnectionError, pika_errors.ChannelWrongStateError, OSError)


class _Link:
    """One thread's open connection, and what was declared and consumed on it."""

    def __init__(self, url: str | None, heartbeat: float | None, connect_timeout: float | None,
                 confirm: bool) -> None:
        self.connection = AmqpConnection(url, heartbeat=heartbeat, connect_timeout=connect_timeout,
                                         confirm=confirm)
        self.connection.connect()
        self.declared: set[QueueSpec] = set()
        self.exchanges: set[str] = set()  # declared alone (declare_exchange)
        self.consuming: set[str] = set()

    def close(self) -> None:
        """Close politely if still open; a failed connection has nothing left to close."""
        self.connection.close()


class _ThreadState:
    """What one thread of one process owns: its link, and its reply queues with the replies not drained."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.thread = threading.current_thread()
        self.link: _Link | None = None
        self.reply_queues: dict[str, tuple[int | None, collections.deque[Reply]]] = {}  # x-expires, buffer
        _STATES.add(self)

    def drop(self) -> None:
        link, self.link = self.link, None
        if link is not None:
            link.close()


#: Every thread's state, so that connections still open at exit can be closed (weak: a thread's state
#: goes with the thread).
_STATES: weakref.WeakSet[_ThreadState] = weakref.WeakSet()


@atexit.register
def _close_at_exit() -> None:
    """Close this process's connections politely at interpreter exit.

    A script that publishes and exits would otherwise just drop its TCP connection, and RabbitMQ was seen
    to lose up to 1.5 % of the last 10,000 messages of such a connection; with the polite close, which
    the broker takes in order after everything sent before it, none. Connections of threads still
    running (daemon threads) are left alone: pika must not be used from two threads at once."""
    main = threading.main_thread()
    for state in list(_STATES):
        if state.pid == os.getpid() and (state.thread is main or not state.thread.is_alive()):
            state.drop()


class AmqpTransport:
    """The :class:`~minicelery.transport.Transport` for RabbitMQ.

    Args:
        url: the broker URL (``amqp://user:password@host:port/vhost``); None means Celery's default.
        heartbeat: AMQP heartbeat in seconds; None or 0 turns heartbeats off.
        connect_timeout: seconds to wait for a connection before failing (default 4, Celery's).
        transport_options: ``{'confirm_publish': True}`` turns on publisher confirms.

    Connections open on first use, one per process and thread: a pika connection must never be shared by
    threads nor used by a forked child (https://pika.readthedocs.io/en/stable/faq.html).
    """

    def __init__(self, url: str | None = None, *, heartbeat: float | None = None,
                 connect_timeout: float | None = None,
                 transport_options: Mapping[str, Any] | None = None) -> None:
        self.url = mask_broker_url(url, "**")
        self._raw_url = url
        self._heartbeat, self._connect_timeout = heartbeat, connect_timeout
        self._confirm = bool((transport_options or {}).get("confirm_publish"))
        self._params = parameters(url, heartbeat=heartbeat, connect_timeout=connect_timeout)
        self._local = threading.local()

    def _state(self) -> _ThreadState:
        state: _ThreadState | None = getattr(self._local, "state", None)
        if state is None or state.pid != os.getpid():
            # A state inherited through fork is forgotten, never closed: closing it would close the
            # parent's connection, whose socket this process shares.
            state = self._local.state = _ThreadState()
        return state

    def _link(self, state: _ThreadState) -> _Link:
        if state.link is None:
            state.link = _Link(self._raw_url, self._heartbeat, self._connect_timeout, self._confirm)
            for name in state.reply_queues:  # consume them again at once, before a reply can be missed
                self._reply_link(state, name)
        return state.link

    @staticmethod
    def _broken(state: _ThreadState, link: _Link) -> None:
        """Forget ``link`` if the error just raised on it closed it."""
        if not link.connection.is_open and state.link is link:
            state.drop()

    def publish(self, body: bytes, properties: dict[str, Any], *, exchange: str = "", routing_key: str,
                declare: Iterable[QueueSpec] = ()) -> None:
        """See :meth:`Transport.publish <minicelery.transport.Transport.publish>`."""
        state = self._state()
        for attempt in (1, 2):
            link = self._link(state)
            try:
                # Read what arrived meanwhile: a close the broker sent fails this attempt, not the message.
                link.connection.wait(0)
                self._declare(link, declare)
                link.connection.publish(body, properties, exchange=exchange, routing_key=routing_key)
                link.connection.flush()
                return
            except OperationalError as exc:
                self._broken(state, link)
                # A cached connection that died gets one more try, on a new connection.
                if attempt == 2 or not isinstance(exc.__cause__, _LOST):
                    raise

    @staticmethod
    def _declare(link: _Link, specs: Iterable[QueueSpec]) -> None:
        for spec in specs:
            if spec not in link.declared:
                link.connection.declare(spec)
                link.declared.add(spec)

    def declare_exchange(self, name: str, exchange_type: str, durable: bool) -> None:
        """See :meth:`Transport.declare_exchange <minicelery.transport.Transport.declare_exchange>`."""
        state = self._state()
        link = self._link(state)
        if name in link.exchanges:
            return
        try:
            link.connection.declare_exchange(name, exchange_type, durable)
        except OperationalError:
            self._broken(state, link)
            raise
        link.exchanges.add(name)

    def declare_reply_queue(self, name: str, expires_ms: int | None, consume: bool = True) -> None:
        """See :meth:`Transport.declare_reply_queue <minicelery.transport.Transport.declare_reply_queue>`."""
        state = self._state()
        if not consume:
            spec = QueueSpec(name, exchange="", durable=True, auto_delete=True,
                             arguments={"x-expires": expires_ms} if expires_ms else None)
            link = self._link(state)
            try:
                self._declare(link, [spec])
            except OperationalError:
                self._broken(state, link)
                raise
            return
        state.reply_queues.setdefault(name, (expires_ms, collections.deque()))
        self._reply_link(state, name)

    def purge(self, queues: Iterable[str]) -> int:
        """See :meth:`Transport.purge <minicelery.transport.Transport.purge>`."""
        count = 0
        for name in queues:
            for _attempt in (1, 2):
                state = self._state()
                link = self._link(state)
                try:
                    count += link.connection.purge(name)
                    break
                except OperationalError as exc:
                    self._broken(state, link)
                    # A missing queue closes the channel with 404: as Celery reports it, no error. Asked
                    # twice: the 404 may be the late answer to an earlier publish to a missing exchange.
                    cause = exc.__cause__
                    if not (isinstance(cause, pika_errors.ChannelClosedByBroker) and cause.reply_code == 404):
                        raise
        return count

    def _reply_link(self, state: _ThreadState, name: str) -> _Link:
        """The thread's link, consuming reply queue ``name`` (once per connection, so again after a drop)."""
        expires_ms, buffer = state.reply_queues[name]
        link = self._link(state)
        if name in link.consuming:
            return link

        def on_reply(delivery: Delivery) -> None:
            props = delivery.properties
            buffer.append(Reply(props["correlation_id"], props["content_type"], props["content_encoding"],
                                delivery.body))

        try:
            link.connection.declare(QueueSpec(name, exchange="", durable=True, auto_delete=True,
                                              arguments={"x-expires": expires_ms} if expires_ms else None))
            link.connection.consume(name, on_reply, link.consuming.discard, no_ack=True)
        except OperationalError:
            self._broken(state, link)
            raise
        link.consuming.add(name)
        return link

    def drain_replies(self, name: str, timeout: float | None) -> list[Reply]:
        """See :meth:`Transport.drain_replies <minicelery.transport.Transport.drain_replies>`.

        A dropped connection is reopened and consumed again; replies sent meanwhile are lost with the
        auto-delete queue, as with Celery."""
        state = self._state()
        if name not in state.reply_queues:
            raise ValueError(f"declare_reply_queue({name!r}) must be called before drain_replies()")
        buffer = state.reply_queues[name][1]
        deadline = None if timeout is None else time.monotonic() + timeout
        while not buffer:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            link = self._reply_link(state, name)
            try:
                link.connection.wait(STEP if remaining is None else remaining)
            except OperationalError as exc:
                self._broken(state, link)
                if not isinstance(exc.__cause__, _LOST):
                    raise
                self._reply_link(state, name)  # consume again at once, so replies from now on are kept
            if remaining == 0.0:
                break
        return [buffer.popleft() for _ in range(len(buffer))]

    def connection(self, *, heartbeat: float | None = None) -> AmqpConnection:
        """A new consuming connection to the same broker (``heartbeat`` overrides the transport's)."""
        return AmqpConnection(self._raw_url, heartbeat=self._heartbeat if heartbeat is None else heartbeat,
                              connect_timeout=self._connect_timeout)

    def close(self) -> None:
        """Close the calling thread's connection; the next call opens a new one."""
        self._state().drop()
