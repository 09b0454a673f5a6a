"""minicelery.amqp against a real broker: what goes on the wire, what is declared, and how it fails.

Everything minicelery publishes or declares is read back with plain pika (or the broker's admin interface:
``rabbitmqctl``, or the embedded broker's control socket, through ``broker_admin``), so these
tests check the broker's view, not our own. One exception, by design: pika decodes an AMQP double header
truncated to an int (pika 1.4.4 as it ships, which minicelery leaves alone), so a float header is checked
on the bytes minicelery writes, not on what plain pika reads back.
"""

from __future__ import annotations

import importlib.util
import json
import os
import select
import socket
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from types import ModuleType, SimpleNamespace
from typing import Any

import pika
import pika.data
import pika.spec
import pytest
from broker_admin import (
    MASKED_URL,
    amqp_sockets,
    close_connection,
    list_channels,
    list_connections,
    list_queues,
)

import minicelery
from minicelery.amqp import AmqpConnection, AmqpTransport
from minicelery.amqp.wire import Properties
from minicelery.backends import DisabledBackend, RPCBackend, backend_for
from minicelery.exceptions import EncodeError, ImproperlyConfigured, OperationalError, TimeoutError
from minicelery.transport import Delivery, QueueSpec

pytestmark = pytest.mark.broker


