"""The virtual host ``/``: exchanges, queues and bindings, routing, settling and dead-lettering.

Channels hand it declarations and published messages; it owns every queue and exchange, assigns each
enqueued copy a broker-wide entry id (publish order), tells the journal what to record, and schedules
dispatch so that one connection's publish reaches another connection's consumer in the same loop turn.
RabbitMQ's counterpart is ``rabbit_vhost``, ``rabbit_exchange``, ``rabbit_amqqueue``, ``rabbit_dead_letter``.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pika.spec as spec

from . import arguments, content, tables
from .exchange import TYPES, Exchange
from .frames import (
    ACCESS_REFUSED,
    COMMAND_INVALID,
    NOT_FOUND,
    PRECONDITION_FAILED,
    RESOURCE_LOCKED,
    AMQPError,
)
from .queue import Consumer, Entry, Queue

if TYPE_CHECKING:  # annotations only
    from .channel import Channel
    from .journal import Journal

log = logging.getLogger("minicelery.broker")

PREDECLARED = (("amq.direct", "direct"), ("amq.fanout", "fanout"), ("amq.topic", "topic"),
               ("amq.headers", "headers"), ("amq.match", "headers"))


def _locked(name: str) -> AMQPError:
    return AMQPError(RESOURCE_LOCKED,
                     f"cannot obtain exclusive access to locked queue '{name}' in vhost '/'. It could be "
                     "originally declared on another connection or the exclusive property value does not "
                     "match that of the original declaration.")


class VirtualHost:
    """Every exchange and queue of the broker's one virtual host."""

    def __init__(self, journal: Journal | None = None) -> None:
        self.exchanges = {name: Exchange(name, kind, durable=True) for name, kind in PREDECLARED}
        self.queues: dict[str, Queue] = {}
        self.journal = journal
        self.next_id = 1
        self.memory = 0              # bytes held by live entries
        self._pending: dict[int, Queue] = {}
        self._dispatch_scheduled = False

    # -- lookups --------------------------------------------------------------------------------------
    def queue_for(self, name: str, connection: Any) -> Queue:
        """The queue ``name``: 404 when missing, 405 when it is another connection's exclusive queue."""
        queue = self.queues.get(name)
        if queue is None:
            raise AMQPError(NOT_FOUND, f"no queue '{name}' in vhost '/'")
        if queue.exclusive_owner is not None and queue.exclusive_owner is not connection:
            raise _locked(name)
        return queue

    def exchange_for_publish(self, name: str) -> None:
        """Check a publish's exchange exists (the default exchange always does)."""
        if name and name not in self.exchanges:
            raise AMQPError(NOT_FOUND, f"no exchange '{name}' in vhost '/'")

    def _exchange(self, name: str) -> Exchange:
        if not name:
            raise AMQPError(ACCESS_REFUSED, "operation not permitted on the default exchange")
        exchange = self.exchanges.get(name)
        if exchange is None:
            raise AMQPError(NOT_FOUND, f"no exchange '{name}' in vhost '/'")
        return exchange

    # -- declarations ---------------------------------------------------------------------------------
    def declaration(self, method: Any, connection: Any) -> Any:
        """Carry out an Exchange.* or Queue.* method and return its Ok reply."""
        if isinstance(method, spec.Queue.Declare):
            return self.declare_queue(method, connection)
        if isinstance(method, spec.Exchange.Declare):
            return self.declare_exchange(method)
        if isinstance(method, spec.Exchange.Delete):
            return self.delete_exchange(method)
        if isinstance(method, spec.Queue.Bind | spec.Queue.Unbind):
            return self.bind(method, connection)
        if isinstance(method, spec.Queue.Delete):
            if method.queue not in self.queues:
                return spec.Queue.DeleteOk(0)
            queue = self.queue_for(method.queue, connection)
            return spec.Queue.DeleteOk(self.delete_queue(queue, if_unused=method.if_unused,
                                                         if_empty=method.if_empty))
        queue = self.queue_for(method.queue, connection)  # Queue.Purge
        entries = queue.purge()
        for entry in entries:
            self.settle(queue, entry)
        return spec.Queue.PurgeOk(len(entries))

    def declare_queue(self, method: spec.Queue.Declare, connection: Any) -> spec.Queue.DeclareOk:
        """Queue.Declare: passive lookup, creation, or an equivalence-checked redeclaration."""
        name = method.queue
        if method.passive:
            queue = self.queue_for(name, connection)
            queue.touch()
            return spec.Queue.DeclareOk(name, queue.ready, len(queue.consumers))
        if name.startswith("amq."):
            raise AMQPError(ACCESS_REFUSED, f"queue name '{name}' contains reserved prefix 'amq.*'")
        name = name or "amq.gen-" + base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")
        arguments.validate_queue(name, method.arguments)
        flags = {"durable": method.durable, "auto_delete": method.auto_delete}
        existing = self.queues.get(name)
        if existing is not None:
            queue = existing
            if queue.exclusive_owner is not None and queue.exclusive_owner is not connection:
                raise _locked(name)
            arguments.check_equivalent("queue", name, arguments.compared(
                {"durable": queue.durable, "auto_delete": queue.auto_delete}, queue.arguments),
                arguments.compared(flags, method.arguments))
        else:
            queue = Queue(self, name, durable=method.durable, auto_delete=method.auto_delete,
                          exclusive_owner=connection if method.exclusive else None,
                          arguments=method.arguments)
            self.queues[name] = queue
            if method.exclusive:
                connection.exclusive_queues.append(queue)
            if queue.durable and not method.exclusive:
                self.definitions_changed()
        queue.touch()
        return spec.Queue.DeclareOk(name, queue.ready, len(queue.consumers))

    def declare_exchange(self, method: spec.Exchange.Declare) -> spec.Exchange.DeclareOk:
        """Exchange.Declare: passive lookup, creation, or an equivalence-checked redeclaration."""
        name = method.exchange
        if method.passive:
            self._exchange(name)
            return spec.Exchange.DeclareOk()
        if not name:
            raise AMQPError(ACCESS_REFUSED, "operation not permitted on the default exchange")
        if name.startswith("amq."):
            raise AMQPError(ACCESS_REFUSED, f"exchange name '{name}' contains reserved prefix 'amq.*'")
        if method.type not in TYPES:
            raise AMQPError(COMMAND_INVALID, f"unknown exchange type '{method.type}'")
        exchange = self.exchanges.get(name)
        if exchange is not None:
            arguments.check_equivalent("exchange", name, {"type": exchange.type, "durable": exchange.durable},
                                       {"type": method.type, "durable": method.durable})
            return spec.Exchange.DeclareOk()
        self.exchanges[name] = Exchange(name, method.type, durable=method.durable,
                                        auto_delete=method.auto_delete, internal=method.internal,
                                        arguments=method.arguments)
        if method.durable:
            self.definitions_changed()
        return spec.Exchange.DeclareOk()

    def delete_exchange(self, method: spec.Exchange.Delete) -> spec.Exchange.DeleteOk:
        """Exchange.Delete: a missing exchange is not an error; ``if_unused`` refuses one with bindings."""
        name = method.exchange
        if not name or name.startswith("amq."):
            raise AMQPError(ACCESS_REFUSED, "operation not permitted on the default exchange" if not name
                            else f"exchange name '{name}' contains reserved prefix 'amq.*'")
        exchange = self.exchanges.get(name)
        if exchange is not None:
            if method.if_unused and exchange.bindings:
                raise AMQPError(PRECONDITION_FAILED, f"exchange '{name}' in vhost '/' in use")
            del self.exchanges[name]
            if exchange.durable:
                self.definitions_changed()
        return spec.Exchange.DeleteOk()

    def bind(self, method: spec.Queue.Bind | spec.Queue.Unbind, connection: Any) -> Any:
        """Queue.Bind / Queue.Unbind (unbinding what is not bound is not an error)."""
        queue = self.queue_for(method.queue, connection)
        exchange = self._exchange(method.exchange)
        if isinstance(method, spec.Queue.Bind):
            exchange.bind(queue.name, method.routing_key, method.arguments)
        else:
            exchange.unbind(queue.name, method.routing_key)
            self._auto_delete(exchange)
        if queue.durable and exchange.durable and queue.exclusive_owner is None:
            self.definitions_changed()
        return spec.Queue.BindOk() if isinstance(method, spec.Queue.Bind) else spec.Queue.UnbindOk()

    def delete_queue(self, queue: Queue, *, if_unused: bool = False, if_empty: bool = False) -> int:
        """Delete a queue with its ready messages; its consumers get a server-initiated Basic.Cancel."""
        if if_unused and queue.consumers:
            raise AMQPError(PRECONDITION_FAILED, f"queue '{queue.name}' in vhost '/' in use")
        if if_empty and queue.ready:
            raise AMQPError(PRECONDITION_FAILED, f"queue '{queue.name}' in vhost '/' not empty")
        if self.queues.get(queue.name) is not queue:
            return 0
        del self.queues[queue.name]
        queue.deleted = True
        for consumer in list(queue.consumers):
            consumer.channel.server_cancel(consumer)
        queue.consumers.clear()
        entries = queue.purge()
        for entry in entries:
            self.settle(queue, entry)
        for exchange in list(self.exchanges.values()):
            if any(bound == queue.name for bound, _ in exchange.bindings):
                exchange.unbind_queue(queue.name)
                self._auto_delete(exchange)
        if queue.durable and queue.exclusive_owner is None:
            self.definitions_changed()
        return len(entries)

    def _auto_delete(self, exchange: Exchange) -> None:
        # RabbitMQ deletes an auto-delete exchange when its last binding goes
        if exchange.auto_delete and not exchange.bindings and self.exchanges.get(exchange.name) is exchange:
            del self.exchanges[exchange.name]
            if exchange.durable:
                self.definitions_changed()

    def remove_consumer(self, consumer: Consumer) -> None:
        """A consumer ended: an auto-delete queue goes with its last consumer."""
        queue = consumer.queue
        if consumer in queue.consumers:
            queue.consumers.remove(consumer)
        queue.touch()
        if queue.auto_delete and not queue.consumers and not queue.deleted:
            self.delete_queue(queue)

    # -- messages -------------------------------------------------------------------------------------
    def publish(self, message: content.Message,
                skip: Callable[[str], bool] | None = None) -> tuple[bool, bool, bool]:
        """Route and enqueue ``message``: (routed anywhere, a journal sync is needed for its confirm, a full
        queue refused it: its confirm is a nack).

        ``skip(queue name)`` leaves a routed queue out (dead-letter cycles).
        """
        if not message.exchange:
            names = {message.routing_key} if message.routing_key in self.queues else set()
        else:
            exchange = self._exchange(message.exchange)
            headers = None
            if exchange.type == "headers":
                raw = content.headers_raw(message.header)
                headers = tables.decode_table(raw, 0)[0] if raw else {}
            names = exchange.route(message.routing_key, headers)
        needs_sync, refused, now = False, False, time.monotonic()
        for name in names:
            queue = self.queues.get(name)
            if queue is None or (skip is not None and skip(name)):
                continue
            if queue.refuses():
                refused = True
                if queue.overflow == "reject-publish-dlx":
                    self.memory += message.size
                    self.dead_letter(queue, Entry(self.next_id, message, None, False), "maxlen")
                    self.next_id += 1
                continue
            durable = queue.durable and queue.exclusive_owner is None and self.journal is not None
            entry = Entry(self.next_id, message, queue.expiry_for(message, now),
                          persisted=message.persistent and durable)
            self.next_id += 1
            self.memory += message.size
            if entry.persisted:
                assert self.journal is not None
                self.journal.publish(queue.name, entry)
                needs_sync = True
            queue.enqueue(entry, now)
        return bool(names), needs_sync, refused

    def settle(self, queue: Queue, entry: Entry) -> None:
        """An entry's life is over (acked, dropped, purged, deleted); a second call does nothing."""
        if entry.live:
            entry.live = False
            self.memory -= entry.message.size
            if entry.persisted and self.journal is not None:
                self.journal.settle(entry.id)

    def first_delivery(self, entry: Entry) -> None:
        """Record a first delivery, so ``redelivered`` is right after a restart."""
        if entry.persisted and self.journal is not None:
            self.journal.delivered(entry.id)

    def dead_letter(self, queue: Queue, entry: Entry, reason: str) -> None:
        """Settle ``entry`` and republish it to the queue's dead-letter exchange, if it has one."""
        if not entry.live:
            return
        self.settle(queue, entry)
        target = queue.arguments.get("x-dead-letter-exchange")
        if target is None or (target and target not in self.exchanges):
            return
        from .deadletter import dead_lettered, is_cycle  # noqa: PLC0415 - rare path
        message, deaths = dead_lettered(entry.message, queue, reason, target)
        self.publish(message, lambda name: is_cycle(name, deaths))

    def wait_for_sync(self, channel: Channel) -> None:
        """``channel`` has confirms waiting for the journal's next sync."""
        if self.journal is None:
            channel.synced(True)
        else:
            self.journal.wait_for_sync(channel)

    def definitions_changed(self) -> None:
        """A durable exchange, queue or binding changed: the journal rewrites the definitions."""
        if self.journal is not None:
            self.journal.save_definitions(self.definitions())

    def definitions(self) -> dict[str, Any]:
        """The durable definitions, as the journal stores them."""
        return {
            "exchanges": [{"name": e.name, "type": e.type, "auto_delete": e.auto_delete,
                           "internal": e.internal, "arguments": e.arguments} for e in self.exchanges.values()
                          if e.durable and not e.name.startswith("amq.")],
            "queues": [{"name": q.name, "auto_delete": q.auto_delete, "arguments": q.arguments}
                       for q in self.queues.values() if q.durable and q.exclusive_owner is None],
            "bindings": [{"exchange": e.name, "queue": queue, "routing_key": key, "arguments": args}
                         for e in self.exchanges.values() if e.durable
                         for (queue, key), args in e.bindings.items()
                         if queue in self.queues and self.queues[queue].durable],
        }

    # -- scheduling -----------------------------------------------------------------------------------
    def schedule_dispatch(self, queue: Queue) -> None:
        """Dispatch ``queue`` later in this loop turn (after the current frame's replies are queued)."""
        self._pending[id(queue)] = queue
        if not self._dispatch_scheduled:
            self._dispatch_scheduled = True
            asyncio.get_running_loop().call_soon(self._dispatch_pending)

    def _dispatch_pending(self) -> None:
        self._dispatch_scheduled = False
        pending, self._pending = self._pending, {}
        for queue in pending.values():
            if not queue.deleted:
                try:
                    queue.dispatch()
                except Exception:  # noqa: BLE001 - a callback must never raise into the loop
                    log.exception("dispatching queue %r failed", queue.name)

    def tick(self) -> None:
        """Periodic work: expire messages at the queues' heads, delete queues whose x-expires ran out."""
        now = time.monotonic()
        for queue in list(self.queues.values()):
            queue.expire_head(now)
            if queue.idle_expired(now):
                self.delete_queue(queue)
