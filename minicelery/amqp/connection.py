"""The worker main process's consuming connection."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from ..exceptions import OperationalError
from ..transport import Delivery, QueueSpec
from .link import _DELIVERY_PROPERTIES, _PIKA, _Client, _declare, _Link, _translate

__all__ = ["WorkerConnection"]


class WorkerConnection(_Client):
    """The worker main process's one connection (arguments: see ``_Client``), driven from one thread.

    Consumer callbacks run inside :meth:`process_events`, which also services heartbeats. The worker
    waits on :meth:`fileno` itself, beside its children, and calls ``process_events(0)`` when it is
    readable or :attr:`has_buffered_input` says pika may hold deliveries already read."""

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
    def _using(self, runs_loop: bool = True) -> Iterator[_Link]:
        link = self._link  # translate pika errors, and forget the connection if they broke it
        if link is None:
            raise OperationalError(f"Not connected to {self.url_for_display}: call connect() first")
        link.loop_ran = link.loop_ran or runs_loop  # ack, reject and publish tell for themselves
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
        with self._using(runs_loop=False) as link:
            link.ack(delivery_tag, multiple)

    def reject(self, delivery_tag: int, requeue: bool) -> None:
        """Reject a message: the broker requeues it, or drops (or dead-letters) it."""
        with self._using(runs_loop=False) as link:
            link.reject(delivery_tag, requeue)

    def publish(self, body: bytes, properties: dict[str, Any], *, exchange: str = "",
                routing_key: str) -> None:
        """Publish one message (a result, a retried task) on the worker's channel."""
        with self._using(runs_loop=False) as link:
            link.publish(body, properties, exchange, routing_key, ())

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Send the acks, rejects and publishes made inside with one ``send()`` when the block ends."""
        with self._using(runs_loop=False) as link, link.batch():
            yield

    def process_events(self, time_limit: float | None) -> None:
        """Run I/O and callbacks for up to ``time_limit`` s (None: until something happens).

        Callbacks' exceptions propagate unchanged; a lost connection raises ``OperationalError``.
        """
        with self._using() as link:
            link.connection.process_data_events(time_limit=time_limit)
            link.loop_ran = False

    @property
    def has_buffered_input(self) -> bool:
        """True if a call since the last :meth:`process_events` ran pika's I/O loop (sends usually go
        straight to the socket; other calls wait in it for the broker's answer): it may have read
        deliveries that only ``process_events`` dispatches, and the socket no longer tells."""
        return self._link is not None and self._link.loop_ran

    def fileno(self) -> int:
        """The connection's socket descriptor, to wait on beside other descriptors."""
        with self._using() as link:
            # pika has no public accessor for its socket (link.py reads it the same way to send).
            sock = link.connection._impl._transport._sock  # noqa: SLF001
            return int(sock.fileno())

    def close(self) -> None:
        """Close the connection: its consumers go with it, and unacked messages return to their queues."""
        link, self._link = self._link, None
        if link is not None:
            link.close()