def _get(channel: Any, queue: str, timeout: float = 10.0) -> tuple[Any, Any, bytes]:
    """``basic_get`` one message from ``queue``, polling until ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        method, props, body = channel.basic_get(queue, auto_ack=True)
        if method is not None:
            return method, props, body
        time.sleep(0.01)
    raise AssertionError(f"no message arrived on {queue} within {timeout}s")


def _wait_for_count(channel: Any, queue: str, count: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while channel.queue_declare(queue, passive=True).method.message_count != count:
        assert time.monotonic() < deadline, f"{queue} never held {count} messages"
        time.sleep(0.01)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pristine(module: ModuleType) -> ModuleType:
    """A fresh copy of ``module`` executed from its file, apart from the one in ``sys.modules``."""
    spec = importlib.util.spec_from_file_location(f"pristine_{module.__name__}", module.__file__)
    assert spec is not None and spec.loader is not None
    copy = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(copy)
    return copy


@pytest.fixture
def broker(broker_url: str) -> Iterator[AmqpTransport]:
    client = AmqpTransport(broker_url)
    yield client
    client.close()


@pytest.fixture
def worker(broker_url: str) -> Iterator[AmqpConnection]:
    """A connected AmqpConnection, closed at teardown."""
    connection = AmqpConnection(broker_url)
    connection.connect()
    yield connection
    connection.close()


def _wait_until(connection: AmqpConnection, condition: Callable[[], Any], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition never came true"
        connection.wait(0.1)


# -- the wire ----------------------------------------------------------------------------------------------


def test_publish_round_trips_properties_and_headers(broker, unique_queue, pika_channel):
    queue = unique_queue()
    headers = {
        "lang": "py", "task": "proj.add", "accent": "é", "retries": 0, "big": 2**40, "negative": -3,
        "yes": True, "no": False, "shadow": None, "mixed": [1, "a", None, [2, {"k": "v"}]], "stamps": {},
        "nested": {"a": {"b": [1, {"c": None}]}},
    }
    properties = {
        "content_type": "application/json", "content_encoding": "utf-8", "delivery_mode": 2,
        "correlation_id": str(uuid.uuid4()), "reply_to": str(uuid.uuid4()), "priority": 3,
        "expiration": "60000", "headers": headers,
    }
    broker.publish(b'[[2, 3], {}, {}]', properties, routing_key=queue, declare=[QueueSpec(queue)])

    method, props, body = _get(pika_channel, queue)
    assert body == b'[[2, 3], {}, {}]'
    assert (method.exchange, method.routing_key) == ("", queue)
    for name, value in properties.items():
        assert getattr(props, name) == value, name


def _read_double(table: bytes, name: str) -> float:
    """The double stored under top-level key ``name`` of an encoded table, read as py-amqp reads 'd'.

    Walks only the value kinds the test writes (S, I, d, A of those), so it needs no codec of ours."""
    (size,), offset = struct.unpack_from(">I", table), 4
    end = offset + size
    while offset < end:
        length = table[offset]
        key = table[offset + 1:offset + 1 + length].decode()
        offset += 1 + length
        kind = table[offset:offset + 1]
        if key == name:
            assert kind == b"d", f"{name} was written as {kind!r}, not as an AMQP double"
            return float(struct.unpack_from(">d", table, offset + 1)[0])
        offset += 1 + {b"S": 4 + struct.unpack_from(">I", table, offset + 1)[0], b"I": 4, b"d": 8,
                       b"A": 4 + struct.unpack_from(">I", table, offset + 1)[0]}[kind]
    raise AssertionError(f"{name} is not in the table")


def test_float_headers_travel_as_doubles_and_plain_pika_truncates_them(broker, unique_queue, pika_channel):
    queue = unique_queue()
    headers = {"task": "proj.add", "ratio": 1.5, "tiny": -2.5e-300, "timelimit": [30.5, None]}
    encoded = b"".join(Properties(content_type="application/json", headers=headers).encode())
    # flags (2 bytes), content_type as a short string, then the headers table
    table = encoded[2 + 1 + len("application/json"):]
    assert _read_double(table, "ratio") == 1.5
    assert _read_double(table, "tiny") == -2.5e-300
    assert struct.pack(">cd", b"d", 30.5) in table  # inside the timelimit array

    broker.publish(b"x", {"content_type": "application/json", "headers": headers}, routing_key=queue,
                   declare=[QueueSpec(queue)])
    _method, props, _body = _get(pika_channel, queue)
    # pika as it ships: a double header arrives as an int; minicelery does not change that for anyone.
    assert props.headers == {"task": "proj.add", "ratio": 1, "tiny": 0, "timelimit": [30, None]}


@pytest.mark.parametrize("headers", [{"n": float("inf")}, {"n": [float("nan")]}, {"n": 2**64},
                                     {"n": -(2**63) - 1}, {7: "x"}, {"n": {1, 2}}, {"x" * 256: 1}])
def test_a_header_that_cannot_travel_is_refused_before_anything_is_sent(broker, unique_queue, pika_channel,
                                                                        headers):
    queue = unique_queue()
    with pytest.raises(EncodeError, match="AMQP headers cannot hold"):
        broker.publish(b"refused", {"headers": headers}, routing_key=queue, declare=[QueueSpec(queue)])
    # The connection is unharmed (RabbitMQ closes a connection that sends it an infinite double) ...
    broker.publish(b"next", {"headers": {"n": 1}}, routing_key=queue, declare=[QueueSpec(queue)])
    assert _get(pika_channel, queue)[2] == b"next"  # ... and the refused message never left
    assert pika_channel.queue_declare(queue, passive=True).method.message_count == 0


def test_pika_is_left_as_it_ships(broker, broker_url, unique_queue, pika_channel):
    """No module patching: after minicelery published (floats included) and consumed, pika's codec is the
    code in pika's own files, and plain pika still refuses a float header as it always did."""
    queue = unique_queue()
    assert minicelery  # imported above, as an app would
    broker.publish(b"x", {"headers": {"f": 1.5, "s": "t"}}, routing_key=queue, declare=[QueueSpec(queue)])
    connection = AmqpConnection(broker_url)
    connection.connect()
    received: list[Delivery] = []
    try:
        connection.consume(queue, received.append, lambda queue: None)
        _wait_until(connection, lambda: received)
    finally:
        connection.close()
    data, spec = _pristine(pika.data), _pristine(pika.spec)
    for name in ("encode_value", "decode_value", "encode_table", "decode_table", "encode_short_string",
                 "decode_short_string"):
        assert getattr(pika.data, name).__module__ == "pika.data", name
        assert getattr(pika.data, name).__code__ == getattr(data, name).__code__, name
    for method in ("encode", "decode"):
        assert getattr(pika.spec.BasicProperties, method).__code__ == \
            getattr(spec.BasicProperties, method).__code__
    with pytest.raises(pika.exceptions.UnsupportedAMQPFieldException):
        pika_channel.basic_publish("", queue, b"y", pika.BasicProperties(headers={"f": 1.5}))


