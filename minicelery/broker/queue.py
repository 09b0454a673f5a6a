"""Queues: ready messages in publish order, their consumers, and the rules that end a message or a queue.

Every entry carries a broker-wide id that grows with each enqueue, so "publish order" is id order. Ready
entries sit in a deque; a requeued entry goes to a heap that is merged with the deque's head, which puts it
back at its original position whatever order the rejects came in (RabbitMQ does the same). With
``x-max-priority`` there is one such list per priority, highest served first.
A message's TTL (``x-message-ttl`` or its ``expiration``, the smaller) is checked at the head only,
when it is about to be delivered or on the broker's tick, as RabbitMQ does in practice.
RabbitMQ's counterpart is ``rabbit_amqqueue_process`` + ``rabbit_variable_queue``, minus paging to disk.
"""

from __future__ import annotations

import heapq
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from .content import Message

if TYPE_CHECKING:  # annotations only
    from .channel import Channel
    from .vhost import VirtualHost

#: Deliveries one queue makes per call before yielding the loop to other connections.
DISPATCH_BUDGET = 256


class Entry:
    """One copy of a message in one queue."""

    __slots__ = ("id", "message", "redelivered", "expires_at", "persisted", "live")

    def __init__(self, entry_id: int, message: Message, expires_at: float | None, persisted: bool) -> None:
        self.id, self.message, self.expires_at = entry_id, message, expires_at
        self.redelivered = False
        self.persisted = persisted   # written to the journal (a persistent message in a durable queue)
        self.live = True             # not yet settled (acked, dropped, dead-lettered or deleted)

    def __lt__(self, other: Entry) -> bool:
        return self.id < other.id


class ReadyList:
    """Ready entries in id order: fresh ones in a deque, requeued ones in a heap merged at the head."""

    __slots__ = ("fresh", "returned")

    def __init__(self) -> None:
        self.fresh: deque[Entry] = deque()
        self.returned: list[Entry] = []

    def __len__(self) -> int:
        return len(self.fresh) + len(self.returned)

    def head(self) -> Entry | None:
        """The oldest entry, without removing it."""
        if self.returned and (not self.fresh or self.returned[0].id < self.fresh[0].id):
            return self.returned[0]
        return self.fresh[0] if self.fresh else None

    def pop(self) -> Entry:
        """Remove and return the oldest entry (the list must not be empty)."""
        if self.returned and (not self.fresh or self.returned[0].id < self.fresh[0].id):
            return heapq.heappop(self.returned)
        return self.fresh.popleft()

    def put_back(self, entry: Entry) -> None:
        """Return a delivered entry to its place in id order."""
        if not self.returned and (not self.fresh or entry.id < self.fresh[0].id):
            self.fresh.appendleft(entry)  # the common case: the oldest outstanding comes back first
        else:
            heapq.heappush(self.returned, entry)

    def clear(self) -> list[Entry]:
        """Remove every entry, returning them."""
        entries = list(self.returned) + list(self.fresh)
        self.fresh.clear()
        self.returned.clear()
        return entries


class Consumer:
    """A ``Basic.Consume`` subscription: a channel receiving a queue's messages."""

    __slots__ = ("tag", "wire_tag", "channel", "queue", "no_ack", "exclusive", "limit", "unacked")

    def __init__(self, tag: str, channel: Channel, queue: Queue, no_ack: bool, exclusive: bool,
                 limit: int) -> None:
        self.tag, self.channel, self.queue = tag, channel, queue
        self.wire_tag = tag.encode()  # as Basic.Deliver carries it
        self.no_ack, self.exclusive, self.limit = no_ack, exclusive, limit
        self.unacked = 0


