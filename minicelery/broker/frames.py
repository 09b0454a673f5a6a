"""AMQP 0-9-1 frames: the server's own splitter, frame builders and the protocol's error type.

A server reads a stream that holds many small frames per ``recv``; pika's ``decode_frame`` copies the rest of
the buffer per frame, decodes content properties (lossy for floats) and has no size bound, so the broker
splits frames itself: one ``unpack_from`` per frame on a ``bytearray``, the size checked against
``frame_max`` from the 7-byte header *before* the payload is buffered, the end byte checked.
Method arguments are decoded in :mod:`.methods`; content headers stay raw bytes (:mod:`.content`).
RabbitMQ's counterpart is ``rabbit_reader``/``rabbit_binary_parser``.
"""

from __future__ import annotations

import struct

import pika.frame
import pika.spec

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
METHOD, HEADER, BODY, HEARTBEAT = 1, 2, 3, 8
FRAME_END = 0xCE
FRAME_END_BYTE = b"\xce"
HEARTBEAT_FRAME = b"\x08\x00\x00\x00\x00\x00\x00\xce"

_FRAME_HEADER = struct.Struct(">BHI")

# Reply codes (AMQP 0-9-1 constants, RabbitMQ's texts start with the name).
REPLY_SUCCESS = 200
CONTENT_TOO_LARGE = 311
NO_ROUTE = 312
CONNECTION_FORCED = 320
ACCESS_REFUSED = 403
NOT_FOUND = 404
RESOURCE_LOCKED = 405
PRECONDITION_FAILED = 406
FRAME_ERROR = 501
SYNTAX_ERROR = 502
COMMAND_INVALID = 503
CHANNEL_ERROR = 504
UNEXPECTED_FRAME = 505
RESOURCE_ERROR = 506
NOT_ALLOWED = 530
NOT_IMPLEMENTED = 540
INTERNAL_ERROR = 541

REPLY_NAMES = {
    CONTENT_TOO_LARGE: "CONTENT_TOO_LARGE", NO_ROUTE: "NO_ROUTE", CONNECTION_FORCED: "CONNECTION_FORCED",
    ACCESS_REFUSED: "ACCESS_REFUSED", NOT_FOUND: "NOT_FOUND", RESOURCE_LOCKED: "RESOURCE_LOCKED",
    PRECONDITION_FAILED: "PRECONDITION_FAILED", FRAME_ERROR: "FRAME_ERROR", SYNTAX_ERROR: "SYNTAX_ERROR",
    COMMAND_INVALID: "COMMAND_INVALID", CHANNEL_ERROR: "CHANNEL_ERROR", UNEXPECTED_FRAME: "UNEXPECTED_FRAME",
    RESOURCE_ERROR: "RESOURCE_ERROR", NOT_ALLOWED: "NOT_ALLOWED", NOT_IMPLEMENTED: "NOT_IMPLEMENTED",
    INTERNAL_ERROR: "INTERNAL_ERROR",
}

#: Codes whose error closes the whole connection (AMQP 0-9-1 §1.2 "hard errors"); the rest close a channel.
HARD_ERRORS = frozenset({CONNECTION_FORCED, FRAME_ERROR, SYNTAX_ERROR, COMMAND_INVALID, CHANNEL_ERROR,
                         UNEXPECTED_FRAME, RESOURCE_ERROR, NOT_ALLOWED, NOT_IMPLEMENTED, INTERNAL_ERROR})


class AMQPError(Exception):
    """A protocol error to answer with ``Channel.Close`` or ``Connection.Close`` (never raised to the loop).

    ``text`` is the detail; the reply text sent is RabbitMQ's ``NAME - detail``, cut to the 255 bytes of
    an AMQP short string (a long queue name makes a longer text). ``class_id``/``method_id`` name the
    method that failed (0 when none did).
    """

    def __init__(self, code: int, text: str, class_id: int = 0, method_id: int = 0,
                 connection: bool | None = None) -> None:
        super().__init__(f"{REPLY_NAMES.get(code, str(code))} - {text}")
        self.code, self.class_id, self.method_id = code, class_id, method_id
        self.reply_text = str(self).encode()[:255].decode(errors="ignore")
        self.connection = code in HARD_ERRORS if connection is None else connection


