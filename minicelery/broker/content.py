"""Messages as the broker keeps them: the content header's raw bytes, the body, and the few peeked fields.

The broker never decodes and re-encodes message properties (pika would turn a header's ``1.5`` into ``1``):
it walks the property list by its lengths to read ``delivery_mode``, ``priority`` and ``expiration`` and
sends the header back byte for byte. The one edit, dead-lettering, splices raw fields (:func:`rewrite`).
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from .frames import PRECONDITION_FAILED, SYNTAX_ERROR, UNEXPECTED_FRAME, AMQPError

_INTEGER = re.compile(r"[+-]?[0-9]+")
_HEAD = struct.Struct(">HHQH")  # class id, weight, body size, property flags
_SHORTSTR, _TABLE, _OCTET, _U64 = "s", "F", "o", "q"

#: The Basic class's properties in wire order: (name, flag bit, kind).
PROPERTIES = (
    ("content_type", 15, _SHORTSTR), ("content_encoding", 14, _SHORTSTR), ("headers", 13, _TABLE),
    ("delivery_mode", 12, _OCTET), ("priority", 11, _OCTET), ("correlation_id", 10, _SHORTSTR),
    ("reply_to", 9, _SHORTSTR), ("expiration", 8, _SHORTSTR), ("message_id", 7, _SHORTSTR),
    ("timestamp", 6, _U64), ("type", 5, _SHORTSTR), ("user_id", 4, _SHORTSTR), ("app_id", 3, _SHORTSTR),
    ("cluster_id", 2, _SHORTSTR),
)
HEADERS_BIT, EXPIRATION_BIT = 13, 8


@dataclass(slots=True)
class Message:
    """One published message: where it was sent, its raw content header payload and its body."""

    exchange: str
    routing_key: str
    header: bytes          # the whole header frame payload, sent back as received
    body: bytes
    persistent: bool = False
    priority: int = 0
    expiration: int | None = None   # per-message TTL in ms (the ``expiration`` property)

    @property
    def size(self) -> int:
        """Bytes held in memory (for the memory limit)."""
        return len(self.header) + len(self.body) + 100


def header_size(payload: bytes) -> int:
    """The body size announced by a content header payload (checks its class and length)."""
    if len(payload) < 14:
        raise AMQPError(SYNTAX_ERROR, "content header truncated")
    class_id, _, body_size, _ = _HEAD.unpack_from(payload, 0)
    if class_id != 60:
        raise AMQPError(UNEXPECTED_FRAME, f"expected content header for class 60, got one for class "
                                          f"{class_id} instead")
    return body_size


def fields(payload: bytes) -> dict[int, bytes]:
    """The raw bytes of each property present, keyed by flag bit (lengths checked against the payload)."""
    flags = _HEAD.unpack_from(payload, 0)[3]
    if flags & 1:
        raise AMQPError(SYNTAX_ERROR, "content header property flags continue past one word")
    offset, end, found = 14, len(payload), {}
    for _name, bit, kind in PROPERTIES:
        if not flags & (1 << bit):
            continue
        if kind == _SHORTSTR:
            size = 1 + payload[offset] if offset < end else 1
        elif kind == _TABLE:
            size = 4 + (struct.unpack_from(">I", payload, offset)[0] if offset + 4 <= end else 0)
        else:
            size = 1 if kind == _OCTET else 8
        if offset + size > end:
            raise AMQPError(SYNTAX_ERROR, "content header property runs past the frame")
        found[bit] = payload[offset:offset + size]
        offset += size
    if offset != end:
        raise AMQPError(SYNTAX_ERROR, "content header has bytes after its properties")
    return found


def parse_expiration(raw: bytes) -> int:
    """``expiration`` as milliseconds; RabbitMQ's 406 texts for anything but a non-negative integer."""
    text = raw.decode("utf-8", "replace")
    number = _INTEGER.match(text)
    if number is None:
        raise AMQPError(PRECONDITION_FAILED, f"invalid expiration '{text}': no_integer")
    if number.end() != len(text):
        raise AMQPError(PRECONDITION_FAILED,
                        f"invalid expiration '{text}': {{leftover_string,\"{text[number.end():]}\"}}")
    value = int(number.group())
    if value < 0:
        raise AMQPError(PRECONDITION_FAILED, f"invalid expiration '{text}': {{value_negative,{value}}}")
    return value


def make_message(exchange: str, routing_key: str, header: bytes, body: bytes) -> Message:
    """A :class:`Message` with the peeked fields the broker routes and stores by."""
    found = fields(header)
    mode, priority, expiration = found.get(12), found.get(11), found.get(EXPIRATION_BIT)
    return Message(exchange, routing_key, header, body, persistent=mode == b"\x02",
                   priority=priority[0] if priority else 0,
                   expiration=parse_expiration(expiration[1:]) if expiration is not None else None)


def headers_raw(header: bytes) -> bytes | None:
    """The raw ``headers`` table (length first) of a header payload, if it has one."""
    return fields(header).get(HEADERS_BIT)


def rewrite(header: bytes, headers: bytes, drop_expiration: bool) -> bytes:
    """The header payload with ``headers`` replaced (raw, length first) and ``expiration`` maybe removed.

    Every other property keeps its bytes; only dead-lettering edits a message.
    """
    class_id, weight, body_size, flags = _HEAD.unpack_from(header, 0)
    found = fields(header)
    found[HEADERS_BIT] = headers
    flags |= 1 << HEADERS_BIT
    if drop_expiration and EXPIRATION_BIT in found:
        del found[EXPIRATION_BIT]
        flags &= ~(1 << EXPIRATION_BIT)
    props = b"".join(found[bit] for _name, bit, _kind in PROPERTIES if bit in found)
    return _HEAD.pack(class_id, weight, body_size, flags) + props
