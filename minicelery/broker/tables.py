"""A strict AMQP field-table codec for the broker's own use (method arguments, ``x-death`` splicing).

pika's table codec reads doubles as integers and cannot write them, and it must never be patched, so the
broker walks tables itself: every length is checked against the frame, depth and entry counts are bounded,
an unknown type tag is a ``502 SYNTAX_ERROR``. Integer tags all decode to ``int`` (clients disagree on
integer encodings and RabbitMQ compares their values); floats stay floats. :func:`raw_entries` keeps each
entry's bytes so a header table can be edited without re-encoding the values it does not touch.
"""

from __future__ import annotations

import struct
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from .frames import SYNTAX_ERROR, AMQPError

MAX_DEPTH = 32
MAX_ENTRIES = 1000

_FIXED = {  # tag -> (struct, size)
    b"t": (struct.Struct(">B"), 1), b"b": (struct.Struct(">b"), 1), b"B": (struct.Struct(">B"), 1),
    b"U": (struct.Struct(">h"), 2), b"s": (struct.Struct(">h"), 2), b"u": (struct.Struct(">H"), 2),
    b"I": (struct.Struct(">i"), 4), b"i": (struct.Struct(">I"), 4), b"l": (struct.Struct(">q"), 8),
    b"L": (struct.Struct(">q"), 8), b"f": (struct.Struct(">f"), 4), b"d": (struct.Struct(">d"), 8),
    b"T": (struct.Struct(">Q"), 8),
}
_U32 = struct.Struct(">I")


class Timestamp(int):
    """An AMQP timestamp (tag ``T``): seconds since the epoch, kept apart from plain integers."""


def _bad(text: str) -> AMQPError:
    return AMQPError(SYNTAX_ERROR, text)


def decode_table(data: bytes, offset: int, depth: int = 0) -> tuple[dict[str, Any], int]:
    """The table at ``offset`` (its u32 length first) and the offset after it."""
    if depth > MAX_DEPTH:
        raise _bad("field table nested too deeply")
    end = _length(data, offset)
    offset += 4
    table: dict[str, Any] = {}
    while offset < end:
        key_length = data[offset]
        key = data[offset + 1:offset + 1 + key_length]
        offset += 1 + key_length
        if offset >= end:
            raise _bad("field table entry without a value")
        table[key.decode("utf-8", "replace")], offset = decode_value(data, offset, end, depth)
        if len(table) > MAX_ENTRIES:
            raise _bad("field table has too many entries")
    if offset != end:
        raise _bad("field table length does not match its entries")
    return table, end


def _length(data: bytes, offset: int) -> int:
    if offset + 4 > len(data):
        raise _bad("field table truncated")
    end = offset + 4 + _U32.unpack_from(data, offset)[0]
    if end > len(data):
        raise _bad("field table longer than its frame")
    return end


def decode_value(data: bytes, offset: int, end: int, depth: int = 0) -> tuple[Any, int]:
    """One tagged value at ``offset``; it must end by ``end``."""
    tag = data[offset:offset + 1]
    offset += 1
    if tag in _FIXED:
        codec, size = _FIXED[tag]
        if offset + size > end:
            raise _bad(f"field value of type {tag.decode()} truncated")
        value = codec.unpack_from(data, offset)[0]
        value = bool(value) if tag == b"t" else Timestamp(value) if tag == b"T" else value
        return value, offset + size
    if tag in (b"S", b"x"):
        stop = _length(data, offset)
        if stop > end:
            raise _bad("field string longer than its table")
        raw = bytes(data[offset + 4:stop])
        return (raw.decode("utf-8", "surrogateescape") if tag == b"S" else raw), stop
    if tag == b"A":
        stop = _length(data, offset)
        offset += 4
        items = []
        while offset < stop:
            item, offset = decode_value(data, offset, stop, depth + 1)
            items.append(item)
        return items, stop
    if tag == b"F":
        return decode_table(data, offset, depth + 1)
    if tag == b"D":
        if offset + 5 > end:
            raise _bad("decimal truncated")
        places, raw = struct.unpack_from(">Bi", data, offset)
        return Decimal(raw).scaleb(-places), offset + 5
    if tag == b"V":
        return None, offset
    raise _bad(f"unknown field type {tag!r}")


def raw_entries(data: bytes) -> list[tuple[str, bytes]]:
    """The entries of an encoded table (with its u32 length) as ``(key, raw tagged value)`` pairs."""
    end = _length(data, 0)
    offset, entries = 4, []
    while offset < end:
        key_length = data[offset]
        key = data[offset + 1:offset + 1 + key_length].decode("utf-8", "replace")
        start = offset + 1 + key_length
        _, offset = decode_value(data, start, end)
        entries.append((key, bytes(data[start:offset])))
    return entries


def join_entries(entries: list[tuple[str, bytes]]) -> bytes:
    """The inverse of :func:`raw_entries`: an encoded table, length first."""
    payload = b"".join(encode_short(key) + raw for key, raw in entries)
    return _U32.pack(len(payload)) + payload


def encode_short(text: str) -> bytes:
    """A short string: one length byte, then at most 255 bytes of UTF-8."""
    raw = text.encode()[:255]
    return bytes((len(raw),)) + raw


def encode_value(value: Any) -> bytes:
    """A tagged value of a type the broker writes: str, bool, int (as ``l``), Timestamp, list, dict..."""
    if isinstance(value, str):
        raw = value.encode("utf-8", "surrogateescape")
        return b"S" + _U32.pack(len(raw)) + raw
    if isinstance(value, bool):
        return b"t" + bytes((value,))
    if isinstance(value, Timestamp):
        return b"T" + struct.pack(">Q", value)
    if isinstance(value, int):
        return b"l" + struct.pack(">q", value)
    if isinstance(value, float):
        return b"d" + struct.pack(">d", value)
    if isinstance(value, bytes):
        return b"x" + _U32.pack(len(value)) + value
    if isinstance(value, list):
        payload = b"".join(encode_value(item) for item in value)
        return b"A" + _U32.pack(len(payload)) + payload
    if isinstance(value, dict):
        return b"F" + encode_table(value)
    if value is None:
        return b"V"
    raise TypeError(f"cannot encode {type(value).__name__} in a field table")


def encode_table(table: dict[str, Any]) -> bytes:
    """An encoded table (length first) of the values :func:`encode_value` accepts."""
    return join_entries([(key, encode_value(value)) for key, value in table.items()])


def now_timestamp() -> Timestamp:
    """The current time as an AMQP timestamp."""
    return Timestamp(int(datetime.now(UTC).timestamp()))
