"""The protocol-v2 task message, reading it back, and the result message."""

from __future__ import annotations

import dataclasses
import datetime
import doctest
import json
import logging
import re
from pathlib import Path

import pytest

from minicelery import protocol
from minicelery.exceptions import ContentDisallowed, DecodeError, InvalidTaskError
from minicelery.message import SendOptions, TaskMessage
from minicelery.protocol import (
    decode_body,
    meta_to_exception,
    parse_headers,
    parse_iso,
    result_meta,
)

UTC = datetime.UTC
NOW = datetime.datetime(2026, 11, 24, 0, 20, 41, 469234, tzinfo=UTC)
HEADER_KEYS = ["lang", "task", "id", "shadow", "eta", "expires", "group", "group_index", "retries",
               "timelimit", "root_id", "parent_id", "argsrepr", "kwargsrepr", "origin", "ignore_result",
               "replaced_task_nesting", "stamped_headers", "stamps"]
EMBED = b'{"callbacks": null, "errbacks": null, "chain": null, "chord": null}'

# A real message from Celery 5.7 (`add.apply_async((2, 3))`), as read back from RabbitMQ.
CELERY_HEADERS = {
    "lang": "py", "task": "celery_tasks.add", "id": "315fcc66-21fe-4f6a-9e1f-948c46c67d2a", "shadow": None,
    "eta": None, "expires": None, "group": None, "group_index": None, "retries": 0, "timelimit": [None, None],
    "root_id": "315fcc66-21fe-4f6a-9e1f-948c46c67d2a", "parent_id": None, "argsrepr": "(2, 3)",
    "kwargsrepr": "{}", "origin": "gen8797@vm", "ignore_result": False, "replaced_task_nesting": 0,
    "stamped_headers": None, "stamps": {},
}
CELERY_BODY = b'[[2, 3], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]'


def add_message(now: datetime.datetime | None = None, **options) -> TaskMessage:
    options = SendOptions(task_id="315fcc66-21fe-4f6a-9e1f-948c46c67d2a", origin="gen8797@vm", **options)
    return TaskMessage.create("celery_tasks.add", (2, 3), options=options, now=now)


# -- building -------------------------------------------------------------------------------------------


def test_same_headers_and_body_bytes_as_celery():
    envelope = add_message(reply_to="af28f45d-bbce-39f6-b7a2-7ac9b9a9c957").encode("json")
    assert list(envelope.properties["headers"].items()) == list(CELERY_HEADERS.items())
    assert envelope.body == CELERY_BODY


def test_properties_of_a_plain_task():
    properties = add_message(reply_to="reply-q").encode().properties
    headers = properties.pop("headers")
    assert properties == {"correlation_id": headers["id"], "reply_to": "reply-q", "delivery_mode": 2,
                          "content_type": "application/json", "content_encoding": "utf-8"}


def test_defaults_make_a_fresh_id_root_id_and_origin():
    message = TaskMessage.create("proj.add", (2, 3))
    headers = message.headers()
    assert list(headers) == HEADER_KEYS
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", headers["id"])
    assert headers["root_id"] == headers["id"] == message.properties()["correlation_id"]
    assert re.fullmatch(r"gen\d+@.+", headers["origin"])
    assert TaskMessage.create("proj.add").id != message.id


def test_extra_headers_come_after_celerys_and_may_override():
    headers = add_message(headers={"custom": "h", "retries": 5}).headers()
    assert list(headers) == [*HEADER_KEYS, "custom"]
    assert headers["custom"] == "h" and headers["retries"] == 5


def test_kwargs_body_and_reprs():
    message = TaskMessage.create("proj.add", kwargs={"x": 1, "y": 2})
    assert (message.argsrepr, message.kwargsrepr) == ("()", "{'x': 1, 'y': 2}")
    assert message.encode().body == b'[[], {"x": 1, "y": 2}, ' + EMBED + b"]"


def test_non_ascii_is_escaped_in_the_body_but_not_in_the_repr():
    message = TaskMessage.create("proj.f", kwargs={"y": "é"})
    assert message.kwargsrepr == "{'y': 'é'}"
    assert message.encode().body.startswith(b'[[], {"y": "\\u00e9"}')


