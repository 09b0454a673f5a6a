"""The AMQP field-table codec: what it encodes decodes to the same headers, and it reads pika's bytes as
pika itself does (a pristine copy of ``pika.data``, loaded apart from the one minicelery patches)."""

from __future__ import annotations

import importlib.util
import math

import pika.data
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minicelery.amqp import link  # installs the codec into pika.data
from minicelery.fieldtable import Codec

_spec = importlib.util.spec_from_file_location("pristine_pika_data", pika.data.__file__)
assert _spec is not None and _spec.loader is not None
pristine = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pristine)

codec = Codec(pristine.encode_value, pristine.decode_value, pristine.encode_short_string)

names = st.text(max_size=12).filter(lambda name: len(name.encode()) <= 255)
int64 = st.integers(-(2**63), 2**63 - 1)
scalars = st.none() | st.booleans() | int64 | st.text(max_size=20)
floats = st.floats(allow_nan=False)


def tables(scalar: st.SearchStrategy) -> st.SearchStrategy:
    values = st.recursive(scalar, lambda inner: st.lists(inner, max_size=3)
                          | st.dictionaries(names, inner, max_size=3), max_leaves=8)
    return st.dictionaries(names, values, max_size=6)


def encode(table: dict, encoder: Codec | object = codec) -> bytes:
    pieces: list[bytes] = []
    encoder.encode_table(pieces, table)  # type: ignore[attr-defined]
    return b"".join(pieces)


def same(a: object, b: object) -> bool:
    """Equal, with floats compared bit-for-bit in spirit (-0.0 and 0.0 apart) and lists for tuples."""
    if isinstance(a, float) and isinstance(b, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


@given(tables(scalars | floats), st.binary(max_size=4))
def test_what_we_encode_decodes_to_the_same_table(table, prefix):
    data = prefix + encode(table)
    decoded, end = codec.decode_table(data, len(prefix))
    assert end == len(data)
    assert same(decoded, table)


@given(tables(scalars))
def test_we_decode_pikas_bytes_as_pika_does(table):
    data = encode(table, pristine)
    assert codec.decode_table(data, 0) == pristine.decode_table(data, 0)


@given(tables(scalars))
def test_pika_decodes_our_bytes_as_we_meant_them(table):
    # Floats aside (pika truncates them, hence our codec), pika reads what we write.
    assert pristine.decode_table(encode(table), 0)[0] == codec.decode_table(encode(table), 0)[0]


@given(st.binary(max_size=40).filter(lambda raw: not _is_utf8(raw)))
def test_strings_that_are_not_utf8_stay_bytes_as_in_pika(raw):
    table = {"k": raw}
    data = encode(table, pristine)  # pika writes bytes as a long string
    assert codec.decode_table(data, 0) == pristine.decode_table(data, 0) == ({"k": raw}, len(data))


def test_the_codec_is_what_pika_uses_after_import():
    installed = link._CODEC  # noqa: SLF001
    assert pika.data.encode_short_string == installed.encode_short_string
    assert (pika.data.encode_table, pika.data.encode_value) == (installed.encode_table, installed.encode_value)
    assert (pika.data.decode_table, pika.data.decode_value) == (installed.decode_table, installed.decode_value)


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode()
    except UnicodeDecodeError:
        return False
    return True


@given(st.text(min_size=1, max_size=4), st.integers(256, 300))
def test_a_header_name_longer_than_255_bytes_is_refused_every_time(stem, size):
    fresh = Codec(pristine.encode_value, pristine.decode_value)
    name = (stem * size)[:size].ljust(size, "x")
    for _ in range(2):  # refused again: a bad name is never remembered
        with pytest.raises(ValueError, match="at most 255 bytes"):
            encode({name: 1}, fresh)


@given(st.text(max_size=300) | st.binary(max_size=300))
def test_short_strings_are_pikas_bytes_and_pikas_errors(value):
    ours: list[bytes] = []
    theirs: list[bytes] = []
    try:
        expected = pristine.encode_short_string(theirs, value)
    except Exception as exc:  # noqa: BLE001 - whatever pika raises, we raise too
        with pytest.raises(type(exc)):
            codec.encode_short_string(ours, value)
        return
    assert codec.encode_short_string(ours, value) == expected
    assert b"".join(ours) == b"".join(theirs)
