"""Decoding the methods clients send: pika's codec, checked strictly, with field tables read by our own.

pika's ``spec`` classes decode every method, but they accept trailing bytes, shorten a truncated final
string without complaint and read doubles in tables as integers. So each decoded method is re-encoded and
must have the received length, its names must be UTF-8, and its field table (method arguments, client
properties) is decoded again by :mod:`.tables`. The four hot methods (Publish, Ack, Reject, Nack) are read
with ``struct`` directly: they are most of the traffic.
"""

from __future__ import annotations

import struct
from typing import Any

import pika.exceptions
import pika.spec as spec

from . import tables
from .frames import FRAME_ERROR, NOT_IMPLEMENTED, SYNTAX_ERROR, AMQPError

_IDS = struct.Struct(">HH")
_TAG_BITS = struct.Struct(">QB")

#: The client methods whose field table is the last argument (the table is re-read strictly).
_TABLE_LAST = {spec.Queue.Declare: "arguments", spec.Exchange.Declare: "arguments",
               spec.Queue.Bind: "arguments", spec.Queue.Unbind: "arguments",
               spec.Basic.Consume: "arguments", spec.Exchange.Bind: "arguments",
               spec.Exchange.Unbind: "arguments"}


def method_ids(payload: bytes) -> tuple[int, int]:
    """The class and method id at the front of a method frame's payload."""
    if len(payload) < 4:
        raise AMQPError(FRAME_ERROR, f"cannot decode {payload!r}")
    return _IDS.unpack_from(payload, 0)


def decode(payload: bytes) -> Any:
    """The method in a method frame's payload, as a ``pika.spec`` object with strictly decoded tables."""
    class_id, method_id = method_ids(payload)
    index = class_id << 16 | method_id
    fast = _FAST.get(index)
    if fast is not None:
        try:
            return fast(payload)
        except AMQPError as exc:
            exc.class_id, exc.method_id = class_id, method_id
            raise
        except (struct.error, IndexError, UnicodeDecodeError):
            raise AMQPError(FRAME_ERROR, f"cannot decode {payload[:16]!r}", class_id, method_id)
    cls = spec.methods.get(index)
    if cls is None:
        raise AMQPError(NOT_IMPLEMENTED, f"unknown method {class_id}/{method_id}", class_id, method_id)
    try:
        method = cls().decode(payload, 4)
        _check(method, payload)
    except AMQPError as exc:
        exc.class_id, exc.method_id = class_id, method_id
        raise
    except pika.exceptions.InvalidFieldTypeException:
        raise AMQPError(SYNTAX_ERROR, "field table has an unknown type tag", class_id, method_id)
    except (struct.error, IndexError, KeyError, ValueError, TypeError, AssertionError, AttributeError):
        raise AMQPError(FRAME_ERROR, f"cannot decode {payload[:16]!r}", class_id, method_id)
    return method


def _check(method: Any, payload: bytes) -> None:
    """Re-encode ``method`` and compare lengths; replace its table with the strict decoding."""
    for name, value in vars(method).items():
        if isinstance(value, bytes):
            raise AMQPError(SYNTAX_ERROR, f"{name} is not valid UTF-8")
    table_field = _TABLE_LAST.get(type(method))
    if table_field is not None:
        setattr(method, table_field, {})
        offset = 4 + _encoded_length(method) - 4
        table, expected = tables.decode_table(payload, offset)
        setattr(method, table_field, table)
    else:
        expected = 4 + _encoded_length(method)
    if expected != len(payload):
        raise AMQPError(FRAME_ERROR, f"cannot decode {payload[:16]!r}: {len(payload)} bytes, "
                                     f"arguments take {expected}")


def _encoded_length(method: Any) -> int:
    return sum(len(piece) for piece in method.encode())


def _publish(payload: bytes) -> spec.Basic.Publish:
    offset = 6
    length = payload[offset]
    exchange = payload[offset + 1:offset + 1 + length].decode()
    offset += 1 + length
    length = payload[offset]
    routing_key = payload[offset + 1:offset + 1 + length].decode()
    offset += 1 + length
    bits = payload[offset]
    if offset + 1 != len(payload):
        raise IndexError("publish arguments have the wrong length")
    return spec.Basic.Publish(exchange=exchange, routing_key=routing_key, mandatory=bool(bits & 1),
                              immediate=bool(bits & 2))


def _tag_and_bits(payload: bytes) -> tuple[int, int]:
    if len(payload) != 13:
        raise IndexError("arguments have the wrong length")
    return _TAG_BITS.unpack_from(payload, 4)


def _ack(payload: bytes) -> spec.Basic.Ack:
    tag, bits = _tag_and_bits(payload)
    return spec.Basic.Ack(delivery_tag=tag, multiple=bool(bits & 1))


def _reject(payload: bytes) -> spec.Basic.Reject:
    tag, bits = _tag_and_bits(payload)
    return spec.Basic.Reject(delivery_tag=tag, requeue=bool(bits & 1))


def _nack(payload: bytes) -> spec.Basic.Nack:
    tag, bits = _tag_and_bits(payload)
    return spec.Basic.Nack(delivery_tag=tag, multiple=bool(bits & 1), requeue=bool(bits & 2))


def _start_ok(payload: bytes) -> spec.Connection.StartOk:
    # by hand: pika's decoder turns the response bytes into their repr
    client_properties, offset = tables.decode_table(payload, 4)
    length = payload[offset]
    mechanism = payload[offset + 1:offset + 1 + length].decode()
    offset += 1 + length
    length = struct.unpack_from(">I", payload, offset)[0]
    response = payload[offset + 4:offset + 4 + length]
    offset += 4 + length
    size = payload[offset]
    locale = payload[offset + 1:offset + 1 + size].decode()
    if len(response) != length or offset + 1 + size != len(payload):
        raise IndexError("start-ok arguments have the wrong length")
    method = spec.Connection.StartOk(client_properties, mechanism, "", locale)
    method.response = bytes(response)
    return method


_FAST = {spec.Connection.StartOk.INDEX: _start_ok, spec.Basic.Publish.INDEX: _publish,
         spec.Basic.Ack.INDEX: _ack,
         spec.Basic.Reject.INDEX: _reject, spec.Basic.Nack.INDEX: _nack}
