"""The AMQP field-table encoder (message headers): for every table pika can encode it writes pika's own
bytes; floats, which pika cannot encode, go out as AMQP doubles that read back bit-exactly; and pika's
decoder reads our bytes as it reads its own (a double as pika reads one: truncated to an int). The same
holds for the table in its place, inside ``amqp.wire.Properties``.

The decoder for doubles lives here, written after py-amqp's reading of the kinds we write, so the float
check does not trust any codec of ours.
"""

from __future__ import annotations

import datetime
import decimal
import math
import struct
from typing import Any

import pika.data
import pika.exceptions
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minicelery.amqp.wire import Properties
from minicelery.fieldtable import Encoder

encoder = Encoder(pika.data.encode_value)

names = st.text(max_size=12).filter(lambda name: len(name.encode()) <= 255)
int64 = st.integers(-(2**63), 2**63 - 1)
finite = st.floats(allow_nan=False, allow_infinity=False)
# What pika's encode_value takes besides the kinds we write ourselves: bytes, Decimal, aware datetimes.
pika_only = (st.binary(max_size=10)
             | st.decimals(allow_nan=False, allow_infinity=False, places=3,
                           min_value=decimal.Decimal("-2147483.648"), max_value=decimal.Decimal("2147483.647"))
             | st.datetimes(min_value=datetime.datetime(1970, 1, 2), timezones=st.just(datetime.UTC)))
scalars = st.none() | st.booleans() | int64 | st.text(max_size=20)


def tables(scalar: st.SearchStrategy[Any], sequences: Any = st.lists,
           keys: st.SearchStrategy[Any] = names) -> st.SearchStrategy[dict[Any, Any]]:
    values = st.recursive(scalar, lambda inner: sequences(inner, max_size=3)
                          | st.dictionaries(keys, inner, max_size=3), max_leaves=8)
    return st.dictionaries(keys, values, max_size=6)


def pika_bytes(table: dict[Any, Any]) -> bytes:
    pieces: list[bytes] = []
    pika.data.encode_table(pieces, table)
    return b"".join(pieces)


def lists_or_tuples(inner: st.SearchStrategy[Any], max_size: int) -> st.SearchStrategy[Any]:
    return st.lists(inner, max_size=max_size) | st.lists(inner, max_size=max_size).map(tuple)


# -- a test-side reader of the kinds the encoder writes (py-amqp's reading) -----------------------------------

def read_table(data: bytes, offset: int) -> tuple[dict[str, Any], int]:
    (size,) = struct.unpack_from(">I", data, offset)
    offset += 4
    end, table = offset + size, {}
    while offset < end:
        length = data[offset]
        key = data[offset + 1:offset + 1 + length].decode()
        table[key], offset = read_value(data, offset + 1 + length)
    assert offset == end, "a table's size does not match its content"
    return table, offset


def read_value(data: bytes, offset: int) -> tuple[Any, int]:
    kind, offset = data[offset:offset + 1], offset + 1
    if kind == b"S":
        (length,) = struct.unpack_from(">I", data, offset)
        return data[offset + 4:offset + 4 + length].decode(), offset + 4 + length
    if kind == b"V":
        return None, offset
    if kind == b"t":
        return bool(data[offset]), offset + 1
    if kind == b"I":
        return struct.unpack_from(">i", data, offset)[0], offset + 4
    if kind == b"l":
        return struct.unpack_from(">q", data, offset)[0], offset + 8
    if kind == b"d":
        return struct.unpack_from(">d", data, offset)[0], offset + 8
    if kind == b"F":
        return read_table(data, offset)
    if kind == b"A":
        (size,) = struct.unpack_from(">I", data, offset)
        offset += 4
        end, items = offset + size, []
        while offset < end:
            item, offset = read_value(data, offset)
            items.append(item)
        return items, offset
    raise AssertionError(f"unexpected kind {kind!r}")


