"""Batched acknowledgements that never acknowledge a message whose fate is not decided.

RabbitMQ's ``basic.ack(multiple=True)`` settles every unacknowledged delivery up to a tag at once — a big
saving when a worker drains thousands of messages, and a trap when an earlier message is still held for
its ETA or still running with ``acks_late``. :class:`AckBook` records each delivery's fate and turns the
decided ones into the fewest safe broker calls: one multiple ack for the decided prefix, single calls for
the rest. Pure bookkeeping, no I/O; the worker sends what :meth:`AckBook.flush` returns.
See https://www.rabbitmq.com/docs/confirms#consumer-acks-multiple-parameter.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["AckBook", "Settle"]

_OPEN, _ACK, _REQUEUE, _DROP = "open", "ack", "requeue", "drop"


@dataclass(frozen=True)
class Settle:
    """One broker call: ``ack`` (maybe ``multiple``) or ``reject`` (maybe ``requeue``) of ``tag``."""

    op: str
    tag: int
    multiple: bool = False
    requeue: bool = False


class AckBook:
    """The deliveries of one channel that are not settled yet, in delivery order."""

    def __init__(self) -> None:
        self._fates: dict[int, str] = {}
        self._decided = 0

    def __len__(self) -> int:
        return len(self._fates)

    def __contains__(self, tag: int) -> bool:
        return tag in self._fates

    def is_open(self, tag: int) -> bool:
        """True while ``tag`` is received and its fate not yet decided."""
        return self._fates.get(tag) == _OPEN

    def decided(self) -> int:
        """How many deliveries are decided and not yet returned by :meth:`flush`."""
        return self._decided

    def received(self, tag: int) -> None:
        """Record a new delivery (tags grow within a channel)."""
        self._fates[tag] = _OPEN

    def ack(self, tag: int) -> None:
        """Decide that ``tag`` is to be acknowledged."""
        self._decide(tag, _ACK)

    def reject(self, tag: int, requeue: bool) -> None:
        """Decide that ``tag`` is to be rejected, going back to the queue when ``requeue``."""
        self._decide(tag, _REQUEUE if requeue else _DROP)

    def _decide(self, tag: int, fate: str) -> None:
        if self._fates.get(tag) != _OPEN:
            raise KeyError(f"delivery {tag} is unknown or already decided")
        self._fates[tag] = fate
        self._decided += 1

    def flush(self) -> list[Settle]:
        """Return the broker calls that settle every decided delivery, and forget those deliveries."""
        calls: list[Settle] = []
        prefix_end = None
        for tag, fate in self._fates.items():
            if fate != _ACK:
                break
            prefix_end = tag
        if prefix_end is not None:
            count = 0
            for tag in list(self._fates):
                del self._fates[tag]
                count += 1
                if tag == prefix_end:
                    break
            calls.append(Settle("ack", prefix_end, multiple=count > 1))
        for tag, fate in list(self._fates.items()):
            if fate == _OPEN:
                continue
            del self._fates[tag]
            if fate == _ACK:
                calls.append(Settle("ack", tag))
            else:
                calls.append(Settle("reject", tag, requeue=fate == _REQUEUE))
        self._decided = 0  # every decided delivery is in calls now
        return calls

    def forget(self) -> int:
        """Drop everything (the channel is gone; the broker requeues what was not settled)."""
        count = len(self._fates)
        self._fates.clear()
        self._decided = 0
        return count
