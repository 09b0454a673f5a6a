"""Celery 5 and minicelery put the same task messages on the wire, read each other's, and declare alike.

What is proven, against the real RabbitMQ and the real Celery package (no worker involved):

* **Celery → minicelery decoding.** A message published by a Celery client and read back with plain pika
  decodes with ``minicelery.protocol.parse_headers`` and ``decode_body`` to exactly what Celery sent: task,
  id, eta, expires, time limits, retries, root id, reprs, origin, a custom header, args and kwargs (json and
  msgpack), including kombu's wrapped JSON types (datetime, Decimal, UUID, bytes).
* **Same bytes.** For the same task id, arguments and options, minicelery's ``TaskMessage`` and Celery's
  ``app.amqp.as_task_v2`` give the same headers (keys, order and values) and the same body bytes, for hand-picked
  and for generated arguments; published through both libraries and read back, the two messages also have
  the same AMQP properties, except the timestamp-derived ``expiration``.
* **Declarations coexist.** A task queue (and its exchange) declared by either library first is re-declared
  by the other without ``PRECONDITION_FAILED``, and so is the rpc:// reply queue; the broker then holds the
  arguments Celery uses.
"""

from __future__ import annotations

import datetime
import decimal
import os
import socket
import time
import uuid
from typing import Any

import celery_side
import mini_side
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from kombu.serialization import dumps as kombu_dumps
from kombu.serialization import loads as kombu_loads

from minicelery.message import SendOptions, TaskMessage
from minicelery.protocol import decode_body, parse_headers

pytestmark = [pytest.mark.interop, pytest.mark.broker]

UTC = datetime.UTC
ACCEPT = ("json", "msgpack")
#: The arguments Celery's rpc backend gives its reply queue: durable, auto-delete, one day of x-expires.
REPLY_QUEUE_ARGUMENTS = {"durable": True, "auto_delete": True, "exclusive": False,
                         "arguments": {"x-expires": 86400000}}


def basic_get(channel: Any, queue: str, timeout: float = 5.0) -> tuple[Any, Any, bytes]:
    """Take one message from ``queue`` with ``basic_get``, polling until ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        method, properties, body = channel.basic_get(queue, auto_ack=True)
        if method is not None:
            return method, properties, body
    raise AssertionError(f"no message arrived on {queue} within {timeout}s")


def properties_dict(properties: Any) -> dict[str, Any]:
    """What minicelery's worker passes to ``parse_headers``: the properties it reads."""
    return {"reply_to": properties.reply_to, "correlation_id": properties.correlation_id,
            "priority": properties.priority}


def decode(properties: Any, body: bytes) -> tuple[Any, list[Any], dict[str, Any], dict[str, Any]]:
    headers = parse_headers(properties.headers, properties_dict(properties))
    args, kwargs, embed = decode_body(body, properties.content_type, properties.content_encoding, ACCEPT)
    return headers, args, kwargs, embed


def this_origin() -> str:
    return f"gen{os.getpid()}@{socket.gethostname()}"


# --- 2. A message sent by Celery, read by minicelery ---------------------------------------------------