# -- declarations -------------------------------------------------------------------------------------------


def test_declarations_are_celerys(broker, unique_queue, pika_channel):
    queue = unique_queue()
    broker.publish(b"first", {}, routing_key=queue, declare=[QueueSpec(queue)])
    # Celery's own declarations (spec §8.2) must be equivalent, or RabbitMQ answers PRECONDITION_FAILED.
    pika_channel.exchange_declare(queue, exchange_type="direct", durable=True, auto_delete=False)
    pika_channel.queue_declare(queue, durable=True, exclusive=False, auto_delete=False, arguments=None)
    # The binding exists: exchange=queue, routing_key=queue lands in the queue.
    pika_channel.basic_publish(exchange=queue, routing_key=queue, body=b"via the exchange")
    assert _get(pika_channel, queue)[2] == b"first"
    assert _get(pika_channel, queue)[2] == b"via the exchange"
    # And the check above is meaningful: a different durability is refused.
    with pytest.raises(pika.exceptions.ChannelClosedByBroker, match="PRECONDITION_FAILED"):
        pika_channel.queue_declare(queue, durable=False)


def test_the_worker_connection_declares_as_celery_does(worker, unique_queue, pika_channel):
    queue = unique_queue()
    worker.declare(QueueSpec(queue))
    pika_channel.exchange_declare(queue, exchange_type="direct", durable=True, auto_delete=False)
    pika_channel.queue_declare(queue, durable=True, exclusive=False, auto_delete=False, arguments=None)
    pika_channel.basic_publish(exchange=queue, routing_key=queue, body=b"bound")
    assert _get(pika_channel, queue)[2] == b"bound"


def test_default_exchange_is_never_declared(broker, worker, unique_queue, pika_channel):
    queue, other = unique_queue(), unique_queue()
    # Declaring exchange '' would be refused with ACCESS_REFUSED; publishing proves it was skipped.
    broker.publish(b"x", {}, routing_key=queue, declare=[QueueSpec(queue, exchange="")])
    assert _get(pika_channel, queue)[2] == b"x"
    worker.declare(QueueSpec(other, exchange=""))
    assert worker.is_open
    assert pika_channel.queue_declare(other, passive=True).method.message_count == 0


def test_declared_once_per_connection(broker, unique_queue, pika_channel):
    queue = unique_queue()
    spec = QueueSpec(queue)
    broker.publish(b"1", {}, routing_key=queue, declare=[spec])
    pika_channel.queue_delete(queue)
    broker.publish(b"2", {}, routing_key=queue, declare=[spec])  # cached: not declared again, so lost
    broker.close()
    broker.publish(b"3", {}, routing_key=queue, declare=[spec])  # a new connection declares again
    _wait_for_count(pika_channel, queue, 1)
    assert _get(pika_channel, queue)[2] == b"3"


def test_an_incompatible_declaration_is_an_operational_error_and_the_next_call_works(broker, worker,
                                                                                   unique_queue, pika_channel):
    queue = unique_queue()
    pika_channel.queue_declare(queue, durable=False)  # Celery's queues are durable: RabbitMQ refuses
    with pytest.raises(OperationalError, match="closed the channel") as info:
        broker.publish(b"x", {}, routing_key=queue, declare=[QueueSpec(queue)])
    assert "PRECONDITION_FAILED" in (info.value.reason or "")
    broker.publish(b"undeclared", {}, routing_key=queue)  # a new channel; nothing declared, still routed
    assert _get(pika_channel, queue)[2] == b"undeclared"
    with pytest.raises(OperationalError, match="PRECONDITION_FAILED"):
        worker.declare(QueueSpec(queue))
    assert not worker.is_open
    worker.connect()
    worker.declare(QueueSpec(queue, durable=False))
    assert worker.is_open


