"""Monitoring events: Celery's fields and order, the offset's sign, routing keys, and the dispatcher's
publishing on a real ``memory://`` connection."""

from __future__ import annotations

import json
import time
import uuid

from hypothesis import given, settings
from hypothesis import strategies as st

from minicelery import monitor
from minicelery.clock import LamportClock
from minicelery.memory import MemoryTransport
from minicelery.monitor import (
    BUFFER_TIME,
    MULTI_LIMIT,
    EventDispatcher,
    event,
    routing_key,
    utcoffset,
    worker_fields,
)
from minicelery.transport import QueueSpec


def test_an_event_has_celerys_common_fields_in_celerys_order():
    built = event("task-succeeded", {"uuid": "u", "result": "5"}, hostname="w@h", clock=3, pid=42, offset=-1.0,
                  timestamp=1.5)
    assert list(built) == ["hostname", "utcoffset", "pid", "clock", "uuid", "result", "timestamp", "type"]
    assert built == {"hostname": "w@h", "utcoffset": -1.0, "pid": 42, "clock": 3, "uuid": "u", "result": "5",
                     "timestamp": 1.5, "type": "task-succeeded"}


#: The type's own fields: any JSON-able values under names other than the common ones.
_FIELDS = st.dictionaries(
    st.text(min_size=1, max_size=8).filter(lambda k: k not in {"hostname", "utcoffset", "pid", "clock",
                                                                  "timestamp", "type"}),
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20), max_size=5)


@given(_FIELDS, st.integers(0, 2**40), st.floats(allow_nan=False, allow_infinity=False))
def test_any_event_keeps_the_common_fields_around_its_own(fields, clock, timestamp):
    built = event("task-custom", fields, hostname="w@h", clock=clock, pid=1, offset=0.0, timestamp=timestamp)
    assert list(built) == ["hostname", "utcoffset", "pid", "clock", *fields, "timestamp", "type"]
    assert {k: built[k] for k in fields} == fields
    assert (built["clock"], built["timestamp"], built["type"]) == (clock, timestamp, "task-custom")
    assert json.loads(json.dumps(built)) == built


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 2 * MULTI_LIMIT + 1), max_size=4), _FIELDS)
def test_whatever_is_sent_reaches_the_wire_in_order_in_full_arrays(runs, fields):
    # Runs of task events, each run closed by a worker event: arrays fill up to the limit, in order.
    sent: list[tuple[str, dict]] = []
    expected: list = []  # an array's length, or "worker" for a worker event
    for run in runs:
        sent += [("task-started", {**fields, "number": len(sent) + i}) for i in range(run)]
        expected += [min(MULTI_LIMIT, run - start) for start in range(0, run, MULTI_LIMIT)]
        sent.append(("worker-heartbeat", dict(fields)))
        expected.append("worker")
    connection, got = _tapped("#")
    dispatcher = EventDispatcher("w@h")
    for event_type, event_fields in sent:
        dispatcher.send(event_type, event_fields)
    dispatcher.flush(connection)
    bodies: list = []
    received: list = []
    deadline = time.monotonic() + 10
    while len(received) < len(sent) and time.monotonic() < deadline:
        connection.wait(0.05)
        bodies = [json.loads(delivery.body) for delivery in got]
        received = [e for body in bodies for e in (body if isinstance(body, list) else [body])]
    assert [len(body) if isinstance(body, list) else "worker" for body in bodies] == expected
    assert [(e["type"], {k: e[k] for k in f}) for e, (_, f) in zip(received, sent, strict=True)] == sent
    assert [e["clock"] for e in received] == list(range(1, len(sent) + 1))
    connection.close()


def test_utcoffset_is_hours_west_of_utc():
    local = time.localtime()
    assert utcoffset() == -local.tm_gmtoff / 3600


def test_routing_keys_replace_dashes_with_dots():
    assert routing_key("worker-heartbeat") == "worker.heartbeat"
    assert routing_key("task-sent") == "task.sent"


