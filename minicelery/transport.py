"""The broker seam: what the app and the worker ask of a broker, and the values that cross it.

Two protocols, each verb with its contract. :class:`Transport` is an app's client side (``app.broker``):
publish task messages, receive ``rpc://`` replies; it is shared by every thread of a process.
:class:`Connection` is the worker main process's one consuming connection, driven from one thread: it
declares, consumes, acknowledges, publishes results, and is where the worker's loop waits.

Two implementations: ``amqp`` (RabbitMQ through pika, the production broker) and ``memory`` (an
in-process broker for tests and scripts; the real worker runs on it). The values are plain frozen
dataclasses with no pika in them, so the app and the worker never load the AMQP client to name a queue
or read a delivery. Celery's counterparts are kombu's ``Connection``/``Producer``/``Consumer`` and its
``Queue``/``Exchange``/``Message``. Exchanges are direct, fanout (remote control's ``celery.pidbox``) or
topic (monitoring events' ``celeryev``); left out: headers exchanges, and message methods (acknowledging
goes through the connection).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = ["QueueSpec", "Reply", "Delivery", "Transport", "Connection"]


@dataclass(frozen=True)
class QueueSpec:
    """A queue, its exchange (default: its name; ``''`` is never declared) and binding, as Celery's (§8.2).

    ``exchange_durable`` is False only for remote control's exchanges, which Celery declares transient.
    """

    name: str
    exchange: str | None = None
    exchange_type: str = "direct"
    exchange_durable: bool = True
    routing_key: str | None = None
    durable: bool = True
    auto_delete: bool = False
    exclusive: bool = False
    arguments: Mapping[str, Any] | None = field(default=None, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "exchange", self.name if self.exchange is None else self.exchange)
        object.__setattr__(self, "routing_key", self.name if self.routing_key is None else self.routing_key)


@dataclass(frozen=True)
class Reply:
    """One message received on an rpc reply queue."""

    correlation_id: str | None
    content_type: str | None
    content_encoding: str | None
    body: bytes


@dataclass(frozen=True)
class Delivery:
    """One message delivered to a consumer; ``properties`` is a plain dict (``headers`` ``{}`` if absent)."""

    delivery_tag: int
    exchange: str
    routing_key: str
    redelivered: bool
    properties: dict[str, Any]
    body: bytes


class Transport(Protocol):
    """An app's way to the broker: publish messages and read rpc replies, from any thread.

    Implementations keep one connection per process and thread, open it on first use and never share it
    across ``fork``. Every verb raises ``OperationalError`` (with ``url`` and ``reason``) when the broker
    cannot be reached or refuses the call, and nothing else for broker trouble.
    """

    #: The broker URL with its password masked, for logs and error messages.
    url: str

    def publish(self, body: bytes, properties: dict[str, Any], *, exchange: str = "", routing_key: str,
                declare: Iterable[QueueSpec] = ()) -> None:
        """Publish one message, declaring each queue of ``declare`` first (once per connection).

        ``properties`` are AMQP basic properties (content_type, content_encoding, delivery_mode, headers,
        correlation_id, reply_to, priority, expiration); header values may be str, int, float, bool, None,
        lists and dicts of those. A lost cached connection is reopened and the message sent once more, so
        it may rarely arrive twice. ``EncodeError`` for a header value that cannot travel.
        """

    def declare_reply_queue(self, name: str, expires_ms: int | None, consume: bool = True) -> None:
        """Declare an rpc reply queue as Celery does and, unless ``consume`` is false, consume it.

        Durable, auto-delete, bound to the default exchange only, ``x-expires`` = ``expires_ms`` (left out
        when None). Consumed replies are buffered for :meth:`drain_replies`. ``consume=False`` only
        declares: a queue that never had a consumer outlives this process, for another one to read.
        """

    def drain_replies(self, name: str, timeout: float | None) -> list[Reply]:
        """Return the replies received on reply queue ``name``, waiting up to ``timeout`` s for one.

        Returns what is buffered at once, else the first replies to arrive, or ``[]`` when ``timeout``
        expires (None: wait forever). ``ValueError`` if :meth:`declare_reply_queue` was not called first
        in this thread.
        """

    def declare_exchange(self, name: str, exchange_type: str, durable: bool) -> None:
        """Declare an exchange alone (once per connection), so that messages can be published to it
        with nobody bound yet: ``task-sent`` events on the ``celeryev`` topic exchange."""

    def purge(self, queues: Iterable[str]) -> int:
        """Delete the messages waiting in ``queues``; return how many (a missing queue counts as 0)."""

    def connection(self, *, heartbeat: float | None = None) -> Connection:
        """A new, unopened consuming :class:`Connection` to the same broker, for a worker."""

    def close(self) -> None:
        """Close the calling thread's connection; the next call opens a new one."""


