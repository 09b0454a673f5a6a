"""A worker's consuming connection on RabbitMQ: a ``pika.SelectConnection`` on minicelery's own event
loop (:mod:`~minicelery.amqp.loop`), which is the one place where the worker's main thread waits.

pika runs its connection on any I/O loop it is given (``custom_ioloop``); ours also watches the pool's
descriptor, so a delivery, a finished job, a heartbeat timer and a deadline all wake the same
``select``, and the socket (:mod:`~minicelery.amqp.stream`) sends a step's frames together.
:meth:`AmqpConnection.wait` runs one step of the loop; pika's callbacks (deliveries,
cancels, closes) only record what happened. The protocol's synchronous verbs (declare, qos, consume)
send their method and run steps until the broker's answer arrives. Everything goes through pika's
public API.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

import pika
import pika.exceptions as pika_errors
from pika.adapters.blocking_connection import ReturnedMessage

from ..exceptions import OperationalError
from ..transport import Delivery, QueueSpec
from ..urls import mask_broker_url
from .loop import Loop
from .stream import LoopServices
from .wire import DELIVERY_PROPERTIES, PIKA_ERRORS, Properties, declarations, operational_error, parameters

__all__ = ["AmqpConnection"]

#: Python calls pika may need to decode the deepest header table a 128 KiB frame can hold (six bytes
#: and two calls a level), with a margin.
DECODE_DEPTH = 2 * 131072 // 6 + 1000

#: How long :meth:`AmqpConnection.close` waits for the broker to confirm a polite close, in seconds.
CLOSE_TIMEOUT = 2.0

#: The longest one step of the loop waits while a verb waits for the broker's answer, in seconds.
STEP = 1.0


def _step(loop: Loop, timeout: float | None) -> None:
    """Run one step of the loop, with room for pika to decode any header table.

    pika decodes a field table recursively, two Python calls per level, so a hostile message nested a
    few thousand levels deep (it fits in one 128 KiB frame) would raise ``RecursionError`` in the middle
    of pika's read, lose the connection, and be redelivered forever. The limit is raised while the loop
    runs and restored after; the worker then refuses the message by its depth (``protocol``). A deep
    recursion is safe since Python 3.11, whose Python-to-Python calls no longer use the C stack (on 3.10
    they did, so the limit could not be raised there: one reason minicelery needs 3.11).
    """
    previous = sys.getrecursionlimit()
    sys.setrecursionlimit(previous + DECODE_DEPTH)
    try:
        loop.run_once(timeout)
    finally:
        sys.setrecursionlimit(previous)


class _Answer:
    """A broker answer awaited by a synchronous verb, set by pika's callback."""

    def __init__(self) -> None:
        self.arrived = False
        self.value: Any = None

    def __call__(self, value: Any = None, *_: Any) -> None:
        self.arrived, self.value = True, value


