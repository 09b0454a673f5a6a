"""Exceptions as values: ``protocol.exception_to_meta`` and ``protocol.meta_to_exception``."""

from __future__ import annotations

import builtins
import datetime
import sys

import pytest

from minicelery import exceptions
from minicelery.exceptions import (
    ContentDisallowed,
    NotRegistered,
    SecurityError,
    TaskRevokedError,
    WorkerLostError,
)
from minicelery.protocol import exception_to_meta, meta_to_exception


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