@pytest.mark.parametrize("serializer", ["json", "msgpack"])
def test_celery_message_decodes_to_what_celery_sent(clients, unique_queue, pika_channel, serializer):
    celery_app, _ = clients
    queue = unique_queue("celery-sent")
    before = datetime.datetime.now(UTC)
    sent = celery_side.add.apply_async((2, 3), countdown=10, expires=60, priority=5, headers={"x": 1},
                                       time_limit=30, soft_time_limit=20, queue=queue, serializer=serializer)
    after = datetime.datetime.now(UTC)
    method, properties, body = basic_get(pika_channel, queue)
    raw = properties.headers
    headers, args, kwargs, embed = decode(properties, body)

    assert (method.exchange, method.routing_key) == ("", queue)
    assert headers.task == "interop.add"
    assert headers.id == sent.id == properties.correlation_id == headers.correlation_id
    assert headers.eta == datetime.datetime.fromisoformat(raw["eta"])
    assert before + datetime.timedelta(seconds=10) <= headers.eta <= after + datetime.timedelta(seconds=10)
    assert headers.expires == datetime.datetime.fromisoformat(raw["expires"])
    assert before + datetime.timedelta(seconds=60) <= headers.expires <= after + datetime.timedelta(seconds=60)
    assert headers.eta.utcoffset() == headers.expires.utcoffset() == datetime.timedelta(0)
    assert headers.timelimit == (30, 20)
    assert headers.retries == 0
    assert headers.root_id == sent.id
    assert headers.parent_id is None
    assert headers.group is None and headers.group_index is None and headers.shadow is None
    assert headers.argsrepr == "(2, 3)"
    assert headers.kwargsrepr == "{}"
    assert headers.origin == this_origin()
    assert headers.ignore_result is False
    assert headers.headers["x"] == 1
    assert headers.headers == raw  # every header, the custom one included, as Celery sent it
    assert headers.priority == 5
    assert headers.reply_to == celery_app.thread_oid
    assert (args, kwargs) == ([2, 3], {})
    assert embed == {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
    # And what kombu itself decodes from the same bytes:
    assert kombu_loads(body, properties.content_type, properties.content_encoding,
                       accept={"application/json", "application/x-msgpack"}) == [args, kwargs, embed]


@pytest.mark.parametrize("serializer", ["json", "msgpack"])
def test_celery_kwargs_decode_alike(clients, unique_queue, pika_channel, serializer):
    queue = unique_queue("celery-kwargs")
    kwargs = {"text": "é ünïcode 'quoted'", "nested": {"list": [1, 2.5, None, True, {"deep": []}]},
              "big": 2**40, "negative": -7}
    sent = celery_side.echo.apply_async((), kwargs, queue=queue, serializer=serializer)
    _, properties, body = basic_get(pika_channel, queue)
    headers, args, got_kwargs, _ = decode(properties, body)
    assert headers.id == sent.id
    assert headers.argsrepr == "()"
    assert headers.kwargsrepr == properties.headers["kwargsrepr"]
    assert (args, got_kwargs) == ([], kwargs)


def test_kombu_json_types_decode_to_the_same_values(clients, unique_queue, pika_channel):
    queue = unique_queue("celery-types")
    values = {
        "when": datetime.datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=UTC),
        "naive": datetime.datetime(2024, 1, 2, 3, 4, 5),
        "day": datetime.date(2024, 2, 29),
        "amount": decimal.Decimal("1.10"),
        "uid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
        "utf8": b"plain text",
    }
    celery_side.echo.apply_async((), values, queue=queue)
    _, properties, body = basic_get(pika_channel, queue)
    _, _, kwargs, _ = decode(properties, body)
    assert kwargs == values
    assert all(type(kwargs[key]) is type(value) for key, value in values.items())


# --- 3. The same bytes from both libraries ---------------------------------------------------------------

NOW = datetime.datetime(2026, 11, 24, 0, 20, 51, 469234, tzinfo=UTC)
CASES = {
    "plain": ((2, 3), {}, {}),
    "kwargs": ((), {"x": 1, "y": 2}, {}),
    "unicode": (("é", "it's", 'say "hi"'), {"ü": ["ß", None, True, 1.5]}, {}),
    "nested": (([1, [2, [3, [4, [5]]]]], {"a": {"b": {"c": {"d": {}}}}}), {"k": (1,)}, {}),
    "options": ((1,), {"b": 3}, {"countdown": 10, "expires": 60, "time_limit": 30, "soft_time_limit": 20,
                                 "retries": 2, "root_id": "root-1", "parent_id": "parent-1",
                                 "shadow": "shadow-name", "ignore_result": True, "reply_to": "reply-q",
                                 "group_id": "group-1", "group_index": 4}),
    "eta_datetime": ((), {}, {"eta": datetime.datetime(2030, 1, 1, tzinfo=UTC),
                              "expires": datetime.datetime(2030, 1, 2, tzinfo=UTC)}),
}