def test_list_args_are_reprd_as_a_list_like_celery():
    assert TaskMessage.create("proj.add", [2, 3]).argsrepr == "[2, 3]"
    assert TaskMessage.create("proj.add", None, None).argsrepr == "()"


def test_long_args_are_cut_to_1024_characters():
    message = TaskMessage.create("proj.f", ("x" * 5000,))
    assert len(message.argsrepr) == 1024 + 3 and message.argsrepr.endswith("...")


def test_countdown_and_expires_become_iso_times_and_expiration():
    message = add_message(countdown=10, expires=60, now=NOW)
    assert message.eta == "2026-11-24T00:20:51.469234+00:00"
    assert message.expires == "2026-11-24T00:21:41.469234+00:00"
    assert message.properties()["expiration"] == "60000"


def test_countdown_without_now_uses_the_current_utc_time():
    ten = datetime.timedelta(seconds=10)
    before = datetime.datetime.now(UTC)
    eta = parse_iso(add_message(countdown=10).eta)
    assert before + ten <= eta <= datetime.datetime.now(UTC) + ten
    assert add_message(countdown=10).eta.endswith("+00:00")


def test_countdown_zero_means_no_eta_like_celery():
    assert add_message(countdown=0, now=NOW).eta is None


def test_eta_datetime_and_string_are_sent_as_iso():
    assert add_message(eta=NOW).eta == "2026-11-24T00:20:41.469234+00:00"
    assert add_message(eta="2026-11-24T00:20:41Z").eta == "2026-11-24T00:20:41Z"
    assert add_message(eta=NOW, countdown=5, now=NOW).eta == "2026-11-24T00:20:46.469234+00:00"


def test_expires_datetime_gives_the_expiration_from_now():
    message = add_message(expires=NOW + datetime.timedelta(seconds=30), now=NOW)
    assert message.expires == "2026-11-24T00:21:11.469234+00:00"
    assert message.expiration == "30000"


def test_fractional_expiry_is_whole_milliseconds():
    assert add_message(expires=0.5, now=NOW).expiration == "500"


def test_past_expiry_sends_expiration_zero_and_warns(caplog):
    with caplog.at_level(logging.WARNING, logger="minicelery.message"):
        message = add_message(expires=-1, now=NOW)
    assert message.expiration == "0"
    assert "expiration date in the past" in caplog.text


def test_no_expires_no_expiration_property():
    assert "expiration" not in add_message().properties()


def test_timelimit_is_hard_then_soft():
    assert add_message(time_limit=30, soft_time_limit=20).headers()["timelimit"] == [30, 20]


def test_priority_is_sent_only_when_given():
    assert "priority" not in add_message().properties()
    assert add_message(priority=5).properties()["priority"] == 5


def test_parent_group_shadow_and_ignore_result_headers():
    headers = add_message(root_id="r", parent_id="p", group_id="g", group_index=1, shadow="s",
                          ignore_result=True, retries=2).headers()
    assert (headers["root_id"], headers["parent_id"], headers["group"], headers["group_index"]) == \
        ("r", "p", "g", 1)
    assert (headers["shadow"], headers["ignore_result"], headers["retries"]) == ("s", True, 2)


def test_args_must_be_a_list_or_tuple():
    with pytest.raises(TypeError, match="^task args must be a list or tuple$"):
        TaskMessage.create("proj.add", "23")


def test_kwargs_must_be_a_mapping():
    with pytest.raises(TypeError, match="^task keyword arguments must be a mapping$"):
        TaskMessage.create("proj.add", (), [("x", 1)])


