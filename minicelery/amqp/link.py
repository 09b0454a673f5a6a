"""One pika connection and its channel, and what every pika user here shares: the field-table codec,
connection parameters, error translation and Celery's exact declarations.

The hot path (publish, ack, reject) writes its frames straight to pika's socket when it can: see
:meth:`_Link._send`.
"""

from __future__ import annotations

import contextlib
import select
import ssl
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import pika
import pika.exceptions as pika_errors
from pika.frame import Body, Header, Method
from pika.spec import Basic

from .. import fieldtable
from ..exceptions import EncodeError, MessagingError, OperationalError
from ..transport import QueueSpec
from ..urls import mask_broker_url, parse_broker_url

Publish, Ack, Reject = Basic.Publish, Basic.Ack, Basic.Reject

__all__: list[str] = []  # internal to the amqp package: see its __init__

# _LOST: the connection is gone (a new one may work). _PIKA: all pika raises (socket errors come wrapped).
_LOST = (pika_errors.AMQPConnectionError, pika_errors.ChannelWrongStateError)
_PIKA = (pika_errors.AMQPError, pika_errors.ChannelError)
_INHERITED: list[Any] = []  # connections inherited through fork(): kept, never closed (they are the parent's)
#: How often a link lets pika's I/O loop do a send, so that it reads what the broker sent (heartbeats,
#: a closed channel) even when every send could go straight to the socket; in seconds.
_IO_TURN = 0.25
_ROUTES_KEPT = 256  # marshaled basic.publish frames remembered per link, one per (exchange, routing key)
_DELIVERY_PROPERTIES = ("content_type", "content_encoding", "headers", "correlation_id", "reply_to",
                        "priority", "expiration", "delivery_mode")


# pika cannot send a float header and truncates one it receives (Celery's ``timelimit`` may hold floats),
# and its encoder is slow for 19 headers a message: our codec takes over, pika's stays the fallback.
_CODEC = fieldtable.Codec(pika.data.encode_value, pika.data.decode_value, pika.data.encode_short_string)
pika.data.encode_value, pika.data.encode_table = _CODEC.encode_value, _CODEC.encode_table
pika.data.decode_value, pika.data.decode_table = _CODEC.decode_value, _CODEC.decode_table
pika.data.encode_short_string = _CODEC.encode_short_string  # all five are looked up on each call


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
        self.direct_publish = not (confirm or mandatory)  # a confirm or a return must be waited for
        self.declared: set[QueueSpec] = set()
        self.consuming: set[str] = set()
        self.loop_ran = False  # pika's I/O loop ran for a send: it may have read deliveries meanwhile
        self._next_turn = 0.0
        self._body_max = self.connection._impl._body_max_length  # noqa: SLF001 - the negotiated frame size
        self._number = self.channel.channel_number
        self._publish_methods: dict[tuple[str, str], bytes] = {}
        self._batch: list[bytes] | None = None  # frames gathered by batch(), and how many
        self._batch_frames = 0
        # Whether the broker sent something (a close, a heartbeat, a delivery): pika must read it first.
        self._incoming = select.poll()
        self._incoming.register(self.connection._impl._transport._sock.fileno(), select.POLLIN)  # noqa: SLF001

    def publish(self, body: bytes, properties: dict[str, Any], exchange: str, routing_key: str,
                declare: Iterable[QueueSpec]) -> None:
        # The hot path: a set lookup per queue, the properties, the frames, one send(). Nothing else.
        for spec in declare:
            if spec not in self.declared:
                _declare(self.channel, spec)
                self.declared.add(spec)
        props = pika.BasicProperties(**properties)
        if self.direct_publish and 0 < len(body) <= self._body_max:
            number = self._number
            method = self._publish_methods.get((exchange, routing_key))
            if method is None:  # the same few routes again and again: marshaled once each
                method = Method(number, Publish(exchange=exchange, routing_key=routing_key)).marshal()
                if len(self._publish_methods) < _ROUTES_KEPT:
                    self._publish_methods[exchange, routing_key] = method
            frames = (method, Header(number, len(body), props).marshal(), Body(number, body).marshal())
            if self._send(b"".join(frames), 3):
                return
        self.loop_ran = True
        self.channel.basic_publish(exchange, routing_key, body, props, mandatory=self.mandatory)

    def ack(self, delivery_tag: int, multiple: bool) -> None:
        method = Method(self._number, Ack(delivery_tag=delivery_tag, multiple=multiple))
        if not self._send(method.marshal(), 1):
            self.loop_ran = True
            self.channel.basic_ack(delivery_tag=delivery_tag, multiple=multiple)

    def reject(self, delivery_tag: int, requeue: bool) -> None:
        method = Method(self._number, Reject(delivery_tag=delivery_tag, requeue=requeue))
        if not self._send(method.marshal(), 1):
            self.loop_ran = True
            self.channel.basic_reject(delivery_tag=delivery_tag, requeue=requeue)

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Gather what is sent inside into one ``send()``: a loop turn's results and acks leave together."""
        self._batch, self._batch_frames = [], 0
        try:
            yield
        except BaseException:
            with contextlib.suppress(*_PIKA, OSError):  # best effort: the caller sends its results again
                self._flush_batch()
            raise
        else:
            self._flush_batch()
        finally:
            self._batch = None

    def _send(self, data: bytes, frames: int) -> bool:
        """Send marshaled frames straight to the socket (or into the open batch); False: pika's own path
        must send them.

        pika's path queues each frame, turns a writability watcher on, polls, sends each frame with its
        own ``send()`` and turns the watcher off: five system calls more per message, most of a publish's
        cost. It stays the path when pika has output queued (order matters), when the channel is not open,
        when the broker sent something (a connection it closed must fail this send, as with pika, not
        swallow it), and once every ``_IO_TURN`` seconds (see there); a batch is written first then.
        Called from the link's own thread only, as all of pika.
        """
        transport = self.connection._impl._transport  # noqa: SLF001 - pika has no public way to this
        now = time.monotonic()
        turn = now >= self._next_turn
        if (turn or transport is None or transport.get_write_buffer_size() or not self.channel.is_open
                or self._incoming.poll(0)):
            if turn:
                self._next_turn = now + _IO_TURN
            self._flush_batch()
            return False
        if self._batch is None:
            self._write(data, frames)
        else:
            self._batch.append(data)
            self._batch_frames += frames
        return True

    def _flush_batch(self) -> None:
        if self._batch:
            data, frames = b"".join(self._batch), self._batch_frames
            self._batch, self._batch_frames = [], 0
            self._write(data, frames)

    def _write(self, data: bytes, frames: int) -> None:
        """Write frames with one ``send()``; what does not fit goes through pika, which waits for the
        socket (and raises, as on any of its calls, if the connection is gone)."""
        impl = self.connection._impl  # noqa: SLF001
        transport = impl._transport  # noqa: SLF001
        sent = 0
        if transport is not None and not transport.get_write_buffer_size():
            with contextlib.suppress(OSError):  # nothing went out: pika meets the error and reports it
                sent = transport._sock.send(data)  # noqa: SLF001 - non-blocking, as pika keeps it
        impl.bytes_sent += len(data)  # pika's counters, which its heartbeat checker reads
        impl.frames_sent += frames
        if sent < len(data):
            if transport is None:
                raise pika_errors.StreamLostError("Connection lost before frames could be sent")
            transport.write(data[sent:])
            self.loop_ran = True
            self.connection._flush_output()  # noqa: SLF001

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