def split(buf: bytearray | memoryview, frame_max: int) -> tuple[list[tuple[int, int, bytes]], int]:
    """Cut the complete frames off the front of ``buf``: ``([(type, channel, payload)], bytes used)``.

    Each payload is copied once, out of ``buf`` (a ``memoryview`` slice copies nothing until ``bytes``).

    Raises ``AMQPError(501)`` for a frame larger than ``frame_max``, a bad end byte or an unknown type;
    the frames before the bad one are returned in the error's ``frames`` attribute so they still count.
    """
    frames: list[tuple[int, int, bytes]] = []
    view = memoryview(buf)
    offset, size = 0, len(buf)
    limit = frame_max - 8
    while size - offset >= 7:
        kind, channel, length = _FRAME_HEADER.unpack_from(buf, offset)
        if length > limit or kind not in (METHOD, HEADER, BODY, HEARTBEAT):
            error = _frame_error(kind, length, limit, bytes(buf[offset + 7:offset + 7 + min(length, 16)]))
            error.frames, error.consumed = frames, offset  # type: ignore[attr-defined]
            raise error
        end = offset + 7 + length
        if end >= size:
            break
        if buf[end] != FRAME_END:
            error = AMQPError(FRAME_ERROR, f"type {kind}, {{invalid_frame_end_marker,{buf[end]}}}")
            error.frames, error.consumed = frames, offset  # type: ignore[attr-defined]
            raise error
        frames.append((kind, channel, bytes(view[offset + 7:end])))
        offset = end + 1
    return frames, offset


def _frame_error(kind: int, length: int, limit: int, start: bytes) -> AMQPError:
    if kind not in (METHOD, HEADER, BODY, HEARTBEAT):
        return AMQPError(FRAME_ERROR, f"type {kind}, all octets = {start!r}: unknown_frame")
    return AMQPError(FRAME_ERROR, f"type {kind}, first 16 octets = {start!r}: "
                                  f"{{frame_too_large,{length},{limit}}}")


def frame(kind: int, channel: int, payload: bytes) -> bytes:
    """One frame: type, channel, size, payload, end byte."""
    return _FRAME_HEADER.pack(kind, channel, len(payload)) + payload + FRAME_END_BYTE


def method_frame(channel: int, method: pika.spec.amqp_object.Method) -> bytes:
    """A method frame encoded with pika's codec (every method the broker sends outside the hot path)."""
    return pika.frame.Method(channel, method).marshal()


_DELIVER_HEAD = struct.Struct(">BHIHH")
_TAG_FLAG = struct.Struct(">QB")


def delivery(channel: int, consumer_tag: bytes, delivery_tag: int, redelivered: bool, exchange: bytes,
             routing_key: bytes, header: bytes, body: bytes, frame_max: int) -> bytes:
    """``Basic.Deliver`` (by hand: 3x faster than pika's marshal) and the content frames, as one ``bytes``.

    The hot path's most frequent output: built in one ``join``, so the content is copied once.
    """
    size = 4 + 1 + len(consumer_tag) + 9 + 1 + len(exchange) + 1 + len(routing_key)
    parts = [_DELIVER_HEAD.pack(METHOD, channel, size, 60, 60), bytes((len(consumer_tag),)), consumer_tag,
             _TAG_FLAG.pack(delivery_tag, redelivered), bytes((len(exchange),)), exchange,
             bytes((len(routing_key),)), routing_key, FRAME_END_BYTE]
    parts += _content_parts(channel, header, body, frame_max)
    return b"".join(parts)


def content_frames(channel: int, header: bytes, body: bytes, frame_max: int) -> bytes:
    """The header frame (the raw payload as received) and the body split into frames of ``frame_max - 8``.

    A zero-length body has no body frame: the message ends at its header (as pika and py-amqp send it).
    """
    return b"".join(_content_parts(channel, header, body, frame_max))


def _content_parts(channel: int, header: bytes, body: bytes, frame_max: int) -> list[bytes]:
    parts = [_FRAME_HEADER.pack(HEADER, channel, len(header)), header, FRAME_END_BYTE]
    step = frame_max - 8
    for start in range(0, len(body), step):
        piece = body[start:start + step]
        parts += (_FRAME_HEADER.pack(BODY, channel, len(piece)), piece, FRAME_END_BYTE)
    return parts
