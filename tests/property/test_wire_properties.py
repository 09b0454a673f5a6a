"""Round trips and invariants of what travels on the wire: task messages, results, accept, decoding."""

from __future__ import annotations

import datetime
import json
import math
import string

from hypothesis import given
from hypothesis import strategies as st

from minicelery import states
from minicelery.compression import compress, decompress
from minicelery.exceptions import ContentDisallowed, DecodeError, InvalidTaskError
from minicelery.message import SendOptions, TaskMessage
from minicelery.protocol import (
    decode_body,
    meta_to_exception,
    parse_headers,
    result_meta,
)
from minicelery.saferepr import saferepr
from minicelery.serialization import accepted, dumps, loads

UTC = datetime.UTC
NOW = datetime.datetime(2026, 1, 1, tzinfo=UTC)
KNOWN_TYPES = ["application/json", "application/x-msgpack", "application/x-python-serialize",
               "application/x-yaml"]

keys = st.text(max_size=8).filter(lambda key: key not in ("__type__", "__value__"))
json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
# The kombu-wrapped types, in the forms that come back equal (uuid: RFC 4122 versions, as kombu needs).
kombu_types = (st.datetimes(timezones=st.none() | st.just(UTC)) | st.dates() | st.times()
               | st.decimals(allow_nan=False) | st.uuids(version=4) | st.uuids(version=1) | st.binary())


def containers(inner: st.SearchStrategy) -> st.SearchStrategy:
    return st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3)


json_values = st.recursive(json_scalars | kombu_types, containers, max_leaves=6)
msgpack_scalars = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False)
                   | st.text() | st.binary())
msgpack_values = st.recursive(msgpack_scalars, containers, max_leaves=6)


def round_trip(serializer: str, args: list, kwargs: dict) -> None:
    message = TaskMessage.create("proj.task", args, kwargs, SendOptions(countdown=5, expires=60), now=NOW)
    envelope = message.encode(serializer)
    properties = envelope.properties
    headers = parse_headers(properties["headers"], properties)
    assert (headers.task, headers.id) == ("proj.task", message.id)
    assert headers.eta == NOW + datetime.timedelta(seconds=5)
    fields = headers.request_fields()
    assert (fields["id"], fields["root_id"], fields["correlation_id"]) == (message.id,) * 3
    assert fields["eta"] == message.eta and fields["headers"] == properties["headers"]
    decoded = decode_body(envelope.body, properties["content_type"], properties["content_encoding"],
                          [serializer])
    assert decoded == (args, kwargs, {"callbacks": None, "errbacks": None, "chain": None, "chord": None})


@given(st.lists(json_values, max_size=4), st.dictionaries(keys, json_values, max_size=4))
def test_json_message_round_trip(args, kwargs):
    round_trip("json", args, kwargs)


@given(st.lists(msgpack_values, max_size=4), st.dictionaries(keys, msgpack_values, max_size=4))
def test_msgpack_message_round_trip(args, kwargs):
    round_trip("msgpack", args, kwargs)


plain_json = st.recursive(json_scalars, containers, max_leaves=6)


@given(plain_json)
def test_json_bytes_are_pythons_json_dumps_defaults(value):
    assert dumps(value, "json")[2] == json.dumps(value).encode()


statuses = st.sampled_from(sorted(states.ALL_STATES | {states.REJECTED, states.IGNORED}))


serialized_results = (st.tuples(st.just("json"), plain_json | kombu_types)
                      | st.tuples(st.just("msgpack"), msgpack_values))


@given(st.text(min_size=1), statuses, serialized_results, st.none() | st.text(),
       st.none() | st.text(min_size=1), st.none() | st.text(min_size=1))
def test_result_meta_round_trip(task_id, status, serialized_result, traceback, parent_id, group_id):
    serializer, result = serialized_result
    meta = result_meta(task_id, status, result, traceback=traceback, parent_id=parent_id, group_id=group_id)
    content_type, encoding, body = dumps(meta, serializer)
    assert loads(body, content_type, encoding, [serializer]) == meta
    assert list(meta)[:5] == ["status", "result", "traceback", "children", "date_done"]
    assert list(meta)[-1] == "task_id"
    assert (meta["date_done"] is not None) == (status in states.READY_STATES)


exception_types = st.sampled_from([ValueError, KeyError, RuntimeError, TypeError, ZeroDivisionError])


@given(exception_types, st.lists(st.text() | st.integers() | st.none(), max_size=3),
       st.sampled_from(sorted(states.EXCEPTION_STATES)))
def test_exception_results_rebuild_the_same_exception(exc_type, args, status):
    meta = result_meta("tid", status, exc_type(*args))
    wire = loads(dumps(meta, "json")[2], "application/json", "utf-8", ["json"])
    rebuilt = meta_to_exception(wire["result"])
    assert type(rebuilt) is exc_type and rebuilt.args == tuple(args)


@given(st.text(min_size=1) | st.sampled_from(KNOWN_TYPES),
       st.lists(st.sampled_from(["json", "msgpack", "pickle", "yaml", *KNOWN_TYPES]), max_size=4))
def test_content_types_outside_accept_are_refused(content_type, accept):
    if content_type in accepted(accept) or content_type in ("application/data", "application/text"):
        return
    try:
        loads(b"[]", content_type, "utf-8", accept)
    except ContentDisallowed as exc:
        assert str(exc).startswith("Refusing to deserialize untrusted content of type ")
        assert str(exc).endswith(f"({content_type})")
    else:
        raise AssertionError(f"{content_type!r} was decoded with accept={accept!r}")


@given(st.sampled_from(["application/x-python-serialize", "application/x-yaml"]),
       st.lists(st.sampled_from(["json", "msgpack", "pickle", "yaml", *KNOWN_TYPES]), max_size=4))
