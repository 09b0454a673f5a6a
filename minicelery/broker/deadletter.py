"""Dead-lettering: the copy of a rejected, expired or overflowed message that goes to a queue's DLX.

The copy keeps the original properties byte for byte except two edits RabbitMQ makes: ``expiration`` is
removed (kept in the ``x-death`` entry as ``original-expiration``) and the ``headers`` table gains
``x-death`` — one entry per (queue, reason), newest first, ``count`` incremented on a repeat — and, the
first time, ``x-first-death-exchange/queue/reason``. The table is edited by splicing raw entries, so a
header holding a double keeps it (pika's codec would turn ``1.5`` into ``1``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from . import content, tables
from .content import Message

if TYPE_CHECKING:  # annotations only
    from .queue import Queue

log = logging.getLogger("minicelery.broker")


def dead_lettered(message: Message, queue: Queue, reason: str,
                  exchange: str) -> tuple[Message, list[dict[str, Any]]]:
    """The message to publish to ``exchange`` for ``message`` leaving ``queue`` because of ``reason``, and
    its ``x-death`` entries (newest first)."""
    found = content.fields(message.header)
    raw_headers = found.get(content.HEADERS_BIT)
    entries = tables.raw_entries(raw_headers) if raw_headers else []
    raw_expiration = found.get(content.EXPIRATION_BIT)
    deaths: list[dict[str, Any]] = []
    for key, raw in entries:
        if key == "x-death":
            value = tables.decode_value(raw, 0, len(raw))[0]
            deaths = [d for d in value if isinstance(d, dict)] if isinstance(value, list) else []
    death = next((d for d in deaths if d.get("queue") == queue.name and d.get("reason") == reason), None)
    if death is not None:
        deaths.remove(death)
        death["count"] = int(death.get("count", 0)) + 1
        death["time"] = tables.now_timestamp()
    else:
        death = {"count": 1, "reason": reason, "queue": queue.name, "time": tables.now_timestamp(),
                 "exchange": message.exchange, "routing-keys": [message.routing_key]}
        if raw_expiration is not None:
            death["original-expiration"] = raw_expiration[1:].decode("utf-8", "replace")
    deaths.insert(0, death)
    kept = [(key, raw) for key, raw in entries if key != "x-death"]
    present = {key for key, _ in kept}
    kept.append(("x-death", tables.encode_value(deaths)))
    for key, value in (("x-first-death-exchange", message.exchange), ("x-first-death-queue", queue.name),
                       ("x-first-death-reason", reason)):
        if key not in present:
            kept.append((key, tables.encode_value(value)))
    header = content.rewrite(message.header, tables.join_entries(kept), drop_expiration=True)
    routing_key = queue.arguments.get("x-dead-letter-routing-key") or message.routing_key
    return Message(exchange, routing_key, header, message.body, persistent=message.persistent,
                   priority=message.priority, expiration=None), deaths


def is_cycle(queue: str, deaths: list[dict[str, Any]]) -> bool:
    """Whether dead-lettering into ``queue`` closes a cycle with no rejection in it (RabbitMQ drops those:
    an expiry loop would otherwise go round for ever)."""
    for death in deaths:  # newest first, back to the last time the message left ``queue``
        if death.get("reason") == "rejected":
            return False
        if death.get("queue") == queue:
            log.warning("message dropped: dead-letter cycle through queue %r", queue)
            return True
    return False
