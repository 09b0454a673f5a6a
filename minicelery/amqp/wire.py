"""What the AMQP connection is built from: connection parameters, message properties that can carry
floats, Celery's exact declarations, and the one place where pika's errors become minicelery's.
"""

from __future__ import annotations

import ssl
from typing import Any

import pika
import pika.data
import pika.exceptions as pika_errors

from ..exceptions import EncodeError, OperationalError
from ..fieldtable import Encoder
from ..transport import QueueSpec
from ..urls import parse_broker_url

__all__: list[str] = []  # internal to the amqp package: see its __init__

#: The properties a delivery hands the worker, as a plain dict (see ``transport.Delivery``).
DELIVERY_PROPERTIES = ("content_type", "content_encoding", "headers", "correlation_id", "reply_to",
                       "priority", "expiration", "delivery_mode")

#: Every error pika raises for broker trouble (socket errors come wrapped in these).
PIKA_ERRORS = (pika_errors.AMQPError, pika_errors.ChannelError)

_HEADERS = Encoder(pika.data.encode_value)


class Properties(pika.BasicProperties):
    """pika's ``BasicProperties`` whose headers table is written by :mod:`minicelery.fieldtable`, so that
    a float header (Celery's ``timelimit``) travels as an AMQP double instead of failing to encode.

    pika encodes the other thirteen properties as it always does; the table goes where AMQP 0-9-1 puts
    it, third in the property list, after ``content_type`` and ``content_encoding``. Only minicelery's
    own messages use this class: other pika users in the process are untouched.
    """

    def encode(self) -> list[bytes]:
        headers: dict[str, Any] | None = self.headers  # type: ignore[has-type] # pika's are untyped
        self.headers = None
        try:
            encoded = b"".join(super().encode())
        except pika_errors.ShortStringTooLong as exc:  # a correlation_id or reply_to over 255 bytes
            raise EncodeError(f"An AMQP property is longer than 255 bytes: {exc.args[0]!r:.80}") from exc
        finally:
            self.headers = headers
        if headers is None:
            return [encoded]
        # One flag word holds all fourteen basic properties (bit 0, "more flags", stays clear).
        flags = int.from_bytes(encoded[:2], "big") | self.FLAG_HEADERS
        offset = 2
        for value in (self.content_type, self.content_encoding):  # short strings: a length byte, then text
            if value is not None:
                offset += 1 + encoded[offset]
        try:
            table = _HEADERS.encode_table(headers)
        except (pika_errors.UnsupportedAMQPFieldException, ValueError) as exc:
            raise EncodeError(f"AMQP headers cannot hold {exc.args[-1]!r}: use str, int, float, bool, None, "
                              "or lists and dicts of those") from exc
        return [flags.to_bytes(2, "big"), encoded[2:offset], table, encoded[offset:]]


def parameters(url: str | None, *, heartbeat: float | None,
               connect_timeout: float | None) -> pika.ConnectionParameters:
    """pika's connection parameters for a broker URL (None: Celery's default, guest on localhost)."""
    address = parse_broker_url(url)
    timeout = connect_timeout or 4.0  # Celery's broker_connection_timeout
    return pika.ConnectionParameters(
        host=address.host, port=address.port, virtual_host=address.virtual_host,
        credentials=pika.PlainCredentials(address.userid, address.password),
        # 0 turns heartbeats off (--without-heartbeat); pika's None would take the broker's 60 s.
        heartbeat=int(heartbeat or 0),
        # Fail fast: one attempt, bounded by the timeout. Retrying is the caller's decision.
        connection_attempts=1, retry_delay=0, socket_timeout=timeout, stack_timeout=timeout,
        ssl_options=pika.SSLOptions(ssl.create_default_context(), address.host) if address.ssl else None,
        client_properties={"connection_name": "minicelery", "product": "minicelery"})


def declarations(spec: QueueSpec) -> list[tuple[str, dict[str, Any]]]:
    """The channel calls that declare ``spec`` as Celery does (exchange, queue, binding), as
    ``(method name, keyword arguments)``; the default exchange ``''`` is never declared."""
    calls: list[tuple[str, dict[str, Any]]] = []
    if spec.exchange:
        calls.append(("exchange_declare", {"exchange": spec.exchange, "exchange_type": spec.exchange_type,
                                           "durable": spec.exchange_durable, "auto_delete": False}))
    calls.append(("queue_declare", {"queue": spec.name, "durable": spec.durable, "exclusive": spec.exclusive,
                                    "auto_delete": spec.auto_delete,
                                    "arguments": dict(spec.arguments or {}) or None}))
    if spec.exchange:
        calls.append(("queue_bind", {"queue": spec.name, "exchange": spec.exchange,
                                     "routing_key": spec.routing_key}))
    return calls


def reason(exc: BaseException) -> str:
    """The most useful text of a pika error: the reply code and text of a close, else the innermost
    socket error (pika wraps a connect error up to four times: in ``args``, in a workflow's list of
    ``.exceptions``, in ``.exception``)."""
    if isinstance(exc, pika_errors.ChannelClosed | pika_errors.ConnectionClosed):
        return f"{exc.reply_code} {exc.reply_text}"
    inner: Any = exc
    while isinstance(inner, BaseException):
        exc = inner
        attempts = getattr(exc, "exceptions", None)
        inner = (attempts[-1] if attempts else None) or getattr(exc, "exception", None) \
            or next(iter(exc.args), None)
    return str(exc) or type(exc).__name__


def operational_error(exc: BaseException, url: str, *, connecting: bool = False) -> OperationalError:
    """The ``OperationalError`` for a pika error on ``url`` (masked), with its reason as a field."""
    why = reason(exc)
    if connecting:
        text = f"Cannot connect to {url}: {why}"
    elif isinstance(exc, pika_errors.NackError | pika_errors.UnroutableError):
        text = f"The broker at {url} did not accept the message: {exc!r}"
    elif isinstance(exc, pika_errors.ChannelClosed) and "acknowledgement" in why and "timed out" in why:
        # RabbitMQ's consumer_timeout (30 min by default): an ETA task held, or an acks_late task running,
        # longer than that. https://www.rabbitmq.com/docs/consumers#acknowledgement-timeout
        text = (f"The broker at {url} closed the channel: {why}. A message stayed unacknowledged longer "
                "than RabbitMQ's consumer_timeout (an ETA task held, or an acks_late task running, that "
                "long); it is redelivered. Raise consumer_timeout in rabbitmq.conf above your longest ETA "
                "or task (see docs/celery-mapping.md).")
    elif isinstance(exc, pika_errors.ChannelClosed):
        text = f"The broker at {url} closed the channel: {why}"
    elif isinstance(exc, RecursionError):
        text = (f"Connection to {url} dropped: a message's headers are nested too deeply for pika to "
                "decode (RecursionError); the broker will redeliver it")
    else:
        text = f"Connection to {url} lost: {why}"
    return OperationalError(text, url=url, reason=why)
