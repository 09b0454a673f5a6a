"""Start-up: replay the journal's segments and rebuild the durable exchanges, queues and messages.

A record that is incomplete, or whose CRC fails, at the very end of the last segment is a torn write (the
broker died mid-``write``): the segment is truncated there and the truncation logged. A bad record anywhere
else is damage the broker cannot explain: it refuses to start, naming the segment and the offset.
Entries are rebuilt in entry-id order (publish order); one with a ``D`` record comes back with
``redelivered=True``.
"""

from __future__ import annotations

import logging
import os
import struct
import time
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .content import make_message
from .exchange import Exchange
from .queue import Entry, Queue

if TYPE_CHECKING:  # annotations only
    from .vhost import VirtualHost

log = logging.getLogger("minicelery.broker")

_RECORD = struct.Struct(">II")
_P_HEAD = struct.Struct(">QQI")
_ID = struct.Struct(">Q")


class StoreError(Exception):
    """The data directory cannot be used: locked by another broker, or damaged (the text says where)."""


@dataclass
class Recovered:
    """One live ``P`` record read back from the journal."""

    queue: str
    exchange: str
    routing_key: str
    expires_ms: int
    header: bytes
    body: bytes
    segment_index: int
    delivered: bool = False


def replay_segments(paths: list[str], repair: bool = False) -> tuple[dict[int, Recovered], int]:
    """Read every segment in order: the live entries by id (torn tail truncated) and the highest id seen.

    With ``repair``, a damaged segment is cut at the damage instead (what followed it there is lost).
    """
    live: dict[int, Recovered] = {}
    highest = 0
    for index, path in enumerate(paths):
        with open(path, "rb") as file:
            data = file.read()
        offset = 0
        while offset < len(data):
            bad = _bad_record(data, offset)
            if bad is not None:
                last = index == len(paths) - 1
                size = _RECORD.unpack_from(data, offset)[0] if offset + 8 <= len(data) else 0
                end_of_record = offset + 8 + size
                if last and end_of_record >= len(data):
                    log.warning("journal %s: torn record at offset %d (%s): recovered up to offset %d, "
                                "the rest truncated", path, offset, bad, offset)
                    os.truncate(path, offset)
                    break
                if repair:
                    log.error("journal %s: damaged at offset %d (%s): --repair cuts the segment there; the "
                              "%d bytes after it are lost", path, offset, bad, len(data) - offset)
                    os.truncate(path, offset)
                    break
                raise StoreError(f"journal segment {path} is damaged at offset {offset} ({bad}); the broker "
                                 "will not guess: restore the directory from a backup, or start once with "
                                 "--repair to cut the segment there (losing what follows in it)")
            length = _RECORD.unpack_from(data, offset)[0]
            highest = max(highest, _apply(live, data[offset + 8:offset + 8 + length], index))
            offset += 8 + length
    return live, highest


def _bad_record(data: bytes, offset: int) -> str | None:
    if offset + 8 > len(data):
        return "incomplete record header"
    length, crc = _RECORD.unpack_from(data, offset)
    payload = data[offset + 8:offset + 8 + length]
    if len(payload) < length:
        return "incomplete record"
    if zlib.crc32(payload) != crc:
        return "checksum mismatch"
    if not payload or payload[:1] not in (b"P", b"S", b"D") or (payload[:1] != b"P" and length != 9):
        return "unknown record"
    return None


def _apply(live: dict[int, Recovered], payload: bytes, index: int) -> int:
    kind = payload[:1]
    if kind == b"P":
        entry_id, expires, header_length = _P_HEAD.unpack_from(payload, 1)
        offset = 1 + _P_HEAD.size
        names = []
        for _ in range(3):
            size = struct.unpack_from(">H", payload, offset)[0]
            names.append(payload[offset + 2:offset + 2 + size].decode())
            offset += 2 + size
        header = payload[offset:offset + header_length]
        body = payload[offset + header_length:]
        previous = live.get(entry_id)
        live[entry_id] = Recovered(names[0], names[1], names[2], expires, header, body, index,
                                   delivered=previous.delivered if previous else False)
    else:
        entry_id = _ID.unpack_from(payload, 1)[0]
        if kind == b"S":
            live.pop(entry_id, None)
        elif entry_id in live:
            live[entry_id].delivered = True
    return entry_id


def restore(vhost: VirtualHost, definitions: dict[str, Any],
            replayed: tuple[dict[int, Recovered], int]) -> dict[int, tuple[str, Entry, int]]:
    """Declare the durable definitions in ``vhost`` and put the live entries back in their queues.

    Returns ``{entry id: (queue name, entry, segment index)}`` for the journal's bookkeeping.
    """
    for spec in definitions.get("exchanges", []):
        vhost.exchanges[spec["name"]] = Exchange(spec["name"], spec["type"], durable=True,
                                                 auto_delete=spec.get("auto_delete", False),
                                                 internal=spec.get("internal", False),
                                                 arguments=spec.get("arguments", {}))
    for spec in definitions.get("queues", []):
        vhost.queues[spec["name"]] = Queue(vhost, spec["name"], durable=True, auto_delete=spec["auto_delete"],
                                           arguments=spec.get("arguments", {}))
    for spec in definitions.get("bindings", []):
        exchange = vhost.exchanges.get(spec["exchange"])
        if exchange is not None and spec["queue"] in vhost.queues:
            exchange.bind(spec["queue"], spec["routing_key"], spec.get("arguments", {}))
    recovered, highest = replayed
    live: dict[int, tuple[str, Entry, int]] = {}
    now_wall, now = time.time() * 1000, time.monotonic()
    for entry_id in sorted(recovered):
        record = recovered[entry_id]
        queue = vhost.queues.get(record.queue)
        if queue is None:
            continue  # its queue was deleted (the S records went with it) or is no longer durable
        message = make_message(record.exchange, record.routing_key, record.header, record.body)
        expires_at = None if not record.expires_ms else now + (record.expires_ms - now_wall) / 1000
        entry = Entry(entry_id, message, expires_at, persisted=True)
        entry.redelivered = record.delivered
        queue.levels[min(message.priority, queue.max_priority)].fresh.append(entry)
        vhost.memory += message.size
        live[entry_id] = (record.queue, entry, record.segment_index)
    vhost.next_id = highest + 1
    return live