class Connection(Protocol):
    """A worker's consuming connection, used from one thread only.

    The worker's loop waits in :meth:`wait`, which also watches the descriptors given to :meth:`watch`
    (the pool's), services heartbeats and runs the consumer callbacks. After any verb has raised
    ``OperationalError`` the connection is closed; the caller may :meth:`connect` again, and every
    delivery not yet acknowledged will be redelivered by the broker.
    """

    #: The broker URL with its password masked, for logs and error messages.
    url: str

    @property
    def is_open(self) -> bool:
        """True between a successful :meth:`connect` and the loss or :meth:`close` of the connection."""

    def connect(self) -> None:
        """Open the connection and its channel (closing any previous one); ``OperationalError`` if not."""

    def qos(self, prefetch_count: int) -> None:
        """Limit the unacknowledged deliveries of the whole channel (0: no limit), as Celery does."""

    def declare(self, spec: QueueSpec, *, isolated: bool = False) -> None:
        """Declare a queue, its exchange and its binding.

        ``isolated``: on the channel of the ``no_ack`` consumers, so that a refusal (an exclusive queue
        another connection holds: 405 RESOURCE_LOCKED) raises ``OperationalError`` and leaves the
        connection usable; remote control declares a worker's mailbox so.
        """

    def declare_exchange(self, name: str, exchange_type: str, durable: bool) -> None:
        """Declare an exchange alone (``direct``, ``fanout`` or ``topic``), for publishing to it: a publish
        to an exchange that does not exist closes the channel on RabbitMQ."""

    def consume(self, queue: str, on_message: Callable[[Delivery], None],
                on_cancel: Callable[[str], None], *, no_ack: bool = False) -> str:
        """Consume ``queue`` with manual acknowledgement (or none: ``no_ack``); return the consumer tag.

        ``on_message(delivery)`` runs inside :meth:`wait` for each message. ``on_cancel(queue)`` runs there
        when the broker cancels the consumer (the queue was deleted, say); no message comes after it. A
        ``no_ack`` delivery is settled by the broker as it leaves: it never counts against the prefetch
        window and must not be acknowledged (remote control's mailbox, monitors' event queues).
        """

    def cancel_all(self) -> None:
        """Stop every consumer; deliveries already received stay the caller's to settle."""

    def ack(self, delivery_tag: int, multiple: bool = False) -> None:
        """Acknowledge a delivery (with ``multiple``: every one up to it); the broker forgets it."""

    def reject(self, delivery_tag: int, requeue: bool) -> None:
        """Reject a delivery: back to its queue (``requeue``), or dropped (or dead-lettered)."""

    def publish(self, body: bytes, properties: dict[str, Any], *, exchange: str = "",
                routing_key: str) -> None:
        """Publish one message (a result) on the consuming connection; it may leave at the next wait."""

    def watch(self, fd: int, on_ready: Callable[[], None]) -> None:
        """Also wake :meth:`wait` when ``fd`` is readable, calling ``on_ready()`` there (kept across
        reconnections; one descriptor at a time)."""

    def unwatch(self) -> None:
        """Stop watching the descriptor given to :meth:`watch` (before whoever owns it closes it)."""

    def wait(self, timeout: float) -> None:
        """Do the connection's I/O and callbacks until something happened or ``timeout`` s passed.

        Returns after a delivery, a cancel, a watched descriptor's ``on_ready``, or the timeout; sends
        what was published, acknowledged or rejected before it.
        """

    def close(self) -> None:
        """Close the connection; unacknowledged deliveries return to their queues."""