def test_worker_fields_and_the_wakeup_variant():
    full = worker_fields(freq=2.0, version="0.1.0", active=1, processed=7)
    assert list(full) == ["freq", "active", "processed", "loadavg", "sw_ident", "sw_ver", "sw_sys"]
    assert len(full["loadavg"]) == 3 and all(round(v, 2) == v for v in full["loadavg"])
    assert (full["sw_ident"], full["sw_ver"]) == ("py-minicelery", "0.1.0")
    assert list(worker_fields(freq=5, version="0.1.0")) == ["freq", "sw_ident", "sw_ver", "sw_sys"]


def _tapped(routing_key: str) -> tuple[object, list]:
    """A connection on a fresh ``memory://`` broker with a queue bound to the event exchange."""
    transport = MemoryTransport(f"memory://monitor-{uuid.uuid4().hex}")
    connection = transport.connection()
    connection.connect()
    got: list = []
    connection.declare(QueueSpec("tap", exchange="celeryev", exchange_type="topic", routing_key=routing_key))
    connection.consume("tap", got.append, lambda q: None, no_ack=True)
    return connection, got


def test_task_events_travel_as_a_task_multi_array_with_the_hostname_header():
    connection, got = _tapped("task.#")
    clock = LamportClock(10)
    dispatcher = EventDispatcher("w@h", clock=clock)
    dispatcher.send("task-received", {"uuid": "u1"})
    dispatcher.send("task-started", {"uuid": "u1"})
    dispatcher.send("worker-heartbeat", {"freq": 2.0})  # not bound by task.#
    assert len(dispatcher) == 3
    dispatcher.flush(connection)
    assert len(dispatcher) == 0
    connection.wait(0.5)
    [delivery] = got
    body = json.loads(delivery.body)
    assert delivery.routing_key == "task.multi"
    assert [(e["type"], e["uuid"], e["clock"]) for e in body] == [("task-received", "u1", 11),
                                                                  ("task-started", "u1", 12)]
    assert delivery.properties["headers"] == {"hostname": "w@h"}
    assert (delivery.properties["delivery_mode"], delivery.properties["content_type"]) == (1, "application/json")
    connection.close()


def test_a_task_multi_array_holds_at_most_multi_limit_events_in_order():
    connection, got = _tapped("task.#")
    dispatcher = EventDispatcher("w@h")
    for number in range(2 * MULTI_LIMIT + 1):
        dispatcher.send("task-succeeded", {"uuid": str(number)})
    dispatcher.flush(connection)
    connection.wait(0.5)
    arrays = [json.loads(delivery.body) for delivery in got]
    assert [len(array) for array in arrays] == [MULTI_LIMIT, MULTI_LIMIT, 1]
    assert [event["uuid"] for array in arrays for event in array] == [str(n) for n in range(2 * MULTI_LIMIT + 1)]
    connection.close()


def test_an_array_too_large_for_one_message_is_split_in_order(monkeypatch):
    monkeypatch.setattr(monitor, "MULTI_MAX_BYTES", 4000)
    connection, got = _tapped("task.#")
    dispatcher = EventDispatcher("w@h")
    for number in range(20):  # about 1,200 bytes of JSON each: about 24,000 in all
        dispatcher.send("task-failed", {"uuid": str(number), "traceback": "x" * 1000})
    dispatcher.flush(connection)
    connection.wait(0.5)
    assert all(len(delivery.body) <= 4000 for delivery in got) and len(got) > 1
    arrays = [json.loads(delivery.body) for delivery in got]
    assert [event["uuid"] for array in arrays for event in array] == [str(n) for n in range(20)]
    connection.close()


def test_one_event_larger_than_the_bound_still_travels_alone(monkeypatch):
    monkeypatch.setattr(monitor, "MULTI_MAX_BYTES", 500)
    connection, got = _tapped("task.#")
    dispatcher = EventDispatcher("w@h")
    dispatcher.send("task-failed", {"uuid": "big", "traceback": "x" * 1000})
    dispatcher.send("task-started", {"uuid": "small"})
    dispatcher.flush(connection)
    connection.wait(0.5)
    assert [[event["uuid"] for event in json.loads(d.body)] for d in got] == [["big"], ["small"]]
    connection.close()