def test_msgpack_body_bytes():
    envelope = add_message().encode("msgpack")
    assert envelope.properties["content_type"] == "application/x-msgpack"
    assert envelope.properties["content_encoding"] == "binary"
    assert envelope.body.hex().startswith("939202038084a963616c6c6261636b73c0")
    args, kwargs, embed = decode_body(envelope.body, "application/x-msgpack", "binary", ["msgpack"])
    assert (args, kwargs) == ([2, 3], {})
    assert embed == {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def test_messages_and_envelopes_are_frozen():
    message = add_message()
    with pytest.raises(dataclasses.FrozenInstanceError):
        message.task = "other"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        message.encode().body = b""  # type: ignore[misc]


# -- reading headers ------------------------------------------------------------------------------------


def test_parse_headers_of_celerys_message():
    properties = {"correlation_id": CELERY_HEADERS["id"], "reply_to": "reply-q", "priority": 0}
    parsed = parse_headers(CELERY_HEADERS, properties)
    assert (parsed.task, parsed.id, parsed.root_id, parsed.retries) == \
        ("celery_tasks.add", CELERY_HEADERS["id"], CELERY_HEADERS["id"], 0)
    assert (parsed.eta, parsed.expires, parsed.timelimit) == (None, None, (None, None))
    assert (parsed.reply_to, parsed.correlation_id, parsed.priority) == ("reply-q", CELERY_HEADERS["id"], 0)
    assert (parsed.argsrepr, parsed.origin, parsed.ignore_result) == ("(2, 3)", "gen8797@vm", False)


def test_parse_headers_reads_eta_expires_and_keeps_custom_headers():
    headers = add_message(countdown=10, expires=60, now=NOW, time_limit=30, headers={"x": 1}).headers()
    parsed = parse_headers(headers, {})
    assert parsed.eta == NOW + datetime.timedelta(seconds=10)
    assert parsed.expires == NOW + datetime.timedelta(seconds=60)
    assert parsed.timelimit == (30, None) and parsed.headers["x"] == 1
    assert parsed.correlation_id == parsed.id and parsed.reply_to is None


def test_missing_task_header_says_protocol_1_is_not_supported():
    with pytest.raises(InvalidTaskError, match="^Missing required header 'task'.*protocol 1"):
        parse_headers({"id": "x"}, {})
    with pytest.raises(InvalidTaskError, match="^Missing required header 'task'"):
        parse_headers(None, {})


def test_missing_or_mistyped_id():
    with pytest.raises(InvalidTaskError, match="^Missing required header 'id'$"):
        parse_headers({"task": "proj.add"}, {})
    with pytest.raises(InvalidTaskError, match="Header 'id' must be a non-empty string, got int 5"):
        parse_headers({"task": "proj.add", "id": 5}, {})
    with pytest.raises(InvalidTaskError, match="Header 'task' must be a non-empty string, got bytes"):
        parse_headers({"task": b"proj.add", "id": "x"}, {})


@pytest.mark.parametrize(("key", "value", "reason"), [
    ("eta", "tomorrow", "'eta' must be an ISO-8601"),
    ("expires", 5, "'expires' must be an ISO-8601"),
    ("retries", "1", "'retries' must be an integer"),
    ("timelimit", [1], "'timelimit' must be"),
    ("timelimit", ["a", None], "'timelimit' must be"),
])
def test_mistyped_optional_headers_are_invalid(key, value, reason):
    with pytest.raises(InvalidTaskError, match=reason):
        parse_headers({"task": "proj.add", "id": "x", key: value}, {})


# -- reading the body -----------------------------------------------------------------------------------


def test_decode_body():
    assert decode_body(CELERY_BODY, "application/json", "utf-8", ["json"]) == \
        ([2, 3], {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None})
    assert decode_body(b"[[], {}, null]", "application/json", "utf-8", ["json"]) == ([], {}, {})


@pytest.mark.parametrize(("body", "reason"), [
    (b'{"a": 1}', "^Task body must be a 3-element array \\[args, kwargs, embed\\], got dict$"),
    (b"[[], {}]", "got an array of 2$"),
    (b"5", "got int$"),
    (b'[{}, {}, {}]', "args .* must be an array, got dict"),
    (b"[[], [], {}]", "kwargs .* must be an object with string keys, got list"),
    (b"[[], {}, []]", "embed .* must be an object or null, got list"),
])
def test_bad_body_shapes_are_invalid_tasks(body, reason):
    with pytest.raises(InvalidTaskError, match=reason):
        decode_body(body, "application/json", "utf-8", ["json"])


def test_msgpack_kwargs_with_bytes_keys_are_invalid():
    body = bytes.fromhex("93" "90" "81c40178" "01" "c0")  # [[], {b'x': 1}, None]
    with pytest.raises(InvalidTaskError, match="string keys"):
        decode_body(body, "application/x-msgpack", "binary", ["msgpack"])


def test_body_without_content_type_is_not_a_task():
    with pytest.raises(InvalidTaskError, match="got str"):
        decode_body(CELERY_BODY, None, None, ["json"])


def test_decode_body_refuses_and_fails_like_loads():
    with pytest.raises(ContentDisallowed):
        decode_body(b"\x80\x04.", "application/x-python-serialize", "binary", ["json", "pickle"])
    with pytest.raises(DecodeError):
        decode_body(b"[[2, 3", "application/json", "utf-8", ["json"])


# -- ISO times ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["2026-11-24T00:20:41.469234+00:00", "2026-11-24T00:20:41.469234Z",
                                  "2026-11-24T00:20:41.469234", "2026-11-24T01:20:41.469234+01:00"])
