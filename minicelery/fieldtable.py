"""AMQP 0-9-1 field tables (message headers), encoded as py-amqp — Celery's client — writes them.

pika's own codec cannot send a float at all, truncates a float it receives to an int, and spends a few
isinstance() checks per value; Celery's ``timelimit`` header may hold floats, and every task message
carries 19 headers that a worker decodes on every delivery. This codec dispatches on the exact type
of the common values (str, None, bool, int, float, list/tuple, dict) and on the kinds py-amqp writes,
and hands anything else to the fallback it is given (pika's own functions, installed by ``amqp/link.py``),
so that the bytes and values for other types stay pika's. Pure Python, no pika import.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

__all__ = ["Codec"]

_KIND_LENGTH = struct.Struct(">cI").pack
_INT = struct.Struct(">ci").pack
_LONG = struct.Struct(">cq").pack
_DOUBLE = struct.Struct(">cd").pack
_UINT = struct.Struct(">I").pack
_UINT_AT = struct.Struct(">I").unpack_from
_INT_AT = struct.Struct(">i").unpack_from
_DECODE = {ord("d"): struct.Struct(">d"), ord("f"): struct.Struct(">f"), ord("l"): struct.Struct(">q")}
_S, _V, _T, _I, _A, _F = b"SVtIAF"  # the kinds Celery's headers use, as byte values
_NAMES_KEPT = 512  # encoded header names remembered (a bound, for apps that invent names per message)


def _text(raw: bytes) -> str | bytes:
    """A string as pika returns it: text when it is UTF-8, else the bytes."""
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return raw


class Codec:
    """Field tables and short strings, encoded and decoded; what it does not handle goes to the fallbacks.

    Use ``encode_value``, ``encode_table``, ``encode_short_string``, ``decode_value`` and ``decode_table``
    in place of pika's functions of the same names (their signatures are pika's).
    """

    def __init__(self, encode_fallback: Callable[[list[bytes], Any], int],
                 decode_fallback: Callable[[bytes, int], tuple[Any, int]],
                 short_string_fallback: Callable[[list[bytes], Any], int] | None = None) -> None:
        self._encode_fallback = encode_fallback
        self._decode_fallback = decode_fallback
        self._short_string_fallback = short_string_fallback
        self._names: dict[str, bytes] = {}

    def encode_value(self, pieces: list[bytes], value: Any) -> int:
        """Append one encoded value to ``pieces``; return its size in bytes."""
        kind = type(value)
        if kind is str:
            data = value.encode()
            pieces += (_KIND_LENGTH(b"S", len(data)), data)
            return 5 + len(data)
        if value is None:
            pieces.append(b"V")
            return 1
        if kind is bool:
            pieces.append(b"t\x01" if value else b"t\x00")
            return 2
        if kind is int:  # py-amqp: a signed 32-bit 'I' when it fits, else a signed 64-bit 'l'
            fits = -0x80000000 <= value <= 0x7FFFFFFF
            pieces.append(_INT(b"I", value) if fits else _LONG(b"l", value))
            return 5 if fits else 9
        if kind is float:  # an AMQP double, as py-amqp sends it
            pieces.append(_DOUBLE(b"d", value))
            return 9
        if kind is list or kind is tuple:
            inner: list[bytes] = []
            for item in value:
                self.encode_value(inner, item)
            data = b"".join(inner)
            pieces += (_KIND_LENGTH(b"A", len(data)), data)
            return 5 + len(data)
        if kind is dict:
            pieces.append(b"F")
            return 1 + self.encode_table(pieces, value)
        return self._encode_fallback(pieces, value)  # bytes, Decimal, datetime, subclasses

    def encode_short_string(self, pieces: list[bytes], value: Any) -> int:
        """Append a short string (a length byte, then UTF-8; basic properties, exchange and queue names);
        return its size. Bytes, and strings over 255 bytes (an error), go to the fallback."""
        if type(value) is str:
            data = value.encode()
            if len(data) <= 255:
                pieces.append(bytes((len(data),)) + data)
                return 1 + len(data)
        if self._short_string_fallback is None:
            raise ValueError(f"not a short string (str of at most 255 UTF-8 bytes): {value!r:.60}")
        return self._short_string_fallback(pieces, value)

    def encode_table(self, pieces: list[bytes], table: dict[str, Any] | None) -> int:
        """Append an encoded table (a 32-bit size, then short-string keys and values); return its size."""
        start = len(pieces)
        pieces.append(b"")  # the size, filled in below
        size = 0
        names = self._names
        for key, value in (table or {}).items():
            name = names.get(key)
            if name is None:
                name = self._name(key)
            if type(value) is str:  # strings and None, most of Celery's headers, inline
                data = value.encode()
                pieces += (name, _KIND_LENGTH(b"S", len(data)), data)
                size += len(name) + 5 + len(data)
            elif value is None:
                pieces += (name, b"V")
                size += len(name) + 1
            else:
                pieces.append(name)
                size += len(name) + self.encode_value(pieces, value)
        pieces[start] = _UINT(size)
        return size + 4

    def _name(self, key: str) -> bytes:
        """A key as a short string (length byte, then UTF-8), remembered: messages repeat their keys."""
        name = key.encode()
        if len(name) > 255:
            raise ValueError(f"AMQP header names are at most 255 bytes: {key[:40]!r}...")
        encoded = bytes((len(name),)) + name
        if len(self._names) < _NAMES_KEPT:
            self._names[key] = encoded
        return encoded

    def decode_table(self, encoded: bytes, offset: int) -> tuple[dict[Any, Any], int]:
        """Decode a table at ``offset`` (a 32-bit size, then short-string keys and values); return it and
        the offset after it. Strings and None, most of Celery's headers, are decoded inline."""
        end = offset + 4 + _UINT_AT(encoded, offset)[0]
        offset += 4
        table: dict[Any, Any] = {}
        while offset < end:
            start = offset + 1
            offset = start + encoded[offset]
            key: Any = encoded[start:offset]
            try:  # _text(), inline here and below: a call per header is a tenth of the time
                key = key.decode()
            except UnicodeDecodeError:
                pass  # kept as bytes, as pika does
            kind = encoded[offset]
            if kind == _S:
                start = offset + 5
                offset = start + _UINT_AT(encoded, offset + 1)[0]
                raw = encoded[start:offset]
                try:
                    table[key] = raw.decode()
                except UnicodeDecodeError:
                    table[key] = raw
            elif kind == _V:
                table[key] = None
                offset += 1
            else:
                table[key], offset = self.decode_value(encoded, offset)
        return table, offset

    def decode_value(self, encoded: bytes, offset: int) -> tuple[Any, int]:
        """Decode one value at ``offset``; return it and the offset after it (floats stay floats)."""
        kind = encoded[offset]
        if kind == _S:
            start = offset + 5
            end = start + _UINT_AT(encoded, offset + 1)[0]
            return _text(encoded[start:end]), end
        if kind == _V:
            return None, offset + 1
        if kind == _T:
            return encoded[offset + 1] != 0, offset + 2
        if kind == _I:
            return _INT_AT(encoded, offset + 1)[0], offset + 5
        if kind == _A:
            offset += 5
            end = offset + _UINT_AT(encoded, offset - 4)[0]
            items = []
            while offset < end:
                item, offset = self.decode_value(encoded, offset)
                items.append(item)
            return items, offset
        if kind == _F:
            return self.decode_table(encoded, offset + 1)
        unpack = _DECODE.get(kind)
        if unpack is not None:
            return unpack.unpack_from(encoded, offset + 1)[0], offset + 1 + unpack.size
        return self._decode_fallback(encoded, offset)
