"""The json and msgpack codecs, accept_content, exceptions as dicts, and saferepr."""

from __future__ import annotations

import builtins
import datetime
import decimal
import sys
import uuid

import pytest

from minicelery import exceptions, serialization
from minicelery.exceptions import (
    ContentDisallowed,
    DecodeError,
    EncodeError,
    ImproperlyConfigured,
    NotRegistered,
    SecurityError,
    TaskRevokedError,
    WorkerLostError,
)
from minicelery.serialization import (
    accepted,
    check_accepted,
    dumps,
    exception_to_meta,
    loads,
    meta_to_exception,
    saferepr,
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
    (datetime.datetime(2024, 1, 2, tzinfo=datetime.timezone.utc),
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


# -- exceptions as dicts --------------------------------------------------------------------------------


class OuterError(Exception):
    class Inner(Exception):
        pass


class NeedsTwo(Exception):
    def __init__(self, a, b):
        super().__init__(f"{a}-{b}")


def test_builtin_exception_round_trip():
    meta = exception_to_meta(ValueError("bad thing"))
    assert meta == {"exc_type": "ValueError", "exc_message": ["bad thing"], "exc_module": "builtins"}
    rebuilt = meta_to_exception(meta)
    assert type(rebuilt) is ValueError and rebuilt.args == ("bad thing",)


@pytest.mark.parametrize(("exc", "module"), [
    (NotRegistered("proj.nope"), "celery.exceptions"),
    (TaskRevokedError("expired"), "celery.exceptions"),
    (WorkerLostError("Worker exited prematurely: exitcode 1 Job: 0."), "billiard.exceptions"),
    (ContentDisallowed("no"), "kombu.exceptions"),
])
def test_our_exceptions_travel_under_celerys_module_names_and_come_back_as_ours(exc, module):
    meta = exception_to_meta(exc)
    assert meta["exc_module"] == module and meta["exc_type"] == type(exc).__name__
    rebuilt = meta_to_exception(meta)
    assert type(rebuilt) is type(exc) and rebuilt.args == exc.args


def test_not_registered_from_celery_repr():
    exc = meta_to_exception({"exc_type": "NotRegistered", "exc_message": ["proj.nope"],
                             "exc_module": "celery.exceptions"})
    assert repr(exc) == "Task of kind 'proj.nope' never registered, please make sure it's imported."


def test_celery_timeout_error_is_ours_not_the_builtin():
    meta = {"exc_type": "TimeoutError", "exc_message": [], "exc_module": "celery.exceptions"}
    exc = meta_to_exception(meta)
    assert type(exc) is exceptions.TimeoutError and not isinstance(exc, builtins.TimeoutError)


def test_a_class_in_an_imported_module_is_found_including_nested_ones():
    meta = exception_to_meta(OuterError.Inner("x"))
    assert meta["exc_type"] == "OuterError.Inner" and meta["exc_module"] == __name__
    assert type(meta_to_exception(meta)) is OuterError.Inner


def test_unknown_module_gives_a_stand_in_class_keeping_name_module_and_message():
    exc = meta_to_exception({"exc_type": "WeirdError", "exc_message": ["a", 1], "exc_module": "proj.nowhere"})
    assert type(exc).__name__ == "WeirdError" and type(exc).__module__ == "proj.nowhere"
    assert isinstance(exc, Exception) and exc.args == ("a", 1) and repr(exc) == "WeirdError('a', 1)"
    again = meta_to_exception({"exc_type": "WeirdError", "exc_message": [], "exc_module": "proj.nowhere"})
    assert type(again) is type(exc)


def test_rebuilding_never_imports_the_module():
    assert "antigravity" not in sys.modules
    exc = meta_to_exception({"exc_type": "Fly", "exc_message": ["up"], "exc_module": "antigravity"})
    assert "antigravity" not in sys.modules and type(exc).__name__ == "Fly"


def test_something_that_is_not_an_exception_class_is_a_security_error():
    with pytest.raises(SecurityError) as info:
        meta_to_exception({"exc_type": "system", "exc_message": ["ls"], "exc_module": "os"})
    assert str(info.value) == "Expected an exception class, got os.system with payload ['ls']"


def test_a_constructor_that_refuses_the_args_falls_back_to_exception():
    exc = meta_to_exception({"exc_type": "NeedsTwo", "exc_message": ["only-one"], "exc_module": __name__})
    assert type(exc) is Exception and str(exc) == "NeedsTwo(['only-one'])"


def test_a_message_that_is_not_a_list_is_passed_whole():
    meta = {"exc_type": "KeyError", "exc_message": "k", "exc_module": "builtins"}
    assert meta_to_exception(meta).args == ("k",)


def test_missing_exc_type_is_a_value_error():
    with pytest.raises(ValueError, match="exc_type"):
        meta_to_exception({"exc_message": []})


def test_unencodable_arguments_become_their_repr_and_datetimes_are_kept():
    when = datetime.datetime(2024, 1, 2)
    meta = exception_to_meta(ValueError(object(), when, 42))
    assert meta["exc_message"][0].startswith("<object object at 0x")
    assert meta["exc_message"][1:] == [when, 42]


def test_msgpack_results_repr_what_msgpack_cannot_encode():
    when = datetime.datetime(2024, 1, 2)
    assert exception_to_meta(ValueError(when), "msgpack")["exc_message"] == [repr(when)]


# -- saferepr -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "text"), [
    ((2, 3), "(2, 3)"),
    ((1,), "(1,)"),
    ((), "()"),
    ({"x": 1, "y": 2}, "{'x': 1, 'y': 2}"),
    ({"y": "é"}, "{'y': 'é'}"),
    (("it's",), "('it\\'s',)"),
    (("a\nb",), "('a\nb',)"),  # Celery does not escape control characters
    ((b"ab", b"\xff"), "(b'ab', b'ff')"),
    ((True, None, 1.5, decimal.Decimal("2")), "(True, None, 1.5, Decimal('2'))"),
    (({1}, set(), frozenset({2}), frozenset()), "({1}, set(), frozenset({2}), frozenset())"),
    (([[[1]]],), "([[[...]]],)"),
    ({"a": {"b": {"c": {"d": 1}}}}, "{'a': {'b': {'c': {...}}}}"),
    ({(1, 2): [3]}, "{(1, 2): [3]}"),
])
def test_saferepr_matches_celery(value, text):
    assert saferepr(value) == text


def test_saferepr_guards_recursion():
    loop: list = [1]
    loop.append(loop)
    assert saferepr([loop]).startswith("[[1, <Recursion on list with id=")


def test_saferepr_survives_a_failing_repr():
    class Broken:
        def __repr__(self):
            raise RuntimeError("no")

    assert saferepr((Broken(),)).startswith("(<Unrepresentable <class ")


def test_saferepr_cuts_at_maxlen():
    text = saferepr(tuple(range(1000)), 20)
    assert text == "(0, 1, 2, 3, 4, 5, 6..."


def test_serialization_does_not_import_msgpack_at_import_time():
    assert "msgpack" not in serialization.__dict__