def test_worker_events_travel_one_by_one_in_the_order_sent():
    connection, got = _tapped("#")
    dispatcher = EventDispatcher("w@h")
    dispatcher.send("worker-online", {"freq": 2.0})
    dispatcher.send("task-received", {"uuid": "u1"})
    dispatcher.send("worker-heartbeat", {"freq": 2.0})
    dispatcher.send("task-started", {"uuid": "u1"})
    dispatcher.flush(connection)
    connection.wait(0.5)
    bodies = [json.loads(d.body) for d in got]
    kinds = [[e["type"] for e in body] if isinstance(body, list) else body["type"] for body in bodies]
    assert kinds == ["worker-online", ["task-received"], "worker-heartbeat", ["task-started"]]
    assert [d.routing_key for d in got] == ["worker.online", "task.multi", "worker.heartbeat", "task.multi"]
    connection.close()


def test_task_events_wait_for_company_and_worker_events_do_not():
    dispatcher = EventDispatcher("w@h")
    assert dispatcher.due() is None
    before = time.monotonic()
    dispatcher.send("task-received", {"uuid": "u1"})
    after = time.monotonic()
    first_due = dispatcher.due()
    assert first_due is not None and before + BUFFER_TIME <= first_due <= after + BUFFER_TIME
    dispatcher.send("task-started", {"uuid": "u1"})
    assert dispatcher.due() == first_due  # the oldest event sets the time
    dispatcher.send("worker-heartbeat", {"freq": 2.0})
    due = dispatcher.due()
    assert due is not None and due <= time.monotonic()


def test_a_full_array_is_due_at_once_and_a_flush_empties_the_buffer():
    connection, got = _tapped("task.#")
    dispatcher = EventDispatcher("w@h")
    for number in range(MULTI_LIMIT - 1):
        dispatcher.send("task-started", {"uuid": str(number)})
    due = dispatcher.due()
    assert due is not None and due > time.monotonic()
    dispatcher.send("task-started", {"uuid": "last"})
    due = dispatcher.due()
    assert due is not None and due <= time.monotonic()
    dispatcher.flush(connection)
    assert (len(dispatcher), dispatcher.due()) == (0, None)
    connection.close()


def test_publish_due_sends_full_arrays_and_keeps_the_open_one_until_its_time(monkeypatch):
    monkeypatch.setattr(monitor, "BUFFER_TIME", 3600.0)  # the open array is not due during this test
    connection, got = _tapped("task.#")
    dispatcher = EventDispatcher("w@h")
    for number in range(MULTI_LIMIT + 5):
        dispatcher.send("task-started", {"uuid": str(number)})
    dispatcher.publish_due(connection)
    connection.wait(0.5)
    assert [len(json.loads(delivery.body)) for delivery in got] == [MULTI_LIMIT]
    assert len(dispatcher) == 5  # not full, and not old enough: it waits for company
    dispatcher.flush(connection)  # shutdown: everything goes
    connection.wait(0.5)
    arrays = [json.loads(delivery.body) for delivery in got]
    assert [len(array) for array in arrays] == [MULTI_LIMIT, 5]
    assert [event["uuid"] for array in arrays for event in array] == [str(n) for n in range(MULTI_LIMIT + 5)]
    assert (len(dispatcher), dispatcher.due()) == (0, None)
    connection.close()


def test_publish_due_sends_the_open_array_once_its_oldest_event_has_waited(monkeypatch):
    monkeypatch.setattr(monitor, "BUFFER_TIME", 0.0)  # due as soon as it is sent
    connection, got = _tapped("task.#")
    dispatcher = EventDispatcher("w@h")
    dispatcher.send("task-received", {"uuid": "u1"})
    dispatcher.publish_due(connection)
    connection.wait(0.5)
    assert [[event["uuid"] for event in json.loads(delivery.body)] for delivery in got] == [["u1"]]
    connection.close()
