"""A channel: the ``Basic`` class's state machine — content assembly, deliveries, acks, prefetch, confirms.

Declarations (``Exchange.*``, ``Queue.*``) are the virtual host's business (:mod:`.vhost`); the channel
answers them. Delivery tags are per channel and shared by ``Basic.Deliver`` and ``Basic.GetOk``;
unacked deliveries are kept in tag order, which is what ``multiple`` acks and requeue on close need.
Prefetch: RabbitMQ applies a per-consumer (``global=False``) limit only to consumers created afterwards;
this broker applies it to the channel's existing consumers too, so that Celery's ETA prefetch bumps reach
its running consumer (documented deviation). RabbitMQ's counterpart is ``rabbit_channel``.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import pika.spec as spec

from . import content, methods
from .frames import (
    BODY,
    HEADER,
    METHOD,
    NO_ROUTE,
    NOT_ALLOWED,
    NOT_IMPLEMENTED,
    PRECONDITION_FAILED,
    UNEXPECTED_FRAME,
    AMQPError,
    content_frames,
    delivery,
    method_frame,
)
from .queue import Consumer, Entry, Queue

if TYPE_CHECKING:  # annotations only
    from .connection import Connection

MAX_CONSUMERS = 10_000  #: per channel (spec limits table)


class Channel:
    """One open channel of a connection."""

    def __init__(self, connection: Connection, number: int) -> None:
        self.connection, self.number, self.vhost = connection, number, connection.vhost
        self.consumers: dict[str, Consumer] = {}
        self.unacked: dict[int, tuple[Queue, Entry, Consumer | None]] = {}
        self.next_tag = 1
        self.prefetch = 0            # the channel-wide limit (global=True)
        self.consumer_prefetch = 0   # the per-consumer limit (global=False)
        self.confirming = False
        self.publish_seq = 0
        self.confirmed = 0           # highest publish sequence confirmed so far
        self.waiting: list[tuple[int, bool]] = []  # (sequence, accepted) waiting for the journal's sync
        self.closing = False         # we sent Channel.Close and wait for CloseOk
        self._publish: spec.Basic.Publish | None = None
        self._header = b""
        self._body: list[bytes] = []
        self._remaining = 0

    @property
    def idle(self) -> bool:
        """Whether no message content is being assembled (a method frame may come next)."""
        return self._publish is None

    # -- frames ---------------------------------------------------------------------------------------
    def handle(self, kind: int, payload: bytes) -> None:
        """One frame for this channel (the connection has checked the channel is open)."""
        if self._publish is not None:
            self._content(kind, payload)
        elif kind != METHOD:
            raise AMQPError(UNEXPECTED_FRAME, "expected method frame, got non method frame instead")
        else:
            method = methods.decode(payload)
            try:
                HANDLERS.get(type(method), Channel._on_unexpected)(self, method)
            except AMQPError as exc:
                if not exc.class_id:
                    exc.class_id, exc.method_id = method.INDEX >> 16, method.INDEX & 0xFFFF
                raise

    def _content(self, kind: int, payload: bytes) -> None:
        if not self._header:
            if kind != HEADER:
                raise AMQPError(UNEXPECTED_FRAME, "expected content header for class 60, got non content "
                                                  "header frame instead")
            size = content.header_size(payload)
            limit = self.connection.server.config.max_message_size
            if size > limit:
                self._publish = None
                raise AMQPError(PRECONDITION_FAILED, f"message size {size} is larger than configured max "
                                                     f"size {limit}", 60, 40)
            self._header, self._remaining = payload, size
        elif kind != BODY or len(payload) > self._remaining:
            raise AMQPError(UNEXPECTED_FRAME, "expected content body, got non content body frame instead")
        else:
            self._body.append(payload)
            self._remaining -= len(payload)
        if self._remaining == 0:
            publish, header = self._publish, self._header
            body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
            self._publish, self._header, self._body = None, b"", []
            assert publish is not None
            self._route(publish, header, body)

    def send(self, method: Any) -> None:
        """Queue a method frame on this channel."""
        self.connection.send(method_frame(self.number, method))

    # -- publishing -----------------------------------------------------------------------------------
    def _route(self, publish: spec.Basic.Publish, header: bytes, body: bytes) -> None:
        try:
            message = content.make_message(publish.exchange, publish.routing_key, header, body)
        except AMQPError as exc:
            exc.class_id, exc.method_id = 60, 40
            raise
        self.connection.published()
        routed, needs_sync, refused = self.vhost.publish(message)
        if not routed and publish.mandatory:
            self.connection.send(method_frame(self.number, spec.Basic.Return(
                NO_ROUTE, "NO_ROUTE", publish.exchange, publish.routing_key))
                + content_frames(self.number, header, body, self.connection.frame_max))
        if self.confirming:
            self.publish_seq += 1
            if needs_sync or self.waiting:
                self.waiting.append((self.publish_seq, not refused))
                self.vhost.wait_for_sync(self)
            else:
                self.confirmed = self.publish_seq
                self.send((spec.Basic.Nack if refused else spec.Basic.Ack)(self.publish_seq, False))

    def synced(self, ok: bool) -> None:
        """The journal's sync finished: confirm what waited for it (nack what a full queue refused, or
        everything when the write failed), as one ``multiple`` ack when it can."""
        if not self.waiting or self.closing:
            return
        waiting, self.waiting = self.waiting, []
        last = waiting[-1][0]
        if ok and waiting[0][0] == self.confirmed + 1 and all(accepted for _, accepted in waiting):
            self.send(spec.Basic.Ack(last, len(waiting) > 1))
        else:
            for seq, accepted in waiting:
                self.send((spec.Basic.Ack if ok and accepted else spec.Basic.Nack)(seq, False))
        self.confirmed = last

    def _on_publish(self, method: spec.Basic.Publish) -> None:
        if method.immediate:
            raise AMQPError(NOT_IMPLEMENTED, "immediate=true")
        self.vhost.exchange_for_publish(method.exchange)
        self._publish = method

    # -- delivering -----------------------------------------------------------------------------------
    def can_deliver(self, consumer: Consumer) -> bool:
        """Whether ``consumer`` may receive one more message now (prefetch limits, a writable socket)."""
        if self.closing or self.connection.writing_paused:
            return False
        if consumer.no_ack:
            return True
        return ((consumer.limit == 0 or consumer.unacked < consumer.limit)
                and (self.prefetch == 0 or len(self.unacked) < self.prefetch))

    def deliver(self, consumer: Consumer, entry: Entry) -> None:
        """Send ``entry`` to ``consumer`` as ``Basic.Deliver`` + content."""
        tag = self.next_tag
        self.next_tag += 1
        message = entry.message
        self.connection.send(delivery(self.number, consumer.wire_tag, tag, entry.redelivered,
                                      message.exchange.encode(), message.routing_key.encode(), message.header,
                                      message.body, self.connection.frame_max))
        self._delivered(consumer.queue, entry, consumer, consumer.no_ack, tag)

    def _delivered(self, queue: Queue, entry: Entry, consumer: Consumer | None, no_ack: bool,
                   tag: int) -> None:
        if not entry.redelivered:
            entry.redelivered = True
            self.vhost.first_delivery(entry)
        if no_ack:
            self.vhost.settle(queue, entry)
        else:
            self.unacked[tag] = (queue, entry, consumer)
            if consumer is not None:
                consumer.unacked += 1

    def _on_get(self, method: spec.Basic.Get) -> None:
        queue = self.vhost.queue_for(method.queue, self.connection)
        queue.touch()
        entry = queue.take()
        if entry is None:
            self.send(spec.Basic.GetEmpty())
            return
        tag = self.next_tag
        self.next_tag += 1
        message = entry.message
        self.connection.send(method_frame(self.number, spec.Basic.GetOk(
            tag, entry.redelivered, message.exchange, message.routing_key, queue.ready))
            + content_frames(self.number, message.header, message.body, self.connection.frame_max))
        self._delivered(queue, entry, None, method.no_ack, tag)

    # -- settling -------------------------------------------------------------------------------------
    def _take_tags(self, tag: int, multiple: bool) -> list[tuple[Queue, Entry, Consumer | None]]:
        if multiple:
            tags = [t for t in self.unacked if tag == 0 or t <= tag]
            if not tags and tag != 0:
                raise AMQPError(PRECONDITION_FAILED, f"unknown delivery tag {tag}")
        elif tag in self.unacked:
            tags = [tag]
        else:
            raise AMQPError(PRECONDITION_FAILED, f"unknown delivery tag {tag}")
        taken = [self.unacked.pop(t) for t in tags]
        for _queue, _entry, consumer in taken:
            if consumer is not None:
                consumer.unacked -= 1
        return taken

    def _on_ack(self, method: spec.Basic.Ack) -> None:
        for queue, entry, _ in self._take_tags(method.delivery_tag, method.multiple):
            self.vhost.settle(queue, entry)
        self.redispatch()

    def _on_reject(self, method: spec.Basic.Reject) -> None:
        self._give_back(self._take_tags(method.delivery_tag, False), method.requeue)

    def _on_nack(self, method: spec.Basic.Nack) -> None:
        self._give_back(self._take_tags(method.delivery_tag, method.multiple), method.requeue)

    def _give_back(self, taken: list[tuple[Queue, Entry, Consumer | None]], requeue: bool) -> None:
        if requeue:
            by_queue: dict[int, tuple[Queue, list[Entry]]] = {}
            for queue, entry, _ in taken:
                by_queue.setdefault(id(queue), (queue, []))[1].append(entry)
            for queue, entries in by_queue.values():
                queue.requeue(sorted(entries))
        else:
            for queue, entry, _ in taken:
                self.vhost.dead_letter(queue, entry, "rejected")
        self.redispatch()

    def _on_recover(self, method: spec.Basic.Recover) -> None:
        if not method.requeue:
            raise AMQPError(NOT_IMPLEMENTED, "requeue=false")
        self._give_back(self._take_tags(0, True), True)
        self.send(spec.Basic.RecoverOk())

    def redispatch(self) -> None:
        """Deliver more to this channel's consumers (after acks, a qos change, a recover)."""
        for consumer in list(self.consumers.values()):
            consumer.queue.dispatch()

    # -- consumers ------------------------------------------------------------------------------------
    def _on_qos(self, method: spec.Basic.Qos) -> None:
        if method.prefetch_size:
            raise AMQPError(NOT_IMPLEMENTED, f"prefetch_size!=0 ({method.prefetch_size})")
        if method.global_qos:
            self.prefetch = method.prefetch_count
        else:
            self.consumer_prefetch = method.prefetch_count
            for consumer in self.consumers.values():  # the deviation: existing consumers follow
                consumer.limit = method.prefetch_count
        self.send(spec.Basic.QosOk())
        self.redispatch()

    def _on_consume(self, method: spec.Basic.Consume) -> None:
        queue = self.vhost.queue_for(method.queue, self.connection)
        tag = method.consumer_tag or f"amq.ctag-{uuid.uuid4().hex[:22]}"
        if tag in self.consumers:
            raise AMQPError(NOT_ALLOWED, f"attempt to reuse consumer tag '{tag}'", connection=True)
        if len(self.consumers) >= MAX_CONSUMERS:
            raise AMQPError(NOT_ALLOWED, f"more than {MAX_CONSUMERS} consumers on one channel",
                            connection=True)
        if queue.consumers and (method.exclusive or any(c.exclusive for c in queue.consumers)):
            raise AMQPError(403, f"queue '{queue.name}' in vhost '/' in exclusive use")
        consumer = Consumer(tag, self, queue, method.no_ack, method.exclusive, self.consumer_prefetch)
        self.consumers[tag] = consumer
        queue.consumers.append(consumer)
        queue.touch()
        if not method.nowait:
            self.send(spec.Basic.ConsumeOk(tag))
        queue.dispatch()

    def _on_cancel(self, method: spec.Basic.Cancel) -> None:
        consumer = self.consumers.pop(method.consumer_tag, None)
        if not method.nowait:
            self.send(spec.Basic.CancelOk(method.consumer_tag))
        if consumer is not None:
            self.vhost.remove_consumer(consumer)

    def server_cancel(self, consumer: Consumer) -> None:
        """The consumer's queue was deleted: forget it and tell a client that asked to be told."""
        if self.consumers.pop(consumer.tag, None) is not None and not self.closing \
                and self.connection.capability("consumer_cancel_notify"):
            self.send(spec.Basic.Cancel(consumer.tag, True))

    # -- the channel's own life -----------------------------------------------------------------------
    def release(self) -> None:
        """Requeue every unacked delivery and cancel every consumer (close, abrupt end, channel error)."""
        self._publish, self._header, self._body = None, b"", []
        for consumer in list(self.consumers.values()):
            self.consumers.pop(consumer.tag, None)
            self.vhost.remove_consumer(consumer)
        if self.unacked:
            self._give_back(self._take_tags(0, True), True)
        self.waiting = []

    def _on_flow(self, method: spec.Channel.Flow) -> None:
        if not method.active:
            raise AMQPError(NOT_IMPLEMENTED, "active=false")
        self.send(spec.Channel.FlowOk(True))

    def _on_confirm(self, method: spec.Confirm.Select) -> None:
        self.confirming = True
        if not method.nowait:
            self.send(spec.Confirm.SelectOk())

    def _on_tx(self, method: Any) -> None:
        raise AMQPError(NOT_IMPLEMENTED, "transactions are not supported by this broker")

    def _on_access(self, method: spec.Access.Request) -> None:
        self.send(spec.Access.RequestOk(1))

    def _on_declaration(self, method: Any) -> None:
        reply = self.vhost.declaration(method, self.connection)
        if reply is not None and not getattr(method, "nowait", False):
            self.send(reply)

    def _on_unexpected(self, method: Any) -> None:
        raise AMQPError(NOT_IMPLEMENTED, f"{method.NAME} is not implemented", connection=True)


HANDLERS: dict[type, Any] = {
    spec.Basic.Publish: Channel._on_publish, spec.Basic.Ack: Channel._on_ack,
    spec.Basic.Reject: Channel._on_reject, spec.Basic.Nack: Channel._on_nack,
    spec.Basic.Get: Channel._on_get, spec.Basic.Consume: Channel._on_consume,
    spec.Basic.Cancel: Channel._on_cancel, spec.Basic.Qos: Channel._on_qos,
    spec.Basic.Recover: Channel._on_recover, spec.Channel.Flow: Channel._on_flow,
    spec.Confirm.Select: Channel._on_confirm, spec.Access.Request: Channel._on_access,
    spec.Tx.Select: Channel._on_tx, spec.Tx.Commit: Channel._on_tx, spec.Tx.Rollback: Channel._on_tx,
    spec.Exchange.Declare: Channel._on_declaration, spec.Exchange.Delete: Channel._on_declaration,
    spec.Queue.Declare: Channel._on_declaration, spec.Queue.Bind: Channel._on_declaration,
    spec.Queue.Unbind: Channel._on_declaration, spec.Queue.Purge: Channel._on_declaration,
    spec.Queue.Delete: Channel._on_declaration,
}