def same_bits(a: Any, b: Any) -> bool:
    """Equal, floats bit for bit (-0.0 apart from 0.0), tuples as the lists they travel as."""
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, float) and isinstance(b, float) and struct.pack(">d", a) == struct.pack(">d", b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_bits(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same_bits(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def as_pika_reads(value: Any) -> Any:
    """``value`` as pika's decoder returns it: doubles truncated to an int, tuples as lists."""
    if isinstance(value, float):
        return int(value)
    if isinstance(value, dict):
        return {k: as_pika_reads(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [as_pika_reads(v) for v in value]
    return value


# -- the properties ----------------------------------------------------------------------------------------------

@given(tables(scalars | pika_only, keys=names | st.binary(max_size=8)))
def test_without_floats_the_bytes_are_pikas_own(table):
    assert encoder.encode_table(table) == pika_bytes(table)


@given(finite)
def test_a_float_is_an_amqp_double(value):
    data = encoder.encode_table({"f": value})
    assert data == struct.pack(">I", 11) + b"\x01f" + b"d" + struct.pack(">d", value)


@given(tables(scalars | finite, sequences=lists_or_tuples))
def test_floats_read_back_bit_exactly(table):
    data = encoder.encode_table(table)
    decoded, end = read_table(data, 0)
    assert end == len(data)
    assert same_bits(decoded, table)


@given(tables(scalars | finite, sequences=lists_or_tuples))
def test_pika_reads_our_bytes_as_we_wrote_them_save_for_doubles(table):
    data = encoder.encode_table(table)
    decoded, end = pika.data.decode_table(data, 0)
    assert end == len(data)
    assert decoded == as_pika_reads(table)


# Doubles whose truncation pika can encode again (a 64-bit int), so that its own bytes can be compared.
moderate = st.floats(min_value=-(2.0**62), max_value=2.0**62)


@given(tables(scalars | moderate | pika_only, sequences=lists_or_tuples))
def test_pika_reads_our_bytes_as_it_reads_its_own(table):
    ours = pika.data.decode_table(encoder.encode_table(table), 0)
    # pika's own bytes for the same table, with each double replaced by what pika reads it as
    theirs = pika.data.decode_table(pika_bytes(as_pika_reads(table)), 0)
    assert ours[0] == theirs[0]


@given(st.one_of(st.sampled_from([math.inf, -math.inf, math.nan]),
                 st.integers(min_value=2**63) | st.integers(max_value=-(2**63) - 1)))
def test_values_that_cannot_travel_are_refused_every_time(value):
    for _ in range(2):  # refused again: nothing is remembered
        with pytest.raises(ValueError):
            encoder.encode_table({"k": [value]})


@given(st.integers() | st.none() | st.tuples(st.integers()))
def test_header_names_that_are_not_text_are_refused(key):
    with pytest.raises(ValueError, match="names are str"):
        encoder.encode_table({key: 1})


@given(st.text(min_size=1, max_size=4), st.integers(256, 300))
def test_a_header_name_longer_than_255_bytes_is_refused_every_time(stem, size):
    name = (stem * size)[:size].ljust(size, "x")
    for _ in range(2):
        with pytest.raises(ValueError, match="at most 255 bytes"):
            encoder.encode_table({name: 1})


@given(st.sets(st.integers(), max_size=2) | st.builds(object) | st.complex_numbers())
def test_other_values_get_pikas_own_error(value):
    with pytest.raises(pika.exceptions.UnsupportedAMQPFieldException):
        pika_bytes({"k": value})
    with pytest.raises(pika.exceptions.UnsupportedAMQPFieldException):
        encoder.encode_table({"k": value})



# -- the table in its place: minicelery's message properties ---------------------------------------------------

short = st.none() | st.text(max_size=10)
basic_properties = st.fixed_dictionaries({}, optional={
    "content_type": st.text(max_size=20), "content_encoding": st.text(max_size=10),
    "delivery_mode": st.sampled_from([1, 2]), "priority": st.integers(0, 9), "correlation_id": short,
    "reply_to": short, "expiration": st.integers(0, 10**6).map(str), "message_id": short, "type": short,
    "app_id": short})


@given(basic_properties, st.none() | tables(scalars))
def test_properties_without_floats_encode_as_pikas_own(properties, headers):
    ours = b"".join(Properties(headers=headers, **properties).encode())
    assert ours == b"".join(pika.BasicProperties(headers=headers, **properties).encode())


@given(basic_properties, tables(scalars | finite, sequences=lists_or_tuples))
def test_pika_decodes_our_properties_with_the_table_in_its_place(properties, headers):
    data = b"".join(Properties(headers=headers, **properties).encode())
    decoded = pika.BasicProperties()
    decoded.decode(data)
    assert decoded.headers == as_pika_reads(headers)
    for name, value in properties.items():
        assert getattr(decoded, name) == value, name