def build_both(celery_app: Any, task_id: str, args: Any, kwargs: Any, options: dict[str, Any],
               serializer: str) -> tuple[Any, Any, bytes]:
    """(Celery's task_message, minicelery's Envelope, Celery's body bytes) for the same inputs."""
    celery_msg = celery_app.amqp.as_task_v2(task_id, "interop.echo", args, kwargs, now=NOW, **options)
    envelope = TaskMessage.create("interop.echo", args, kwargs, SendOptions(task_id=task_id, **options),
                                  now=NOW).encode(serializer)
    _, encoding, celery_body = kombu_dumps(celery_msg.body, serializer=serializer)
    if isinstance(celery_body, str):  # kombu's json gives text, encoded when the message is published
        celery_body = celery_body.encode(encoding)
    return celery_msg, envelope, celery_body


@pytest.mark.parametrize("serializer", ["json", "msgpack"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_same_headers_and_body_as_as_task_v2(clients, case, serializer):
    celery_app, _ = clients
    args, kwargs, options = CASES[case]
    task_id = str(uuid.uuid4())
    celery_msg, envelope, celery_body = build_both(celery_app, task_id, args, kwargs, options, serializer)
    assert list(envelope.properties["headers"].items()) == list(celery_msg.headers.items())
    assert envelope.body == celery_body
    assert envelope.properties["correlation_id"] == celery_msg.properties["correlation_id"]
    assert envelope.properties.get("reply_to", "") == celery_msg.properties["reply_to"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(args=st.lists(json_values, max_size=4), kwargs=st.dictionaries(st.text(max_size=8), json_values, max_size=4),
       serializer=st.sampled_from(["json", "msgpack"]))
def test_generated_arguments_give_the_same_message(clients, args, kwargs, serializer):
    celery_app, _ = clients
    # Past 1024 characters the reprs are cut differently (documented in minicelery.saferepr).
    assume(len(repr(args)) < 900 and len(repr(kwargs)) < 900)
    celery_msg, envelope, celery_body = build_both(celery_app, "fixed-id", tuple(args), kwargs, {}, serializer)
    assert list(envelope.properties["headers"].items()) == list(celery_msg.headers.items())
    assert envelope.body == celery_body


WIRE_CASES = {
    "defaults": {},
    "full": {"countdown": 10, "expires": 60, "priority": 5, "headers": {"x": 1}, "time_limit": 30,
             "soft_time_limit": 20},
    "datetimes": {"eta": datetime.datetime(2030, 1, 1, tzinfo=UTC), "expires": datetime.datetime(2030, 1, 2, tzinfo=UTC),
                  "priority": 0, "ignore_result": True},
}


@pytest.mark.parametrize("serializer", ["json", "msgpack"])
@pytest.mark.parametrize("case", sorted(WIRE_CASES))
def test_published_messages_are_the_same(clients, unique_queue, pika_channel, case, serializer):
    """Both libraries publish the same task; read back with pika, only time-derived values differ."""
    options = WIRE_CASES[case]
    celery_queue, mini_queue, reply_queue = unique_queue("same-celery"), unique_queue("same-mini"), unique_queue("reply")
    task_id = str(uuid.uuid4())
    args, kwargs = (2, "é"), {"z": [1, None]}
    common = dict(task_id=task_id, serializer=serializer, reply_to=reply_queue, **options)
    celery_side.echo.apply_async(args, kwargs, queue=celery_queue, **common)
    mini_side.echo.apply_async(args, kwargs, queue=mini_queue, **common)
    c_method, c_props, c_body = basic_get(pika_channel, celery_queue)
    m_method, m_props, m_body = basic_get(pika_channel, mini_queue)

    assert m_body == c_body
    assert (m_method.exchange, m_method.routing_key, m_method.redelivered) == ("", mini_queue, False)
    assert (c_method.exchange, c_method.routing_key) == ("", celery_queue)
    c_headers, m_headers = dict(c_props.headers), dict(m_props.headers)
    assert list(m_headers) == list(c_headers)  # same keys, same order
    if "countdown" in options:  # computed from each library's own "now"
        for key in ("eta", "expires"):
            delta = abs(datetime.datetime.fromisoformat(m_headers.pop(key))
                        - datetime.datetime.fromisoformat(c_headers.pop(key)))
            assert delta < datetime.timedelta(seconds=2), key
    assert m_headers == c_headers  # origin included: both were sent from this process
    c_all, m_all = vars(c_props), vars(m_props)
    c_all.pop("headers"), m_all.pop("headers")
    c_expiration, m_expiration = c_all.pop("expiration"), m_all.pop("expiration")
    assert (m_expiration is None) == (c_expiration is None)
    if c_expiration is not None:  # milliseconds until `expires`, from each library's "now"
        assert abs(int(m_expiration) - int(c_expiration)) < 2000
    assert m_all == c_all


# --- 4. Declarations coexist -----------------------------------------------------------------------------


def assert_declared_like_celery(channel: Any, queue: str) -> None:
    """Re-declare with Celery's exact arguments: the broker refuses (406) if anything differs."""
    channel.exchange_declare(queue, exchange_type="direct", durable=True, auto_delete=False)
    channel.queue_declare(queue, durable=True, exclusive=False, auto_delete=False)


def test_minicelery_publishes_to_a_queue_celery_declared(clients, unique_queue, pika_channel):
    queue = unique_queue("celery-first")
    celery_side.add.apply_async((1, 2), queue=queue, ignore_result=True)  # declares exchange, queue, binding
    mini_side.add.apply_async((3, 4), queue=queue, ignore_result=True)  # declares them again, then publishes
    assert_declared_like_celery(pika_channel, queue)
    got = [basic_get(pika_channel, queue)[1].headers["argsrepr"] for _ in range(2)]
    assert got == ["(1, 2)", "(3, 4)"]


def test_celery_publishes_to_a_queue_minicelery_declared(clients, unique_queue, pika_channel):
    queue = unique_queue("mini-first")
    mini_side.add.apply_async((3, 4), queue=queue, ignore_result=True)
    celery_side.add.apply_async((1, 2), queue=queue, ignore_result=True)
    assert_declared_like_celery(pika_channel, queue)
    got = [basic_get(pika_channel, queue)[1].headers["argsrepr"] for _ in range(2)]
    assert got == ["(3, 4)", "(1, 2)"]
    # The binding is Celery's: the exchange named after the queue routes with the queue's name.
    pika_channel.basic_publish(queue, queue, b"via the exchange")
    assert basic_get(pika_channel, queue)[2] == b"via the exchange"


def declare_celery_reply_queue(app: Any) -> None:
    """Declare ``app``'s reply queue with Celery's own code: the rpc backend's ``binding``."""
    with app.connection_for_write() as connection:
        app.backend.binding(connection.default_channel).declare()


def test_reply_queue_declared_by_celery_then_minicelery(clients, fresh_celery_app, pika_channel):
    _, mini_app = clients
    name = fresh_celery_app.thread_oid
    declare_celery_reply_queue(fresh_celery_app)
    mini_app.backend.prepare(name)  # declares (and consumes) it the minicelery way: no 406
    pika_channel.queue_declare(name, **REPLY_QUEUE_ARGUMENTS)  # and it is what Celery asks for


def test_reply_queue_declared_by_minicelery_then_celery(clients, fresh_celery_app, pika_channel):
    _, mini_app = clients
    name = fresh_celery_app.thread_oid
    mini_app.backend.prepare(name)
    declare_celery_reply_queue(fresh_celery_app)  # no 406 either
    pika_channel.queue_declare(name, **REPLY_QUEUE_ARGUMENTS)