def test_parse_iso(text):
    assert parse_iso(text) == NOW
    assert parse_iso(text).tzinfo is not None


def test_parse_iso_rejects_garbage():
    with pytest.raises(ValueError):
        parse_iso("next tuesday")


# -- results --------------------------------------------------------------------------------------------


def test_success_result_bytes_match_celery():
    meta = result_meta("tid-add", "SUCCESS", 5, date_done=datetime.datetime(2026, 11, 24, 1, 20, 45, 830042,
                                                                             tzinfo=UTC))
    assert json.dumps(meta) == ('{"status": "SUCCESS", "result": 5, "traceback": null, "children": [], '
                                '"date_done": "2026-11-24T01:20:45.830042+00:00", "task_id": "tid-add"}')


def test_failure_result_carries_the_exception_and_optional_ids_in_celerys_order():
    meta = result_meta("tid", "FAILURE", ValueError("bad thing"), traceback="Traceback...", date_done=NOW,
                       parent_id="p", group_id="g")
    assert list(meta) == ["status", "result", "traceback", "children", "date_done", "group_id", "parent_id",
                          "task_id"]
    assert meta["result"] == {"exc_type": "ValueError", "exc_message": ["bad thing"],
                              "exc_module": "builtins"}
    assert repr(meta_to_exception(meta["result"])) == "ValueError('bad thing')"


def test_unready_states_have_no_date_done():
    meta = result_meta("tid", "STARTED", {"pid": 1, "hostname": "w1@vm"}, date_done=NOW)
    assert meta["date_done"] is None and meta["result"] == {"pid": 1, "hostname": "w1@vm"}
    assert result_meta("tid", "RETRY", None, traceback="tb")["result"] is None


def test_ready_states_default_date_done_to_now_in_utc():
    before = datetime.datetime.now(UTC)
    done = result_meta("tid", "REVOKED", None)["date_done"]
    assert done.endswith("+00:00") and before <= parse_iso(done) <= datetime.datetime.now(UTC)


def test_children_are_passed_through():
    children = [[["tid-flaky", None], None]]
    assert result_meta("tid", "RETRY", None, children=children)["children"] == children


def test_a_failure_result_carries_the_exception_as_a_dict():
    meta = result_meta("tid", "FAILURE", KeyError("k"))
    assert meta["result"] == {"exc_type": "KeyError", "exc_message": ["k"], "exc_module": "builtins"}
    assert type(protocol.meta_to_exception(meta["result"])) is KeyError


def test_the_examples_in_docs_protocol_md_run():
    path = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
    outcome = doctest.testfile(str(path), module_relative=False, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert outcome.attempted >= 5 and outcome.failed == 0


def test_request_fields_are_what_a_run_sees_as_task_request():
    envelope = add_message(reply_to="reply-q", retries=2, parent_id="p", group_id="g", time_limit=9,
                           eta="2026-11-24T00:20:41Z", headers={"custom": 1}).encode()
    fields = parse_headers(envelope.properties["headers"], envelope.properties).request_fields()
    assert fields == {
        "id": "315fcc66-21fe-4f6a-9e1f-948c46c67d2a", "retries": 2,
        "root_id": "315fcc66-21fe-4f6a-9e1f-948c46c67d2a", "parent_id": "p", "group": "g",
        "origin": "gen8797@vm", "reply_to": "reply-q", "correlation_id": "315fcc66-21fe-4f6a-9e1f-948c46c67d2a",
        "eta": "2026-11-24T00:20:41Z", "expires": None, "timelimit": (9, None), "ignore_result": False,
        "argsrepr": "(2, 3)", "kwargsrepr": "{}", "headers": envelope.properties["headers"],
    }