def test_pickle_and_yaml_are_never_decoded(content_type, accept):
    try:
        loads(b"\x80\x04K\x01.", content_type, "binary", accept)
    except ContentDisallowed:
        return
    raise AssertionError("decoded")


@given(st.binary(max_size=64) | plain_json.map(lambda value: json.dumps(value).encode())
       | msgpack_values.map(lambda value: dumps(value, "msgpack")[2]),
       st.sampled_from(["application/json", "application/x-msgpack", None, "application/data"]),
       st.sampled_from(["utf-8", "binary", None, "latin-1", "no-such-codec"]))
def test_decode_body_only_raises_its_own_errors(body, content_type, encoding):
    try:
        decode_body(body, content_type, encoding, ["json", "msgpack"])
    except (InvalidTaskError, DecodeError, ContentDisallowed):
        pass


plain_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
reprable = st.recursive(
    plain_scalars | st.text(string.ascii_letters + " "),
    lambda inner: st.lists(inner, max_size=3) | st.tuples(inner) | st.tuples(inner, inner), max_leaves=8)


@given(reprable)
def test_saferepr_is_repr_for_plain_shallow_values(value):
    def depth(obj: object) -> int:
        return 1 + max(map(depth, obj), default=0) if isinstance(obj, (list, tuple)) else 0

    if depth(value) <= 3:
        assert saferepr(value) == repr(value)


nested_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (st.lists(inner, max_size=4) | st.tuples(inner, inner)
                   | st.dictionaries(st.text(max_size=5), inner, max_size=4)
                   | st.frozensets(st.integers(), max_size=3)),
    max_leaves=20)


@given(nested_values, st.integers(min_value=0, max_value=80), st.integers(min_value=0, max_value=4))
def test_saferepr_with_a_bound_is_the_whole_text_cut_at_the_bound(value, maxlen, maxlevels):
    whole = saferepr(value, maxlevels=maxlevels)
    expected = whole if len(whole) <= maxlen else whole[:maxlen] + "..."
    assert saferepr(value, maxlen, maxlevels) == expected


@given(st.decimals(allow_nan=False, places=4))
def test_decimal_keeps_its_exact_digits(value):
    assert loads(dumps(value, "json")[2], "application/json", "utf-8", ["json"]) == value
    assert str(loads(dumps(value, "json")[2], "application/json", "utf-8", ["json"])) == str(value)


ids = st.none() | st.text("abcdef0123456789-", min_size=1, max_size=12)
limits = st.none() | st.floats(min_value=0.5, max_value=1e6) | st.integers(min_value=1, max_value=10**6)


@given(ids, st.integers(0, 100), limits, limits, ids, ids, ids, ids, st.none() | st.booleans(),
       st.none() | st.integers(0, 255))
def test_send_options_come_back_as_the_request_fields(task_id, retries, hard, soft, root_id, parent_id,
                                                      group_id, reply_to, ignore_result, priority):
    if hard is not None and soft is not None and soft > hard:
        hard, soft = soft, hard
    options = SendOptions(task_id=task_id, retries=retries, time_limit=hard, soft_time_limit=soft,
                          root_id=root_id, parent_id=parent_id, group_id=group_id, reply_to=reply_to,
                          ignore_result=ignore_result, priority=priority)
    envelope = TaskMessage.create("proj.task", (), {}, options).encode()
    parsed = parse_headers(envelope.properties["headers"], envelope.properties)
    fields = parsed.request_fields()
    assert fields["id"] == (task_id or fields["id"]) and fields["root_id"] == (root_id or fields["id"])
    assert (fields["retries"], fields["timelimit"]) == (retries, (hard, soft))
    assert (fields["parent_id"], fields["group"], fields["reply_to"]) == (parent_id, group_id, reply_to)
    assert fields["ignore_result"] is bool(ignore_result) and parsed.priority == priority


header_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40) | st.binary(max_size=8)
    | st.datetimes(timezones=st.timezones()).map(lambda when: when.isoformat())
    | st.sampled_from(["0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00", "Z", "2026-01-01T00:00:00Z"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=2),
    max_leaves=4)


timelimits = st.lists(st.none() | st.integers() | st.floats() | st.booleans() | st.text(max_size=3),
                      min_size=2, max_size=2) | header_values


@given(timelimits, header_values, header_values)
def test_random_timelimit_eta_and_expires_parse_to_sane_values_or_an_invalid_task(timelimit, eta, expires):
    headers = {"task": "proj.t", "id": "tid", "timelimit": timelimit, "eta": eta, "expires": expires}
    try:
        parsed = parse_headers(headers)
    except InvalidTaskError:
        return
    now = datetime.datetime.now(UTC)
    for limit in parsed.timelimit:
        assert limit is None or (isinstance(limit, (int, float)) and 0 < limit < math.inf)
    for when in (parsed.eta, parsed.expires):
        assert when is None or (when.tzinfo is not None and isinstance((when - now).total_seconds(), float))


methods = st.sampled_from(["gzip", "zlib", "bzip2", "bzip", "lzma", "xz", "application/x-gzip",
                           "application/x-bz2", "application/x-lzma"])


@given(st.binary(max_size=2048), methods)
def test_compression_round_trips(body, method):
    compressed, header = compress(body, method)
    assert header.startswith("application/x-")
    assert decompress(compressed, header) == decompress(compressed, method) == body


@given(st.binary(max_size=256), methods | st.text(max_size=10) | st.none() | st.integers(),
       st.integers(min_value=0, max_value=64))
def test_decompressing_anything_gives_bytes_within_the_bound_or_a_decode_error(body, method, max_size):
    try:
        out = decompress(body, method, max_size=max_size)
    except DecodeError:
        return
    assert isinstance(out, bytes) and len(out) <= max_size