def test_reply_queue_is_declared_like_celerys(broker, unique_queue, pika_channel):
    name, unconsumed = unique_queue("reply"), unique_queue("reply")
    broker.declare_reply_queue(name, 86400000)
    broker.declare_reply_queue(unconsumed, None, consume=False)
    # Celery's own declaration (spec §9.1) is equivalent: no PRECONDITION_FAILED.
    pika_channel.queue_declare(name, durable=True, auto_delete=True, exclusive=False,
                               arguments={"x-expires": 86400000})
    rows = {row["name"]: row for row in list_queues() if row["name"] in (name, unconsumed)}
    row = rows[name]
    assert (row["durable"], row["auto_delete"], row["exclusive"]) == (True, True, False)
    # the admin interface lists each argument as [name, type, value], as rabbitmqctl does
    assert [(entry[0], entry[-1]) for entry in row["arguments"]] == [("x-expires", 86400000)]
    assert row["consumers"] == 1
    assert (rows[unconsumed]["consumers"], rows[unconsumed]["arguments"]) == (0, [])


# -- rpc replies ---------------------------------------------------------------------------------------------


def test_drain_replies_in_any_order_then_times_out(broker, unique_queue, pika_channel):
    name = unique_queue("reply")
    broker.declare_reply_queue(name, 60000)
    assert broker.drain_replies(name, 0) == []
    for task_id in ("c", "a", "b"):
        pika_channel.basic_publish("", name, f'"{task_id}"'.encode(), pika.BasicProperties(
            correlation_id=task_id, content_type="application/json", content_encoding="utf-8"))
    replies: list[Any] = []
    while len(replies) < 3:
        got = broker.drain_replies(name, 5)
        assert got, "a reply was lost"
        replies += got
    assert [r.correlation_id for r in replies] == ["c", "a", "b"]  # arrival order; nothing dropped
    assert [r.body for r in replies] == [b'"c"', b'"a"', b'"b"']
    assert {(r.content_type, r.content_encoding) for r in replies} == {("application/json", "utf-8")}
    started = time.monotonic()
    assert broker.drain_replies(name, 0.2) == []
    assert 0.2 <= time.monotonic() - started < 5


def test_drain_replies_needs_a_declared_queue(broker, unique_queue):
    with pytest.raises(ValueError, match="declare_reply_queue"):
        broker.drain_replies("never-declared", 0)
    name = unique_queue("reply")
    broker.declare_reply_queue(name, None)
    errors: list[BaseException] = []

    def other_thread() -> None:  # declared in one thread: another thread has not declared it
        try:
            broker.drain_replies(name, 0)
        except ValueError as exc:
            errors.append(exc)
        finally:
            broker.close()

    thread = threading.Thread(target=other_thread)
    thread.start()
    thread.join(timeout=30)
    assert len(errors) == 1


# -- failures ------------------------------------------------------------------------------------------------


def test_broker_down_fails_fast_with_masked_url():
    port = _closed_port()
    url = f"amqp://guest:s3cret@127.0.0.1:{port}//"
    masked = f"amqp://guest:**@127.0.0.1:{port}//"
    transport = AmqpTransport(url)
    started = time.monotonic()
    with pytest.raises(OperationalError) as info:
        transport.publish(b"x", {}, routing_key="q")
    with pytest.raises(OperationalError) as worker_info:
        AmqpConnection(url).connect()
    with pytest.raises(OperationalError) as from_transport:
        transport.connection().connect()
    assert time.monotonic() - started < 5
    assert transport.url == masked
    for error in (info.value, worker_info.value, from_transport.value):
        assert str(error) == f"Cannot connect to {masked}: [Errno 111] Connection refused"
        assert (error.url, error.reason) == (masked, "[Errno 111] Connection refused")
        assert "s3cret" not in str(error) + repr(error.args)