class AmqpConnection:
    """The :class:`~minicelery.transport.Connection` for RabbitMQ (arguments as ``AmqpTransport``'s).

    The client side (``AmqpTransport``) uses it too, with :meth:`flush` after each publish and, with
    ``confirm``, publisher confirms: the broker's ack for each message, a nack or a return an error."""

    def __init__(self, url: str | None = None, *, heartbeat: float | None = None,
                 connect_timeout: float | None = None, confirm: bool = False) -> None:
        self.url = mask_broker_url(url, "**")
        self._params = parameters(url, heartbeat=heartbeat, connect_timeout=connect_timeout)
        self._confirm = confirm
        self._unconfirmed = 0  # published, not yet acked or nacked (confirm mode)
        self._refused: BaseException | None = None  # a nack or a return, for the flush waiting
        self._loop: Loop | None = None
        self._connection: Any = None  # pika.SelectConnection while connected
        self._channel: Any = None
        # no_ack consumers (remote control, monitors) get a channel of their own, as Celery's pidbox
        # does: RabbitMQ blocks a whole channel once its global prefetch window is full, no_ack
        # consumers included, and a worker busy with its window must still hear a revoke.
        self._side: Any = None
        self._side_error: BaseException | None = None  # why the side channel closed, for the verb waiting
        self._lost: BaseException | None = None  # why the connection or channel closed, once it did
        self._watched: tuple[int, Callable[[], None]] | None = None
        # consumer tag → (queue, on_cancel, the channel it consumes on)
        self._queues: dict[str, tuple[str, Callable[[str], None], Any]] = {}

    @property
    def is_open(self) -> bool:
        """See :attr:`Connection.is_open <minicelery.transport.Connection.is_open>`."""
        return self._lost is None and self._channel is not None and self._channel.is_open

    def connect(self) -> None:
        """See :meth:`Connection.connect <minicelery.transport.Connection.connect>`."""
        self.close()
        self._lost, self._queues, self._side = None, {}, None
        opened: list[BaseException] = []
        self._loop = loop = Loop()
        try:
            self._connection = pika.SelectConnection(
                self._params, on_open_error_callback=lambda _c, error: opened.append(error),
                on_close_callback=self._on_connection_closed, custom_ioloop=LoopServices(loop))
            while not (self._connection.is_open or opened):
                _step(loop, STEP)
        except (*PIKA_ERRORS, OSError) as exc:
            opened.append(exc)
        if opened:
            self._release()
            raise operational_error(opened[0], self.url, connecting=True) from opened[0]
        self._channel = self._call(self._connection.channel, callback_name="on_open_callback")
        self._channel.add_on_close_callback(self._on_channel_closed)
        self._channel.add_on_cancel_callback(self._on_cancelled)
        if self._confirm:  # https://www.rabbitmq.com/docs/confirms
            self._unconfirmed, self._refused = 0, None
            self._call(self._channel.confirm_delivery, self._on_confirm)
            self._channel.add_on_return_callback(self._on_return)
        if self._watched is not None:
            loop.add_handler(self._watched[0], self._on_watched, loop.READ)

    def qos(self, prefetch_count: int) -> None:
        """See :meth:`Connection.qos <minicelery.transport.Connection.qos>`.

        ``global_qos=True``: RabbitMQ applies the limit to the channel, shared by all its consumers, which
        is what Celery relies on (https://www.rabbitmq.com/docs/consumer-prefetch)."""
        self._check()  # before naming a method of a channel that may be gone
        self._call(self._channel.basic_qos, prefetch_count=prefetch_count, global_qos=True)

    def declare(self, spec: QueueSpec, *, isolated: bool = False) -> None:
        """See :meth:`Connection.declare <minicelery.transport.Connection.declare>`."""
        for method, arguments in declarations(spec):
            self._check()
            channel = self._side_channel() if isolated else self._channel
            self._call(getattr(channel, method), isolated=isolated, **arguments)

    def declare_exchange(self, name: str, exchange_type: str, durable: bool) -> None:
        """See :meth:`Connection.declare_exchange <minicelery.transport.Connection.declare_exchange>`."""
        self._check()
        self._call(self._channel.exchange_declare, exchange=name, exchange_type=exchange_type,
                   durable=durable, auto_delete=False)

    def consume(self, queue: str, on_message: Callable[[Delivery], None],
                on_cancel: Callable[[str], None], *, no_ack: bool = False) -> str:
        """See :meth:`Connection.consume <minicelery.transport.Connection.consume>`."""
        def deliver(_channel: Any, method: Any, props: Any, body: bytes) -> None:
            properties = {name: getattr(props, name) for name in DELIVERY_PROPERTIES}
            properties["headers"] = properties["headers"] or {}
            on_message(Delivery(method.delivery_tag, method.exchange, method.routing_key, method.redelivered,
                                properties, body))

        self._check()
        channel = self._side_channel() if no_ack else self._channel
        answer = self._call(channel.basic_consume, queue, deliver, auto_ack=no_ack, isolated=no_ack)
        tag = answer.method.consumer_tag
        self._queues[tag] = (queue, on_cancel, channel)
        return str(tag)

    def _side_channel(self) -> Any:
        """The channel of the no_ack consumers, opened on first use."""
        if self._side is None:
            self._side = self._call(self._connection.channel, callback_name="on_open_callback")
            self._side.add_on_close_callback(self._on_side_closed)
            self._side.add_on_cancel_callback(self._on_cancelled)
        return self._side

    def cancel_all(self) -> None:
        """See :meth:`Connection.cancel_all <minicelery.transport.Connection.cancel_all>`."""
        for tag, (_queue, _on_cancel, channel) in list(self._queues.items()):
            self._check()
            self._call(channel.basic_cancel, tag)
            del self._queues[tag]

    def ack(self, delivery_tag: int, multiple: bool = False) -> None:
        """See :meth:`Connection.ack <minicelery.transport.Connection.ack>`."""
        self._send(lambda: self._channel.basic_ack(delivery_tag=delivery_tag, multiple=multiple))

    def reject(self, delivery_tag: int, requeue: bool) -> None:
        """See :meth:`Connection.reject <minicelery.transport.Connection.reject>`."""
        self._send(lambda: self._channel.basic_reject(delivery_tag=delivery_tag, requeue=requeue))

    def publish(self, body: bytes, properties: dict[str, Any], *, exchange: str = "",
                routing_key: str) -> None:
        """See :meth:`Connection.publish <minicelery.transport.Connection.publish>`."""
        self._send(lambda: self._channel.basic_publish(exchange, routing_key, body, Properties(**properties),
                                                       mandatory=self._confirm))
        if self._confirm:
            self._unconfirmed += 1

    def flush(self) -> None:
        """Run the loop until what was published has left, and with ``confirm`` until the broker has
        accepted it (one message at a time: the client flushes after each publish).

        Raises:
            OperationalError: the connection is lost, or the broker nacked or returned the message.
        """
        self._check()
        assert self._loop is not None
        self._loop.run_before_wait()  # sends without reading: what the broker says is read by the next wait
        while self._loop.writing() or self._unconfirmed:
            self.wait(STEP)
        refused, self._refused = self._refused, None
        if refused is not None:
            raise operational_error(refused, self.url) from refused

    def purge(self, queue: str) -> int:
        """Delete the messages waiting in ``queue``; return how many. ``OperationalError`` if the broker
        refuses (404 for a missing queue, with the connection closed as for any refusal)."""
        self._check()
        return int(self._call(self._channel.queue_purge, queue).method.message_count)

    def watch(self, fd: int, on_ready: Callable[[], None]) -> None:
        """See :meth:`Connection.watch <minicelery.transport.Connection.watch>`."""
        self.unwatch()
        self._watched = (fd, on_ready)
        if self._loop is not None:
            self._loop.add_handler(fd, self._on_watched, self._loop.READ)

    def unwatch(self) -> None:
        """See :meth:`Connection.unwatch <minicelery.transport.Connection.unwatch>`."""
        if self._watched is not None and self._loop is not None:
            self._loop.remove_handler(self._watched[0])
        self._watched = None

    def wait(self, timeout: float) -> None:
        """See :meth:`Connection.wait <minicelery.transport.Connection.wait>`."""
        self._check()
        assert self._loop is not None
        try:
            _step(self._loop, max(0.0, timeout))
        except (*PIKA_ERRORS, OSError, RecursionError) as exc:
            # RecursionError: pika's decoder met a header table nested deeper than _step makes room for
            # (it cannot, within pika's frame_max; kept as the last line of defence): what it read is lost
            # with the connection, and the broker redelivers the message.
            self._lost = self._lost or exc
        self._check()

    def close(self) -> None:
        """See :meth:`Connection.close <minicelery.transport.Connection.close>`: politely while open, so that
        what was acknowledged or published last still reaches the broker first."""
        connection = self._connection
        if connection is None:
            return
        if self._lost is None and connection.is_open and self._loop is not None:
            try:
                connection.close()
                give_up = time.monotonic() + CLOSE_TIMEOUT
                while not connection.is_closed and self._lost is None and time.monotonic() < give_up:
                    _step(self._loop, STEP)
            except (*PIKA_ERRORS, OSError):
                pass  # closing anyway
        self._release()

    # -- the machinery ---------------------------------------------------------------------------------

    def _call(self, method: Callable[..., Any], *args: Any, callback_name: str = "callback",
              isolated: bool = False, **kwargs: Any) -> Any:
        """Call a pika method that answers through a callback, and run the loop until the broker's answer
        arrives (or the connection is lost); return what the callback was given. ``isolated``: a method of
        the side channel, whose refusal raises ``OperationalError`` and leaves the connection open."""
        self._check()
        answer = _Answer()
        self._side_error = None
        self._send(lambda: method(*args, **kwargs, **{callback_name: answer}))
        while not answer.arrived:
            assert self._loop is not None
            _step(self._loop, STEP)
            self._check()
            if isolated and self._side_error is not None:
                error, self._side_error = self._side_error, None
                raise operational_error(error, self.url) from error
        return answer.value

    def _send(self, call: Callable[[], Any]) -> None:
        """Run a channel method; a channel that is gone makes the connection lost."""
        self._check()
        try:
            call()
        except (*PIKA_ERRORS, OSError) as exc:
            self._lost = exc
            self._check()

    def _check(self) -> None:
        """Raise ``OperationalError`` once the connection or its channel is lost (closing what is left)."""
        if self._connection is None:
            raise OperationalError(f"Not connected to {self.url}: call connect() first", url=self.url,
                                   reason="not connected")
        if self._lost is not None:
            lost = self._lost
            self.close()
            raise operational_error(lost, self.url) from lost

    def _on_connection_closed(self, _connection: Any, error: BaseException) -> None:
        self._lost = self._lost or error

    def _on_channel_closed(self, _channel: Any, error: BaseException) -> None:
        # The worker's one channel is gone (the broker refused a call, or an ack named an unknown
        # delivery): treat it as the loss of the connection, whose deliveries the broker requeues.
        self._lost = self._lost or error

    def _on_side_closed(self, channel: Any, error: BaseException) -> None:
        # The broker refused a side-channel call (an exclusive mailbox in use: 405): only that channel is
        # gone, with its no_ack consumers; the next isolated verb opens a new one.
        if channel is self._side:
            self._side = None
        self._side_error = error
        for tag, (_queue, _on_cancel, consumed_on) in list(self._queues.items()):
            if consumed_on is channel:
                del self._queues[tag]

    def _on_confirm(self, frame: Any) -> None:
        if isinstance(frame.method, pika.spec.Basic.Nack):
            self._refused = self._refused or pika_errors.NackError([])
        self._unconfirmed = 0  # one message at a time (flush), so this answer is for it

    def _on_return(self, _channel: Any, method: Any, properties: Any, body: bytes) -> None:
        # mandatory: RabbitMQ returns a message no queue took, then acks it.
        returned = ReturnedMessage(method, properties, body)
        self._refused = self._refused or pika_errors.UnroutableError([returned])

    def _on_cancelled(self, frame: Any) -> None:
        consumer = self._queues.pop(frame.method.consumer_tag, None)
        if consumer is not None:
            queue, on_cancel, _channel = consumer
            on_cancel(queue)

    def _on_watched(self, _fd: int, _events: int) -> None:
        if self._watched is not None:
            self._watched[1]()

    def _release(self) -> None:
        """Forget the connection and close its event loop (the watched descriptor is not ours to close)."""
        loop, self._loop = self._loop, None
        self._connection, self._channel, self._side = None, None, None
        if loop is not None:
            loop.close()
