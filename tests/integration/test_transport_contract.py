"""One contract suite, run against both transports: ``memory://`` and ``amqp`` on the test broker (RabbitMQ on
127.0.0.1:5672, or the embedded broker with ``MINICELERY_TEST_BROKER=embedded``).

Each test checks a promise of the protocol docstrings in :mod:`minicelery.transport` through the protocol
alone (no private attribute, no plain pika), so the in-process broker is held to what RabbitMQ does.

One difference is by design and not tested as equal: on ``amqp`` the worker receives through pika, which
decodes a float header (an AMQP double) truncated to an int — pika as it ships, left alone — while
``memory://`` hands the float over as it was. Float headers are therefore compared only on ``memory://``.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from minicelery.amqp import AmqpTransport
from minicelery.exceptions import OperationalError
from minicelery.memory import MemoryTransport
from minicelery.transport import Connection, Delivery, QueueSpec, Transport

# How long a test waits for something that should happen (a delivery, a reply): generous, never slept.
PATIENCE = 10.0


@pytest.fixture(params=["memory", "amqp"])
def kind(request: pytest.FixtureRequest) -> str:
    if request.param == "amqp":
        request.applymarker(pytest.mark.broker)
    return str(request.param)


@pytest.fixture
def names(kind: str, request: pytest.FixtureRequest) -> Callable[..., str]:
    """Unique queue names; on RabbitMQ the shared ``unique_queue`` fixture deletes them at teardown."""
    if kind == "amqp":
        factory: Callable[..., str] = request.getfixturevalue("unique_queue")
        return factory
    return lambda prefix="test": f"minicelery-{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def transport(kind: str, request: pytest.FixtureRequest) -> Iterator[Transport]:
    client: Transport
    if kind == "amqp":
        client = AmqpTransport(request.getfixturevalue("broker_url"))
    else:
        client = MemoryTransport("memory://")
    yield client
    client.close()


@pytest.fixture
def connection(transport: Transport) -> Iterator[Connection]:
    """A consuming connection, connected; closed at teardown."""
    conn = transport.connection()
    conn.connect()
    yield conn
    conn.close()


def wait_until(conn: Connection, condition: Callable[[], Any], timeout: float = PATIENCE) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition never came true"
        conn.wait(0.1)


def consumed(conn: Connection, queue: str) -> list[Delivery]:
    """Declare ``queue`` and consume it into the list returned."""
    received: list[Delivery] = []
    conn.declare(QueueSpec(queue))
    conn.consume(queue, received.append, lambda queue: None)
    return received


def settle_then_count(transport: Transport, conn: Connection, queue: str) -> int:
    """Close ``conn`` (unacked deliveries go back), then purge ``queue``: how many messages it held."""
    conn.close()
    return transport.purge([queue])


# -- publish and consume ------------------------------------------------------------------------------------


def test_a_new_connection_is_unopened_and_refuses_verbs(transport):
    conn = transport.connection()
    assert not conn.is_open
    with pytest.raises(OperationalError, match="call connect"):
        conn.wait(0)
    conn.connect()
    assert conn.is_open
    conn.close()
    assert not conn.is_open


def test_publish_then_consume_delivers_body_properties_and_headers(kind, transport, connection, names):
    queue = names()
    headers = {"task": "proj.add", "id": "abc", "retries": 2, "big": 2**40, "eta": None, "ok": True,
               "argsrepr": "(1, 2)", "stamps": {"a": ["b", 1]}, "timelimit": [None, None], "soft": 1.5}
    properties = {"content_type": "application/json", "content_encoding": "utf-8", "delivery_mode": 2,
                  "correlation_id": "abc", "reply_to": "replies", "priority": 0, "headers": headers}
    received = consumed(connection, queue)
    transport.publish(b'[[1, 2], {}, {}]', properties, routing_key=queue, declare=[QueueSpec(queue)])
    wait_until(connection, lambda: received)
    (delivery,) = received
    assert (delivery.body, delivery.exchange, delivery.routing_key) == (b'[[1, 2], {}, {}]', "", queue)
    assert not delivery.redelivered and isinstance(delivery.delivery_tag, int)
    for name, value in properties.items():
        if name != "headers":
            assert delivery.properties.get(name) == value, name
    got = dict(delivery.properties["headers"])
    soft = got.pop("soft")
    assert got == {k: v for k, v in headers.items() if k != "soft"}
    if kind == "memory":  # amqp: pika truncates a received double to an int (see the module docstring)
        assert soft == 1.5
    connection.ack(delivery.delivery_tag)


def test_absent_headers_arrive_as_an_empty_dict(transport, connection, names):
    queue = names()
    received = consumed(connection, queue)
    transport.publish(b"x", {"content_type": "text/plain"}, routing_key=queue)
    wait_until(connection, lambda: received)
    assert received[0].properties["headers"] == {}


def test_routing_by_the_default_exchange_and_by_the_queues_direct_exchange(transport, connection, names):
    queue = names()
    received = consumed(connection, queue)
    transport.publish(b"by name", {}, exchange="", routing_key=queue)
    transport.publish(b"wrong key", {}, exchange=queue, routing_key=names("unbound"))  # dropped: unroutable
    transport.publish(b"by exchange", {}, exchange=queue, routing_key=queue)
    wait_until(connection, lambda: len(received) >= 2)
    assert [(d.body, d.exchange, d.routing_key) for d in received] == [
        (b"by name", "", queue), (b"by exchange", queue, queue)]
    # A queue declared with its own routing key is reached through that key only.
    other, key = names(), names("key")
    connection.declare(QueueSpec(other, exchange=queue, routing_key=key))
    transport.publish(b"by key", {}, exchange=queue, routing_key=key)
    assert transport.purge([other]) == 1


def test_the_prefetch_window_limits_unacknowledged_deliveries(transport, connection, names):
    queue = names()
    connection.qos(2)
    received = consumed(connection, queue)
    for n in range(5):
        transport.publish(str(n).encode(), {}, routing_key=queue)
    wait_until(connection, lambda: len(received) >= 2)
    for _ in range(3):  # a few more turns of the loop: still only the window
        connection.wait(0.1)
    assert [d.body for d in received] == [b"0", b"1"]
    connection.ack(received[0].delivery_tag)
    wait_until(connection, lambda: len(received) >= 3)
    connection.wait(0.2)
    assert [d.body for d in received] == [b"0", b"1", b"2"]
    connection.qos(0)  # no limit
    wait_until(connection, lambda: len(received) >= 5)
    assert [d.body for d in received] == [b"0", b"1", b"2", b"3", b"4"]


def test_reject_with_requeue_redelivers_and_without_drops(transport, connection, names):
    queue = names()
    received = consumed(connection, queue)
    transport.publish(b"again", {"correlation_id": "c1"}, routing_key=queue)
    wait_until(connection, lambda: received)
    first = received.pop()
    assert not first.redelivered
    connection.reject(first.delivery_tag, requeue=True)
    wait_until(connection, lambda: received)
    second = received.pop()
    assert (second.body, second.redelivered, second.properties["correlation_id"]) == (b"again", True, "c1")
    connection.reject(second.delivery_tag, requeue=False)
    connection.wait(0.1)
    assert received == []
    assert settle_then_count(transport, connection, queue) == 0  # dropped, not back in the queue


def test_close_returns_unacknowledged_deliveries_to_the_queue(transport, connection, names):
    queue = names()
    received = consumed(connection, queue)
    for body in (b"a", b"b", b"c"):
        transport.publish(body, {}, routing_key=queue)
    wait_until(connection, lambda: len(received) >= 3)
    connection.ack(received[1].delivery_tag)
    connection.close()
    assert not connection.is_open
    connection.connect()
    again = consumed(connection, queue)
    wait_until(connection, lambda: len(again) >= 2)
    connection.wait(0.2)
    assert sorted((d.body, d.redelivered) for d in again) == [(b"a", True), (b"c", True)]


def test_ack_multiple_settles_every_delivery_up_to_the_tag(transport, connection, names):
    queue = names()
    received = consumed(connection, queue)
    for body in (b"1", b"2", b"3"):
        transport.publish(body, {}, routing_key=queue)
    wait_until(connection, lambda: len(received) >= 3)
    connection.ack(received[1].delivery_tag, multiple=True)  # the first two, not the third
    assert settle_then_count(transport, connection, queue) == 1


def test_an_unknown_delivery_tag_is_an_operational_error_then_connect_works(transport, connection, names):
    queue = names()
    received = consumed(connection, queue)
    transport.publish(b"kept", {}, routing_key=queue)
    wait_until(connection, lambda: received)
    with pytest.raises(OperationalError) as info:  # at once (memory) or at the next verb (amqp)
        connection.ack(received[0].delivery_tag + 1000)
        wait_until(connection, lambda: False)
    assert info.value.url == connection.url and "PRECONDITION_FAILED" in (info.value.reason or "")
    assert not connection.is_open
    connection.connect()
    again = consumed(connection, queue)
    wait_until(connection, lambda: again)
    assert (again[0].body, again[0].redelivered) == (b"kept", True)


def test_publish_on_the_consuming_connection(transport, connection, names):
    queue, results = names(), names("results")
    received = consumed(connection, queue)
    connection.declare(QueueSpec(results, exchange=""))
    connection.publish(b"result", {"correlation_id": "t1", "delivery_mode": 1}, routing_key=queue)
    connection.publish(b"elsewhere", {}, exchange="", routing_key=results)
    wait_until(connection, lambda: received)
    assert (received[0].body, received[0].properties["correlation_id"]) == (b"result", "t1")
    connection.ack(received[0].delivery_tag)
    assert transport.purge([results]) == 1


def test_cancel_all_stops_delivery_and_keeps_what_was_received(transport, connection, names):
    queue = names()
    received = consumed(connection, queue)
    transport.publish(b"before", {}, routing_key=queue)
    wait_until(connection, lambda: received)
    connection.cancel_all()
    transport.publish(b"after", {}, routing_key=queue)
    for _ in range(3):
        connection.wait(0.1)
    assert [d.body for d in received] == [b"before"]
    connection.ack(received[0].delivery_tag)  # still the caller's to settle
    assert settle_then_count(transport, connection, queue) == 1  # "after" waits in the queue


# -- rpc replies and purge --------------------------------------------------------------------------------------


def test_reply_queues_drain_in_any_order_then_time_out(transport, names):
    name = names("reply")
    transport.declare_reply_queue(name, 60000)
    assert transport.drain_replies(name, 0) == []
    for task_id in ("c", "a", "b"):
        transport.publish(f'"{task_id}"'.encode(), {"correlation_id": task_id, "content_type": "application/json",
                                                    "content_encoding": "utf-8"}, routing_key=name)
    replies: list[Any] = []
    deadline = time.monotonic() + PATIENCE
    while len(replies) < 3 and time.monotonic() < deadline:
        replies += transport.drain_replies(name, 1)
    assert [(r.correlation_id, r.body) for r in replies] == [("c", b'"c"'), ("a", b'"a"'), ("b", b'"b"')]
    assert {(r.content_type, r.content_encoding) for r in replies} == {("application/json", "utf-8")}
    started = time.monotonic()
    assert transport.drain_replies(name, 0.3) == []
    assert 0.3 <= time.monotonic() - started < 0.3 + PATIENCE


def test_after_close_the_next_call_reopens_and_replies_still_arrive(transport, names):
    name = names("reply")
    transport.declare_reply_queue(name, 60000)
    transport.close()
    assert transport.drain_replies(name, 0) == []  # reopened, consuming the reply queue again
    transport.publish(b"late", {"correlation_id": "t9"}, routing_key=name)
    replies: list[Any] = []
    deadline = time.monotonic() + PATIENCE
    while not replies and time.monotonic() < deadline:
        replies += transport.drain_replies(name, 1)
    assert [(r.correlation_id, r.body) for r in replies] == [("t9", b"late")]


def test_drain_replies_without_declare_raises_value_error(transport, names):
    with pytest.raises(ValueError, match="declare_reply_queue"):
        transport.drain_replies(names("reply"), 0)
    unconsumed = names("reply")
    transport.declare_reply_queue(unconsumed, None, consume=False)  # declares, does not consume
    with pytest.raises(ValueError, match="declare_reply_queue"):
        transport.drain_replies(unconsumed, 0)
    transport.publish(b"kept for another process", {}, routing_key=unconsumed)
    assert transport.purge([unconsumed]) == 1


def test_purge_counts_and_a_missing_queue_counts_zero(transport, names):
    queue, other = names(), names()
    for n in range(3):
        transport.publish(str(n).encode(), {}, routing_key=queue, declare=[QueueSpec(queue)])
    transport.publish(b"x", {}, routing_key=other, declare=[QueueSpec(other)])
    assert transport.purge([names("missing"), queue, other]) == 4
    assert transport.purge([queue, other]) == 0


# -- the wait point ------------------------------------------------------------------------------------------


def test_wait_returns_after_about_the_timeout_when_idle(connection, names):
    consumed(connection, names())
    # memory:// wakes its wait() once after consume() (and after ack/reject), with nothing to do: a spurious
    # early return that the worker's loop tolerates. This test is about the idle wait, so that one goes first.
    connection.wait(0)
    started = time.monotonic()
    connection.wait(0.3)
    assert 0.25 <= time.monotonic() - started < 0.3 + PATIENCE


def test_wait_returns_early_on_a_delivery(transport, connection, names):
    queue = names()
    received = consumed(connection, queue)
    transport.publish(b"wake", {}, routing_key=queue)
    started = time.monotonic()
    while not received:
        connection.wait(60)
        assert time.monotonic() - started < PATIENCE, "wait slept through a delivery"


def test_watch_wakes_wait_and_unwatch_stops_it(connection):
    read_end, write_end = os.pipe()
    ready: list[bytes] = []
    try:
        connection.watch(read_end, lambda: ready.append(os.read(read_end, 100)))
        os.write(write_end, b"done")
        started = time.monotonic()
        while not ready:
            connection.wait(60)
            assert time.monotonic() - started < PATIENCE, "wait slept through the watched descriptor"
        assert ready == [b"done"]
        connection.unwatch()
        os.write(write_end, b"unwatched")
        connection.wait(0.2)
        assert ready == [b"done"]
        assert os.read(read_end, 100) == b"unwatched"
    finally:
        connection.unwatch()
        os.close(read_end)
        os.close(write_end)


def test_watch_is_kept_across_reconnection(connection):
    read_end, write_end = os.pipe()
    ready: list[bytes] = []
    try:
        connection.watch(read_end, lambda: ready.append(os.read(read_end, 100)))
        connection.close()
        connection.connect()
        os.write(write_end, b"after reconnect")
        wait_until(connection, lambda: ready)
        assert ready == [b"after reconnect"]
    finally:
        connection.unwatch()
        os.close(read_end)
        os.close(write_end)


def test_consuming_a_missing_queue_is_an_operational_error_that_closes_the_connection(connection, names):
    with pytest.raises(OperationalError) as info:
        connection.consume(names("missing"), lambda delivery: None, lambda queue: None)
    assert info.value.url == connection.url and "NOT_FOUND" in (info.value.reason or "")
    assert not connection.is_open  # as after any OperationalError: connect() again
    connection.connect()
    queue = names()
    received = consumed(connection, queue)
    connection.publish(b"fine", {}, routing_key=queue)
    wait_until(connection, lambda: received)


def test_what_a_forked_child_publishes_reaches_the_queue(transport, names):
    queue = names()
    transport.publish(b"parent", {}, routing_key=queue, declare=[QueueSpec(queue)])
    pid = os.fork()
    if pid == 0:  # the child publishes through the transport it inherited, and closes its own connection
        code = 1
        try:
            transport.publish(b"child", {"headers": {"n": 1}}, routing_key=queue)
            transport.close()
            code = 0
        finally:
            os._exit(code)
    assert os.waitpid(pid, 0)[1] == 0
    assert transport.purge([queue]) == 2


# -- exchanges for remote control and events: fanout, topic, declare_exchange, no_ack --------------------


def test_a_fanout_exchange_copies_a_message_to_every_bound_queue(connection, names):
    exchange, first, second, unbound = names("fanout"), names(), names(), names()
    received: dict[str, list[Delivery]] = {first: [], second: [], unbound: []}
    for queue, key in ((first, ""), (second, "ignored")):
        connection.declare(QueueSpec(queue, exchange=exchange, exchange_type="fanout", exchange_durable=False,
                                     routing_key=key, durable=False, auto_delete=True))
    connection.declare(QueueSpec(unbound))
    for queue in received:
        connection.consume(queue, received[queue].append, lambda queue: None, no_ack=True)
    connection.publish(b"to all", {}, exchange=exchange, routing_key="any key")
    wait_until(connection, lambda: received[first] and received[second])
    assert [d.body for d in received[first] + received[second]] == [b"to all", b"to all"]
    assert received[first][0].exchange == exchange and received[unbound] == []


def test_a_topic_exchange_routes_by_word_patterns(connection, names):
    exchange = names("topic")
    patterns = {"#": names(), "worker.#": names(), "*.heartbeat": names(), "task.*": names()}
    received: dict[str, list[bytes]] = {pattern: [] for pattern in patterns}
    for pattern, queue in patterns.items():
        connection.declare(QueueSpec(queue, exchange=exchange, exchange_type="topic", routing_key=pattern,
                                     durable=False, auto_delete=True))
        connection.consume(queue, lambda d, p=pattern: received[p].append(d.body), lambda queue: None,
                           no_ack=True)
    for key in ("worker.heartbeat", "task.succeeded", "task.multi.x", "worker"):
        connection.publish(key.encode(), {}, exchange=exchange, routing_key=key)
    wait_until(connection, lambda: len(received["#"]) == 4)
    wait_until(connection, lambda: sum(len(v) for v in received.values()) == 8)
    assert sorted(received["worker.#"]) == [b"worker", b"worker.heartbeat"]
    assert received["*.heartbeat"] == [b"worker.heartbeat"]
    assert received["task.*"] == [b"task.succeeded"]


def test_declare_exchange_lets_a_message_be_published_to_nobody(connection, names):
    exchange = names("lonely")
    for kind in ("fanout", "topic", "direct"):
        connection.declare_exchange(f"{exchange}.{kind}" if kind != "fanout" else exchange, kind, durable=False)
    connection.publish(b"nobody listens", {}, exchange=exchange, routing_key="")
    connection.wait(0.2)
    assert connection.is_open  # RabbitMQ would close the channel for an exchange that does not exist
    connection.declare_exchange(exchange, "fanout", durable=False)  # declaring again is harmless


def test_no_ack_deliveries_bypass_the_prefetch_window(connection, names):
    manual, automatic = names(), names()
    connection.qos(1)
    got_manual: list[Delivery] = []
    got_auto: list[Delivery] = []
    connection.declare(QueueSpec(manual))
    connection.declare(QueueSpec(automatic))
    connection.consume(manual, got_manual.append, lambda queue: None)
    connection.consume(automatic, got_auto.append, lambda queue: None, no_ack=True)
    for n in range(3):
        connection.publish(b"m%d" % n, {}, routing_key=manual)
        connection.publish(b"a%d" % n, {}, routing_key=automatic)
    wait_until(connection, lambda: len(got_auto) == 3 and got_manual)
    connection.wait(0.2)
    assert len(got_manual) == 1  # the window of one holds the others back; no_ack ones never count
    connection.ack(got_manual[0].delivery_tag)
    wait_until(connection, lambda: len(got_manual) == 2)


def test_the_client_side_declares_an_exchange_to_publish_to(transport, connection, names):
    exchange, queue = names("events"), names()
    transport.declare_exchange(exchange, "topic", durable=False)
    transport.declare_exchange(exchange, "topic", durable=False)  # again: harmless
    transport.publish(b"lost", {}, exchange=exchange, routing_key="task.sent")  # nobody bound: dropped
    received: list[Delivery] = []
    connection.declare(QueueSpec(queue, exchange=exchange, exchange_type="topic", exchange_durable=False,
                                 routing_key="task.*", durable=False, auto_delete=True))
    connection.consume(queue, received.append, lambda queue: None, no_ack=True)
    transport.publish(b"kept", {}, exchange=exchange, routing_key="task.sent")
    wait_until(connection, lambda: received)
    assert [d.body for d in received] == [b"kept"]


@pytest.mark.broker
def test_an_isolated_declare_refused_leaves_the_connection_usable(broker_url, unique_queue):
    """amqp only: memory:// does not model exclusive queues. A worker whose node name is taken must get an
    error for its mailbox and go on working (Celery's worker warns and runs without remote control)."""
    transport = AmqpTransport(broker_url)
    holder, other = transport.connection(), transport.connection()
    holder.connect()
    other.connect()
    try:
        # The exclusive queue goes with its connection: it is never handed to unique_queue for deletion.
        mailbox, tasks = f"minicelery-mailbox-{uuid.uuid4().hex[:12]}", unique_queue()
        spec = QueueSpec(mailbox, exchange="", durable=False, auto_delete=True, exclusive=True)
        holder.declare(spec, isolated=True)
        with pytest.raises(OperationalError) as refused:
            other.declare(spec, isolated=True)
        assert refused.value.reason is not None and refused.value.reason.startswith("405")
        assert other.is_open
        received = consumed(other, tasks)  # the main channel is untouched
        other.publish(b"still here", {}, routing_key=tasks)
        wait_until(other, lambda: received)
        other.ack(received[0].delivery_tag)
        other.declare(QueueSpec(unique_queue(), exchange="", durable=False, auto_delete=True),
                      isolated=True)  # a new side channel
    finally:
        holder.close()
        other.close()
        transport.close()