def test_verbs_before_connect_raise_operational_error(broker_url):
    connection = AmqpConnection(broker_url)
    assert not connection.is_open
    for verb in (lambda: connection.wait(0), lambda: connection.qos(1), lambda: connection.ack(1),
                 lambda: connection.declare(QueueSpec("never"))):
        with pytest.raises(OperationalError, match="call connect"):
            verb()


def test_each_thread_has_its_own_connection_and_nothing_is_lost(broker, unique_queue, pika_channel):
    queue = unique_queue()
    spec, per_thread = QueueSpec(queue), 250
    connections: dict[int, set[int]] = {}
    barrier = threading.Barrier(4)
    seen: list[Any] = []

    def publish_many(n: int) -> None:
        barrier.wait(timeout=10)
        for i in range(per_thread):
            broker.publish(f"{n}-{i}".encode(), {}, routing_key=queue, declare=[spec])
            connections.setdefault(n, set()).add(id(broker._state().link.connection))
        seen.append(broker._state().link.connection)  # keep it alive, so ids stay unique
        broker.close()

    threads = [threading.Thread(target=publish_many, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert all(len(ids) == 1 for ids in connections.values())  # one connection per thread...
    assert len({id(c) for c in seen}) == 4 == len(connections)  # ...and a different one in each
    _wait_for_count(pika_channel, queue, 4 * per_thread)


def _close_from_the_broker(local_port: int) -> None:
    (found,) = [row["id"] for row in list_connections() if row["peer_port"] == local_port]
    close_connection(found, "closed by a test")


def test_a_send_after_the_broker_closed_the_connection_is_not_swallowed(broker, unique_queue, pika_channel):
    queue = unique_queue()
    spec = QueueSpec(queue)
    before = amqp_sockets()
    broker.publish(b"one", {}, routing_key=queue, declare=[spec])
    ((port, fd),) = [(p, fd) for p, fd in amqp_sockets().items() if p not in before]
    link = broker._state().link
    _close_from_the_broker(port)
    assert select.select([fd], [], [], 10)[0], "the broker's connection.close never came"
    # The cached connection is gone: the send fails on it and is made once more on a new connection.
    broker.publish(b"two", {}, routing_key=queue, declare=[spec])
    assert broker._state().link is not link
    broker.publish(b"three", {}, routing_key=queue, declare=[spec])
    assert [_get(pika_channel, queue)[2] for _ in range(3)] == [b"one", b"two", b"three"]


def test_a_lost_connection_is_reported_by_purge_then_reopened(broker, unique_queue, pika_channel):
    queue = unique_queue()
    before = amqp_sockets()
    broker.publish(b"one", {}, routing_key=queue, declare=[QueueSpec(queue)])
    ((port, fd),) = [(p, fd) for p, fd in amqp_sockets().items() if p not in before]
    _close_from_the_broker(port)
    assert select.select([fd], [], [], 10)[0], "the broker's connection.close never came"
    with pytest.raises(OperationalError, match="lost") as info:
        broker.purge([queue])  # not retried: the caller hears of it ...
    assert info.value.url == MASKED_URL and info.value.reason
    assert broker.purge([queue]) == 1  # ... and the next call reconnects


def test_purge_is_not_fooled_by_a_late_error_of_an_earlier_publish(broker, unique_queue, pika_channel):
    queue, missing = unique_queue(), unique_queue()
    for _ in range(3):
        broker.publish(b"x", {}, routing_key=queue, declare=[QueueSpec(queue)])
    # Without confirms the broker answers this one by closing the channel (404, no exchange), later.
    broker.publish(b"lost", {}, exchange=missing, routing_key=queue)
    assert broker.purge([queue]) == 3  # not taken for "no such queue"
    assert broker.purge([missing]) == 0  # a queue that is really missing still counts 0


def test_forked_child_opens_its_own_connection(broker, unique_queue, pika_channel):
    queue = unique_queue()
    spec = QueueSpec(queue)
    broker.publish(b"parent-before", {}, routing_key=queue, declare=[spec])
    parent_connection = broker._state().link.connection
    pid = os.fork()
    if pid == 0:  # the child: publish through the inherited transport, then leave without cleanup
        code = 1
        try:
            broker.publish(b"child", {}, routing_key=queue, declare=[spec])
            code = 0 if broker._state().link.connection is not parent_connection else 2
        finally:
            os._exit(code)
    assert os.waitpid(pid, 0)[1] == 0
    broker.publish(b"parent-after", {}, routing_key=queue, declare=[spec])
    assert broker._state().link.connection is parent_connection and parent_connection.is_open
    _wait_for_count(pika_channel, queue, 3)
    assert sorted(_get(pika_channel, queue)[2] for _ in range(3)) == [b"child", b"parent-after",
                                                                      b"parent-before"]


def test_confirm_publish_raises_when_the_broker_refuses(broker_url, unique_queue, pika_channel):
    queue = unique_queue()
    pika_channel.queue_declare(queue, arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
    confirming = AmqpTransport(broker_url, transport_options={"confirm_publish": True})
    try:
        confirming.publish(b"fits", {}, routing_key=queue)
        with pytest.raises(OperationalError, match="did not accept") as nacked:
            confirming.publish(b"nacked: the queue is full", {}, routing_key=queue)
        assert nacked.value.url == MASKED_URL
        with pytest.raises(OperationalError, match="did not accept"):
            confirming.publish(b"returned: unroutable", {}, routing_key=unique_queue())
        declared = unique_queue()
        confirming.publish(b"routable", {}, routing_key=declared, declare=[QueueSpec(declared)])
        assert _get(pika_channel, declared)[2] == b"routable"
    finally:
        confirming.close()


def test_heartbeat_is_passed_through(broker_url):
    assert AmqpConnection(heartbeat=None)._params.heartbeat == 0  # --without-heartbeat
    assert AmqpConnection(heartbeat=0)._params.heartbeat == 0
    assert AmqpTransport(heartbeat=120)._params.heartbeat == 120
    assert AmqpTransport(heartbeat=120).connection()._params.heartbeat == 120
    assert AmqpTransport(heartbeat=120).connection(heartbeat=7)._params.heartbeat == 7
    connection = AmqpTransport(broker_url, heartbeat=30).connection()
    connection.connect()
    try:  # the broker's view: the heartbeat negotiated on the wire
        assert 30 in {row["timeout"] for row in list_connections()}
    finally:
        connection.close()


# -- the worker's consuming connection ------------------------------------------------------------------------


def _global_prefetch_counts() -> set[int]:
    return {row["global_prefetch_count"] for row in list_channels()}


def test_worker_connection_consumes_acks_and_rejects(broker_url, unique_queue, pika_channel):
    queue = unique_queue()
    worker = AmqpConnection(broker_url, heartbeat=30)
    worker.connect()
    try:
        worker.qos(37)
        worker.declare(QueueSpec(queue))
        received: list[Delivery] = []
        tag = worker.consume(queue, received.append, lambda queue: None)
        assert isinstance(tag, str) and tag
        pika_channel.basic_publish("", queue, b"one", pika.BasicProperties(
            content_type="application/json", correlation_id="id-1", headers=None))
        _wait_until(worker, lambda: received)
        first = received.pop()
        assert (first.body, first.exchange, first.routing_key) == (b"one", "", queue)
        assert not first.redelivered
        assert first.properties["headers"] == {} and first.properties["correlation_id"] == "id-1"
        worker.reject(first.delivery_tag, requeue=True)
        _wait_until(worker, lambda: received)
        again = received.pop()
        assert again.redelivered and again.body == b"one"
        assert 37 in _global_prefetch_counts()
        worker.ack(again.delivery_tag)
        worker.publish(b"result", {"correlation_id": "id-1", "delivery_mode": 1}, routing_key=queue)
        _wait_until(worker, lambda: received)
        result = received.pop()
        assert (result.body, result.properties["delivery_mode"]) == (b"result", 1)
        worker.reject(result.delivery_tag, requeue=False)
        worker.cancel_all()
        worker.wait(0.1)  # sends the reject
    finally:
        worker.close()
    assert not worker.is_open
    assert pika_channel.queue_declare(queue, passive=True).method.message_count == 0  # all settled


def test_wait_returns_early_on_a_delivery(worker, unique_queue, pika_channel):
    queue = unique_queue()
    worker.declare(QueueSpec(queue))
    received: list[Delivery] = []
    worker.consume(queue, received.append, lambda queue: None)
    pika_channel.basic_publish("", queue, b"wake up")
    started = time.monotonic()
    while not received:
        worker.wait(30)
        assert time.monotonic() - started < 10, "wait slept through a delivery"
    assert received[0].body == b"wake up"


def test_wait_returns_early_on_a_watched_descriptor(worker):
    read_end, write_end = os.pipe()
    ready: list[bytes] = []
    try:
        worker.watch(read_end, lambda: ready.append(os.read(read_end, 100)))
        worker.connect()  # the watch is kept across a reconnection
        os.write(write_end, b"job done")
        started = time.monotonic()
        while not ready:
            worker.wait(30)
            assert time.monotonic() - started < 10, "wait slept through the watched descriptor"
        assert ready == [b"job done"]
        worker.unwatch()
        os.write(write_end, b"unwatched")
        worker.wait(0.2)
        assert ready == [b"job done"]
        assert os.read(read_end, 100) == b"unwatched"  # left for its owner to read
    finally:
        worker.unwatch()
        os.close(read_end)
        os.close(write_end)


def test_a_queue_deleted_by_the_broker_cancels_its_consumer(worker, unique_queue, pika_channel):
    queue, kept = unique_queue(), unique_queue()
    cancelled: list[str] = []
    kept_cancelled: list[str] = []
    received: list[Delivery] = []
    worker.declare(QueueSpec(queue))
    worker.consume(queue, received.append, cancelled.append)
    worker.declare(QueueSpec(kept))
    worker.consume(kept, received.append, kept_cancelled.append)  # each consumer its own on_cancel
    pika_channel.queue_delete(queue)
    _wait_until(worker, lambda: cancelled or kept_cancelled)
    assert (cancelled, kept_cancelled) == ([queue], [])
    assert worker.is_open  # the connection and the other consumer live on
    pika_channel.basic_publish("", kept, b"still consumed")
    _wait_until(worker, lambda: received)
    assert received[0].routing_key == kept and cancelled == [queue]


def test_an_unknown_delivery_tag_closes_the_connection_and_connect_works_again(worker, unique_queue,
                                                                              pika_channel):
    queue = unique_queue()
    worker.declare(QueueSpec(queue))
    received: list[Delivery] = []
    worker.consume(queue, received.append, lambda queue: None)
    pika_channel.basic_publish("", queue, b"unsettled")
    _wait_until(worker, lambda: received)
    worker.ack(received[0].delivery_tag + 1000)  # the broker answers by closing the channel (406)
    with pytest.raises(OperationalError, match="unknown delivery tag") as info:
        _wait_until(worker, lambda: False, timeout=10)
    assert "PRECONDITION_FAILED" in (info.value.reason or "")
    assert info.value.url == MASKED_URL
    assert not worker.is_open
    with pytest.raises(OperationalError):
        worker.qos(1)
    worker.connect()
    assert worker.is_open
    received.clear()
    worker.consume(queue, received.append, lambda queue: None)
    _wait_until(worker, lambda: received)
    assert received[0].body == b"unsettled" and received[0].redelivered  # returned with the channel
    worker.ack(received[0].delivery_tag)


# -- the rpc:// result backend, over a real AmqpTransport -----------------------------------------------------


def _app(broker: AmqpTransport, oid: str, result_backend: str | None = "rpc://") -> Any:
    """Just what a backend reads from an app: its broker, its reply queue name, its settings."""
    conf = SimpleNamespace(result_backend=result_backend, result_expires=timedelta(days=1),
                           result_accept_content=None, accept_content=["json"])
    return SimpleNamespace(broker=broker, thread_oid=oid, reply_queue=oid, conf=conf)


def _reply(channel: Any, queue: str, task_id: str, status: str, result: Any = None, **props: Any) -> None:
    body = json.dumps({"status": status, "result": result, "traceback": None, "children": [],
                       "date_done": None, "task_id": task_id}).encode()
    props = {"content_type": "application/json", "content_encoding": "utf-8", **props}
    body = props.pop("body", body)
    channel.basic_publish("", queue, body, pika.BasicProperties(correlation_id=task_id, **props))


def test_rpc_backend_keeps_every_result_until_asked(broker, unique_queue, pika_channel, caplog):
    oid = unique_queue("reply")
    backend = backend_for(_app(broker, oid))
    assert isinstance(backend, RPCBackend) and backend.url == "rpc://"
    backend.prepare(oid)
    _reply(pika_channel, oid, "t1", "STARTED", {"pid": 1})
    _reply(pika_channel, oid, "t2", "SUCCESS", 2)
    _reply(pika_channel, oid, "bad", "SUCCESS", body=b"{not json")
    _reply(pika_channel, oid, "evil", "SUCCESS", content_type="application/x-python-serialize")
    _reply(pika_channel, oid, "t3", "STARTED")
    _reply(pika_channel, oid, "t1", "SUCCESS", 1)
    assert backend.wait_for("t1", timeout=5)["result"] == 1
    assert backend.get_meta("t2")["status"] == "SUCCESS"  # arrived while waiting for t1: kept
    assert backend.get_meta("t2") is None  # a ready result is handed out once
    assert backend.get_meta("t3")["status"] == "STARTED"
    assert backend.get_meta("t3")["status"] == "STARTED"  # the latest state stays known
    with pytest.raises(TimeoutError, match="The operation timed out."):
        backend.wait_for("t3", timeout=0.2)
    _reply(pika_channel, oid, "t3", "FAILURE", {"exc_type": "ValueError", "exc_message": ["x"]})
    assert backend.wait_for("t3", timeout=5)["status"] == "FAILURE"
    dropped = [r.getMessage() for r in caplog.records if r.name == "minicelery.backends"]
    assert len(dropped) == 2 and any("bad" in m for m in dropped) and any("evil" in m for m in dropped)


def test_backend_for_settings(broker):
    assert isinstance(backend_for(_app(broker, "x", None)), DisabledBackend)
    assert isinstance(backend_for(_app(broker, "x", "")), DisabledBackend)
    assert isinstance(backend_for(_app(broker, "x", "rpc")), RPCBackend)
    with pytest.raises(ImproperlyConfigured, match=r"'redis://:\*{8}@localhost:6379/0'.*rpc:// only"):
        backend_for(_app(broker, "x", "redis://:secret@localhost:6379/0"))
    disabled = backend_for(_app(broker, "x", None))
    disabled.prepare("x")
    assert disabled.get_meta("t") is None and disabled.url == "disabled://"
    with pytest.raises(NotImplementedError, match="^No result backend is configured.\nPlease see"):
        disabled.wait_for("t", timeout=1)
