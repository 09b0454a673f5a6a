"""AMQP 0-9-1 field tables (message headers), encoded as py-amqp — Celery's client — writes them.

pika 1.x cannot encode a float at all (its PR #1705 adds that, unreleased at pika 1.4.4), and Celery's
``timelimit`` header may hold floats. This encoder writes the kinds py-amqp writes — ``S`` strings, ``V``
None, ``t`` booleans, ``I``/``l`` integers, ``d`` doubles, ``A`` arrays, ``F`` tables — and hands any
other value (bytes, Decimal, datetime) to the fallback it is given, pika's own ``encode_value``, so that
those bytes stay pika's. Pure Python, no pika import: ``amqp`` plugs it into its message properties for
minicelery's own messages only; pika itself is left as it ships.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from typing import Any

__all__ = ["Encoder"]

_KIND_LENGTH = struct.Struct(">cI").pack
_INT = struct.Struct(">ci").pack
_LONG = struct.Struct(">cq").pack
_DOUBLE = struct.Struct(">cd").pack


class Encoder:
    """Field tables encoded as py-amqp writes them; other values go to ``fallback(pieces, value)``.

    The fallback has pika's ``encode_value`` signature: it appends to ``pieces`` and returns the size.
    """

    def __init__(self, fallback: Callable[[list[bytes], Any], int]) -> None:
        self._fallback = fallback

    def encode_table(self, table: dict[str, Any] | None) -> bytes:
        """A whole table: a 32-bit size, then short-string keys and their values."""
        pieces: list[bytes] = []
        self._table(pieces, table or {})
        return b"".join(pieces)

    def _table(self, pieces: list[bytes], table: dict[str, Any]) -> int:
        start = len(pieces)
        pieces.append(b"")  # the size, filled in below
        size = 0
        for key, value in table.items():
            if not isinstance(key, str | bytes):  # bytes(3) would be three zero bytes, not a name
                raise ValueError("AMQP header names are str", key)
            name = key.encode() if isinstance(key, str) else key
            if len(name) > 255:
                raise ValueError(f"AMQP header names are at most 255 bytes: {name[:40]!r}...")
            pieces.append(bytes((len(name),)) + name)
            size += 1 + len(name) + self._value(pieces, value)
        pieces[start] = struct.pack(">I", size)
        return size + 4

    def _value(self, pieces: list[bytes], value: Any) -> int:
        """Append one value; return its size in bytes."""
        if isinstance(value, str):
            data = value.encode()
            pieces += (_KIND_LENGTH(b"S", len(data)), data)
            return 5 + len(data)
        if value is None:
            pieces.append(b"V")
            return 1
        if isinstance(value, bool):  # before int: a bool is an int
            pieces.append(b"t\x01" if value else b"t\x00")
            return 2
        if isinstance(value, int):  # py-amqp: a signed 32-bit 'I' when it fits, else a signed 64-bit 'l'
            if not -(1 << 63) <= value < 1 << 63:  # else struct.error, which no caller expects
                raise ValueError("AMQP integers are at most 64 bits", value)
            fits = -0x80000000 <= value <= 0x7FFFFFFF
            pieces.append(_INT(b"I", value) if fits else _LONG(b"l", value))
            return 5 if fits else 9
        if isinstance(value, float):  # an AMQP double, as py-amqp sends it
            if not math.isfinite(value):  # RabbitMQ closes the connection (541) and the message is lost
                raise ValueError("RabbitMQ refuses a non-finite double", value)
            pieces.append(_DOUBLE(b"d", value))
            return 9
        if isinstance(value, list | tuple):
            inner: list[bytes] = []
            size = sum(self._value(inner, item) for item in value)
            pieces += (_KIND_LENGTH(b"A", size), *inner)
            return 5 + size
        if isinstance(value, dict):
            pieces.append(b"F")
            return 1 + self._table(pieces, value)
        return self._fallback(pieces, value)
