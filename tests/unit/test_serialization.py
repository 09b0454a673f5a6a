"""The json and msgpack codecs and accept_content."""

from __future__ import annotations

import datetime
import decimal
import uuid

import pytest

from minicelery import serialization
from minicelery.exceptions import (
    ContentDisallowed,
    DecodeError,
    EncodeError,
    ImproperlyConfigured,
)
from minicelery.serialization import (
    accepted,
    check_accepted,
    dumps,
    loads,
)

# -- dumps ----------------------------------------------------------------------------------------------


def test_json_uses_python_default_separators_and_ensure_ascii():
    assert dumps([[2, 3], {"y": "é"}], "json") == ("application/json", "utf-8", b'[[2, 3], {"y": "\\u00e9"}]')


def test_msgpack_content_type_and_bin_type():
    content_type, encoding, body = dumps([b"\x00", "a"], "msgpack")
    assert (content_type, encoding) == ("application/x-msgpack", "binary")
    assert body == b"\x92\xc4\x01\x00\xa1a"  # bin 8 for bytes, fixstr for text: use_bin_type=True


@pytest.mark.parametrize(("value", "wire"), [
    (datetime.datetime(2024, 1, 2, 3, 4, 5), '{"__type__": "datetime", "__value__": "2024-01-02T03:04:05"}'),
    (datetime.datetime(2024, 1, 2, tzinfo=datetime.UTC),
     '{"__type__": "datetime", "__value__": "2024-01-02T00:00:00+00:00"}'),
    (datetime.date(2024, 1, 2), '{"__type__": "date", "__value__": "2024-01-02"}'),
    (datetime.time(3, 4, 5, 6), '{"__type__": "time", "__value__": "03:04:05.000006"}'),
    (decimal.Decimal("1.50"), '{"__type__": "decimal", "__value__": "1.50"}'),
    (uuid.UUID("315fcc66-21fe-4f6a-9e1f-948c46c67d2a"),
     '{"__type__": "uuid", "__value__": {"hex": "315fcc6621fe4f6a9e1f948c46c67d2a", "version": 4}}'),
    (b"abc", '{"__type__": "bytes", "__value__": "abc"}'),
    (b"\xff\x00", '{"__type__": "base64", "__value__": "/wA="}'),
])
def test_json_wraps_types_like_kombu_and_reads_them_back(value, wire):
    assert dumps(value, "json")[2] == wire.encode()
    assert loads(wire.encode(), "application/json", "utf-8", ["json"]) == value


def test_unencodable_value_is_an_encode_error_naming_the_type():
    with pytest.raises(EncodeError, match="^Object of type object is not JSON serializable$") as info:
        dumps({"a": object()}, "json")
    assert isinstance(info.value.__cause__, TypeError)
    with pytest.raises(EncodeError, match="object"):
        dumps([object()], "msgpack")


def test_circular_value_is_an_encode_error():
    loop: list = []
    loop.append(loop)
    with pytest.raises(EncodeError, match="Circular reference"):
        dumps(loop, "json")


@pytest.mark.parametrize("name", ["pickle", "yaml", "xml", ""])
def test_unknown_or_unsupported_serializer_is_improperly_configured(name):
    with pytest.raises(ImproperlyConfigured, match="use json or msgpack") as info:
        dumps([1], name)
    assert repr(name) in str(info.value)


# -- accept ---------------------------------------------------------------------------------------------


def test_accepted_normalises_names_and_keeps_content_types():
    assert accepted(["json", "application/x-msgpack"]) == {"application/json", "application/x-msgpack"}
    assert accepted("msgpack") == {"application/x-msgpack"}


def test_accepted_drops_pickle_and_yaml():
    assert accepted(["pickle", "yaml", "application/x-python-serialize", "json"]) == {"application/json"}


def test_accepted_refuses_an_unknown_name():
    with pytest.raises(ImproperlyConfigured, match="Unknown serializer 'jsno'"):
        accepted(["jsno"])


def test_pickle_is_refused_with_celerys_words():
    text = "Refusing to deserialize untrusted content of type pickle (application/x-python-serialize)"
    with pytest.raises(ContentDisallowed) as info:
        loads(b"\x80\x04K\x01.", "application/x-python-serialize", "binary", ["json"])
    assert str(info.value) == text


def test_pickle_is_refused_even_when_accept_names_it():
    with pytest.raises(ContentDisallowed, match="pickle"):
        loads(b"\x80\x04K\x01.", "application/x-python-serialize", "binary", ["pickle"])
    with pytest.raises(ContentDisallowed, match="pickle"):
        check_accepted("application/x-python-serialize", ["application/x-python-serialize"])


def test_msgpack_is_refused_by_a_json_only_accept():
    with pytest.raises(ContentDisallowed, match=r"^Refusing .* of type msgpack \(application/x-msgpack\)$"):
        check_accepted("application/x-msgpack", ("json",))


def test_an_unknown_content_type_is_named_twice_like_kombu():
    with pytest.raises(ContentDisallowed, match=r"type application/x-foo \(application/x-foo\)$"):
        loads(b"x", "application/x-foo", "utf-8", ["json"])


def test_missing_content_type_is_trusted_data_returned_undecoded():
    assert loads(b'[[], {}, {}]', None, None, ["json"]) == "[[], {}, {}]"
    assert loads(b"\xff", None, "binary", ["json"]) == b"\xff"
    check_accepted(None, ["json"])  # does not raise


# -- loads ----------------------------------------------------------------------------------------------


def test_loads_json_and_msgpack():
    assert loads(b'{"a": [1, null]}', "application/json", "utf-8", ["json"]) == {"a": [1, None]}
    body = dumps({"a": [1, None, b"x"]}, "msgpack")[2]
    assert loads(body, "application/x-msgpack", "binary", ["msgpack"]) == {"a": [1, None, b"x"]}


def test_undecodable_json_is_a_decode_error_carrying_the_reason():
    with pytest.raises(DecodeError, match="Expecting value") as info:
        loads(b"not json", "application/json", "utf-8", ["json"])
    assert isinstance(info.value.__cause__, ValueError)


def test_undecodable_msgpack_and_bad_utf8_are_decode_errors():
    with pytest.raises(DecodeError):
        loads(b"\xc1", "application/x-msgpack", "binary", ["msgpack"])
    with pytest.raises(DecodeError):
        loads(b'"\xff"', "application/json", "utf-8", ["json"])


def test_an_unknown_json_type_wrapper_is_a_decode_error():
    with pytest.raises(DecodeError, match="Unsupported __type__ 'pickle'"):
        loads(b'{"__type__": "pickle", "__value__": "x"}', "application/json", "utf-8", ["json"])


def test_an_object_with_more_keys_than_a_wrapper_is_left_alone():
    wire = b'{"__type__": "date", "__value__": "2024-01-02", "other": 1}'
    assert loads(wire, "application/json", "utf-8", ["json"])["other"] == 1


def test_serialization_does_not_import_msgpack_at_import_time():
    assert "msgpack" not in serialization.__dict__