class Queue:
    """A queue: its declaration, its ready entries and its consumers."""

    def __init__(self, broker: VirtualHost, name: str, *, durable: bool, exclusive_owner: Any = None,
                 auto_delete: bool, arguments: dict[str, Any]) -> None:
        self.broker, self.name, self.durable = broker, name, durable
        self.exclusive_owner, self.auto_delete, self.arguments = exclusive_owner, auto_delete, arguments
        self.ttl: int | None = arguments.get("x-message-ttl")
        self.expires: int | None = arguments.get("x-expires")
        self.max_priority: int = arguments.get("x-max-priority") or 0
        self.max_length: int | None = arguments.get("x-max-length")
        self.overflow: str = arguments.get("x-overflow", "drop-head")
        self.levels = [ReadyList() for _ in range(self.max_priority + 1)]
        self.consumers: deque[Consumer] = deque()
        self.last_used = time.monotonic()
        self.deleted = False

    # -- the ready list -------------------------------------------------------------------------------
    @property
    def ready(self) -> int:
        """The number of ready messages (RabbitMQ's ``messages_ready``)."""
        return sum(len(level) for level in self.levels) if self.max_priority else len(self.levels[0])

    def _level(self, entry: Entry) -> ReadyList:
        return self.levels[min(entry.message.priority, self.max_priority)]

    def refuses(self) -> bool:
        """Whether a new message is refused: ``x-overflow`` ``reject-publish(-dlx)`` at ``x-max-length``
        (ready messages count, as in RabbitMQ)."""
        return self.max_length is not None and self.overflow != "drop-head" and self.ready >= self.max_length

    def expiry_for(self, message: Message, now: float) -> float | None:
        """When a message enqueued now expires (the smaller of the queue's and the message's TTL)."""
        ttls = [t for t in (self.ttl, message.expiration) if t is not None]
        return now + min(ttls) / 1000 if ttls else None

    def enqueue(self, entry: Entry, now: float) -> None:
        """Add an entry routed at ``now`` and deliver what can be delivered.

        An entry whose TTL is 0 is delivered if a consumer can take it at once, else dropped (RabbitMQ).
        """
        self._level(entry).fresh.append(entry)
        if self.max_length is not None and self.overflow == "drop-head":
            while self.ready > self.max_length:
                self.broker.dead_letter(self, self._pop_any(), "maxlen")
        self.dispatch(now)
        if entry.expires_at is not None:
            self.expire_head(now)

    def _pop_any(self) -> Entry:
        for level in reversed(self.levels):
            if level:
                return level.pop()
        raise IndexError("pop from an empty queue")

    def take(self, now: float | None = None) -> Entry | None:
        """The next deliverable entry, dropping (or dead-lettering) the entries expired before ``now``."""
        for level in reversed(self.levels):
            while level:
                entry = level.pop()
                if entry.expires_at is not None:
                    now = now or time.monotonic()
                    if entry.expires_at < now:
                        self.broker.dead_letter(self, entry, "expired")
                        continue
                return entry
        return None

    def requeue(self, entries: list[Entry]) -> None:
        """Put delivered entries back at their original positions (expired ones are dropped instead)."""
        now = time.monotonic()
        for entry in entries:
            if not entry.live:
                continue  # settled meanwhile
            if self.deleted:  # its queue went while it was out: it goes too
                self.broker.settle(self, entry)
                continue
            if entry.expires_at is not None and entry.expires_at <= now:
                self.broker.dead_letter(self, entry, "expired")
            else:
                self._level(entry).put_back(entry)
        self.broker.schedule_dispatch(self)

    def expire_head(self, now: float) -> None:
        """Drop the expired entries at the head of each priority level (the broker's tick calls this)."""
        for level in self.levels:
            while level:
                entry = level.head()
                if entry is None or entry.expires_at is None or entry.expires_at > now:
                    break
                level.pop()
                self.broker.dead_letter(self, entry, "expired")

    def purge(self) -> list[Entry]:
        """Remove every ready entry (unacked ones stay with their channels)."""
        entries = []
        for level in self.levels:
            entries.extend(level.clear())
        return entries

    # -- consumers ------------------------------------------------------------------------------------
    def dispatch(self, now: float | None = None) -> None:
        """Deliver ready entries round-robin to consumers with room, at most a budget per call."""
        if not self.consumers:
            return
        for _ in range(DISPATCH_BUDGET):
            consumer = self._next_consumer()
            if consumer is None:
                return
            entry = self.take(now)
            if entry is None:
                return
            consumer.channel.deliver(consumer, entry)
        if self.ready:
            self.broker.schedule_dispatch(self)

    def _next_consumer(self) -> Consumer | None:
        consumers = self.consumers
        for _ in range(len(consumers)):
            consumer = consumers[0]
            consumers.rotate(-1)
            if consumer.channel.can_deliver(consumer):
                return consumer
        return None

    def touch(self) -> None:
        """Renew the ``x-expires`` lease (declare, get, consume)."""
        self.last_used = time.monotonic()

    def idle_expired(self, now: float) -> bool:
        """Whether ``x-expires`` has run out: no consumer and unused for that long."""
        return self.expires is not None and not self.consumers and now - self.last_used > self.expires / 1000
