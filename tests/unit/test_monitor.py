"""Monitoring events: Celery's fields and order, the offset's sign, routing keys, and the dispatcher's
publishing on a real ``memory://`` connection."""

from __future__ import annotations

import json
import time
import uuid

from minicelery.clock import LamportClock
from minicelery.memory import MemoryTransport
from minicelery.monitor import EventDispatcher, event, routing_key, utcoffset, worker_fields
from minicelery.transport import QueueSpec


def test_an_event_has_celerys_common_fields_in_celerys_order():
    built = event("task-succeeded", hostname="w@h", clock=3, pid=42, offset=-1.0, timestamp=1.5,
                  uuid="u", result="5")
    assert list(built) == ["hostname", "utcoffset", "pid", "clock", "uuid", "result", "timestamp", "type"]
    assert built == {"hostname": "w@h", "utcoffset": -1.0, "pid": 42, "clock": 3, "uuid": "u", "result": "5",
                     "timestamp": 1.5, "type": "task-succeeded"}


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


def test_the_dispatcher_publishes_transient_json_with_the_hostname_header():
    transport = MemoryTransport(f"memory://monitor-{uuid.uuid4().hex}")
    connection = transport.connection()
    connection.connect()
    got = []
    connection.declare(QueueSpec("tap", exchange="celeryev", exchange_type="topic", routing_key="task.#"))
    connection.consume("tap", got.append, lambda q: None, no_ack=True)
    clock = LamportClock(10)
    dispatcher = EventDispatcher("w@h", clock=clock)
    dispatcher.send("task-started", uuid="u1")
    dispatcher.send("worker-heartbeat", freq=2.0)  # not bound by task.#
    assert len(dispatcher) == 2
    dispatcher.flush(connection)
    assert len(dispatcher) == 0
    connection.wait(0.5)
    [delivery] = got
    body = json.loads(delivery.body)
    assert (delivery.routing_key, body["type"], body["uuid"], body["clock"]) == ("task.started", "task-started",
                                                                                  "u1", 11)
    assert delivery.properties["headers"] == {"hostname": "w@h"}
    assert (delivery.properties["delivery_mode"], delivery.properties["content_type"]) == (1, "application/json")
    connection.close()
