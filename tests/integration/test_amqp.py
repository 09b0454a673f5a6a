"""minicelery.amqp against the real RabbitMQ: what goes on the wire, what is declared, and how it fails.

Everything minicelery publishes or declares is read back with plain pika, so these tests check the broker's
view, not our own.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pika
import pytest

from minicelery.amqp import Broker, Delivery, QueueSpec, WorkerConnection
from minicelery.backends import DisabledBackend, RPCBackend, backend_for
from minicelery.exceptions import ImproperlyConfigured, OperationalError, TimeoutError

pytestmark = pytest.mark.broker


def _get(channel: Any, queue: str, timeout: float = 5.0) -> tuple[Any, Any, bytes]:
    """``basic_get`` one message from ``queue``, polling until ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        method, props, body = channel.basic_get(queue, auto_ack=True)
        if method is not None:
            return method, props, body
    raise AssertionError(f"no message arrived on {queue} within {timeout}s")


def _wait_for_count(channel: Any, queue: str, count: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while channel.queue_declare(queue, passive=True).method.message_count != count:
        assert time.monotonic() < deadline, f"{queue} never held {count} messages"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def broker(broker_url: str) -> Any:
    client = Broker(broker_url)
    yield client
    client.close()


def test_publish_round_trips_properties_and_headers(broker, unique_queue, pika_channel):
    queue = unique_queue()
    headers = {
        "lang": "py", "task": "proj.add", "accent": "é", "retries": 0, "big": 2**40, "negative": -3,
        "ratio": 1.5, "yes": True, "no": False, "shadow": None, "timelimit": [30.5, None],
        "mixed": [1, "a", None, [2, {"k": "v"}]], "stamps": {}, "nested": {"a": {"b": [1, {"c": None}]}},
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


def test_default_exchange_is_never_declared(broker, unique_queue, pika_channel):
    queue = unique_queue()
    # Declaring exchange '' would be refused with ACCESS_REFUSED; publishing proves it was skipped.
    broker.publish(b"x", {}, routing_key=queue, declare=[QueueSpec(queue, exchange="")])
    assert _get(pika_channel, queue)[2] == b"x"


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


def test_reply_queue_is_declared_like_celerys(broker, unique_queue, pika_channel):
    name = unique_queue("reply")
    broker.declare_reply_queue(name, 86400000)
    # Celery's own declaration (spec §9.1) is equivalent: no PRECONDITION_FAILED.
    pika_channel.queue_declare(name, durable=True, auto_delete=True, exclusive=False,
                               arguments={"x-expires": 86400000})
    out = subprocess.run(
        ["rabbitmqctl", "list_queues", "-q", "--formatter", "json",
         "name", "durable", "auto_delete", "exclusive", "arguments", "consumers"],
        check=True, capture_output=True, text=True, timeout=60).stdout
    (row,) = [q for q in json.loads(out) if q["name"] == name]
    assert (row["durable"], row["auto_delete"], row["exclusive"]) == (True, True, False)
    # rabbitmqctl lists each argument as [name, type, value]
    assert [(entry[0], entry[-1]) for entry in row["arguments"]] == [("x-expires", 86400000)]
    assert row["consumers"] == 1


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
    assert {r.body for r in replies} == {b'"a"', b'"b"', b'"c"'}
    assert {(r.content_type, r.content_encoding) for r in replies} == {("application/json", "utf-8")}
    started = time.monotonic()
    assert broker.drain_replies(name, 0.2) == []
    assert 0.2 <= time.monotonic() - started < 2


def test_drain_replies_needs_a_declared_queue(broker):
    with pytest.raises(ValueError, match="declare_reply_queue"):
        broker.drain_replies("never-declared", 0)


def test_broker_down_fails_fast_with_masked_url():
    port = _closed_port()
    url = f"amqp://guest:s3cret@127.0.0.1:{port}//"
    started = time.monotonic()
    with pytest.raises(OperationalError) as info:
        Broker(url).publish(b"x", {}, routing_key="q")
    with pytest.raises(OperationalError) as worker_info:
        WorkerConnection(url).connect()
    assert time.monotonic() - started < 2
    for error in (info.value, worker_info.value):
        masked = f"amqp://guest:**@127.0.0.1:{port}//"
        assert str(error) == f"Cannot connect to {masked}: [Errno 111] Connection refused"
        assert "s3cret" not in str(error)


def test_each_thread_has_its_own_connection_and_nothing_is_lost(broker, unique_queue, pika_channel):
    queue = unique_queue()
    spec, per_thread = QueueSpec(queue), 250
    connections: dict[int, set[int]] = {}
    barrier = threading.Barrier(4)

    def publish_many(n: int) -> None:
        barrier.wait(timeout=10)
        for i in range(per_thread):
            broker.publish(f"{n}-{i}".encode(), {}, routing_key=queue, declare=[spec])
            connections.setdefault(n, set()).add(id(broker._state().link.connection))
        seen.append(broker._state().link.connection)  # keep it alive, so ids stay unique
        broker.close()

    seen: list[Any] = []
    threads = [threading.Thread(target=publish_many, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert all(len(ids) == 1 for ids in connections.values())  # one connection per thread...
    assert len({id(c) for c in seen}) == 4 == len(connections)  # ...and a different one in each
    _wait_for_count(pika_channel, queue, 4 * per_thread)


def test_a_full_socket_buffer_hands_the_rest_of_a_message_to_pika_intact(broker, unique_queue, pika_channel):
    queue = unique_queue()
    spec = QueueSpec(queue)
    broker.publish(b"first", {}, routing_key=queue, declare=[spec])  # connects and declares
    link = broker._state().link
    # A tiny send buffer: most of each 100 kB message does not fit into one send(), and pika sends the rest.
    link.connection._impl._transport._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    bodies = [bytes([n]) * 100_000 for n in range(40)]
    for body in bodies:
        broker.publish(body, {"correlation_id": str(len(body))}, routing_key=queue, declare=[spec])
    received = [get_body(pika_channel, queue) for _ in range(41)]
    assert received == [b"first", *bodies]


def test_a_send_after_the_broker_closed_the_connection_is_not_swallowed(broker, unique_queue, pika_channel):
    queue = unique_queue()
    spec = QueueSpec(queue)
    broker.publish(b"one", {}, routing_key=queue, declare=[spec])
    link = broker._state().link
    sock = link.connection._impl._transport._sock
    port = sock.getsockname()[1]
    listed = subprocess.run(["rabbitmqctl", "list_connections", "-q", "pid", "peer_port"],
                            check=True, capture_output=True, text=True, timeout=60).stdout
    (pid,) = [line.split()[0] for line in listed.splitlines() if line.split()[-1:] == [str(port)]]
    subprocess.run(["rabbitmqctl", "close_connection", pid, "closed by a test"], check=True,
                   capture_output=True, timeout=60)
    assert select.select([sock], [], [], 10)[0], "the broker's connection.close never came"
    link._next_turn = float("inf")  # no periodic pika turn: only the broker's close may divert this send
    broker.publish(b"two", {}, routing_key=queue, declare=[spec])  # fails on the old link, goes on a new one
    assert broker._state().link is not link
    assert [get_body(pika_channel, queue), get_body(pika_channel, queue)] == [b"one", b"two"]


def get_body(channel: Any, queue: str, timeout: float = 10.0) -> bytes:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        method, _props, body = channel.basic_get(queue, auto_ack=True)
        if method is not None:
            return body
        time.sleep(0.01)
    raise AssertionError(f"nothing arrived on {queue}")


def test_forked_child_opens_its_own_connection(broker, unique_queue, pika_channel):
    queue = unique_queue()
    spec = QueueSpec(queue)
    broker.publish(b"parent-before", {}, routing_key=queue, declare=[spec])
    parent_connection = broker._state().link.connection
    pid = os.fork()
    if pid == 0:  # the child: publish through the inherited Broker, then leave without cleanup
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


def test_confirm_publish_raises_when_the_broker_refuses(broker_url, unique_queue, pika_channel):
    queue = unique_queue()
    pika_channel.queue_declare(queue, arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
    confirming = Broker(broker_url, transport_options={"confirm_publish": True})
    try:
        confirming.publish(b"fits", {}, routing_key=queue)
        with pytest.raises(OperationalError, match="did not accept"):
            confirming.publish(b"nacked: the queue is full", {}, routing_key=queue)
        with pytest.raises(OperationalError, match="did not accept"):
            confirming.publish(b"returned: unroutable", {}, routing_key=unique_queue())
        declared = unique_queue()
        confirming.publish(b"routable", {}, routing_key=declared, declare=[QueueSpec(declared)])
    finally:
        confirming.close()


def test_worker_connection_consumes_acks_and_rejects(broker_url, unique_queue, pika_channel):
    queue = unique_queue()
    worker = WorkerConnection(broker_url, heartbeat=30)
    worker.connect()
    try:
        worker.qos(37)
        worker.declare(QueueSpec(queue))
        received: list[Delivery] = []
        tag = worker.consume(queue, received.append)
        assert isinstance(tag, str)
        pika_channel.basic_publish("", queue, b"one", pika.BasicProperties(
            content_type="application/json", correlation_id="id-1", headers=None))
        _process_until(worker, lambda: received)
        first = received.pop()
        assert (first.body, first.exchange, first.routing_key) == (b"one", "", queue)
        assert not first.redelivered
        assert first.properties["headers"] == {} and first.properties["correlation_id"] == "id-1"
        worker.reject(first.delivery_tag, requeue=True)
        _process_until(worker, lambda: received)
        again = received.pop()
        assert again.redelivered and again.body == b"one"
        assert _global_prefetch_counts() >= {37}
        worker.ack(again.delivery_tag)
        worker.publish(b"result", {"correlation_id": "id-1", "delivery_mode": 1}, routing_key=queue)
        _process_until(worker, lambda: received)
        assert received.pop().properties["delivery_mode"] == 1
        worker.cancel_all()
    finally:
        worker.close()
    assert not worker.is_open


@contextlib.contextmanager
def _consuming(broker_url: str, queue: str) -> Iterator[tuple[WorkerConnection, list[Delivery]]]:
    """A WorkerConnection consuming ``queue`` into a list, closed at the end."""
    worker = WorkerConnection(broker_url)
    worker.connect()
    received: list[Delivery] = []
    try:
        worker.declare(QueueSpec(queue))
        worker.consume(queue, received.append)
        yield worker, received
        worker.cancel_all()
    finally:
        worker.close()


def test_fileno_turns_readable_when_a_delivery_arrives(broker_url, unique_queue, pika_channel):
    queue = unique_queue()
    with _consuming(broker_url, queue) as (worker, received):
        assert worker.has_buffered_input  # consuming ran pika's I/O loop: the socket may not tell
        worker.process_events(0)
        assert not worker.has_buffered_input
        assert select.select([worker.fileno()], [], [], 0)[0] == []
        pika_channel.basic_publish("", queue, b"[]", pika.BasicProperties(content_type="application/json"))
        deadline = time.monotonic() + 10
        while not received:  # wait on the socket alone, as the worker does
            remaining = deadline - time.monotonic()
            assert remaining > 0 and select.select([worker.fileno()], [], [], remaining)[0]
            worker.process_events(0)
        assert received[0].body == b"[]"
    with pytest.raises(OperationalError, match="call connect"):
        worker.fileno()


def test_a_batch_sends_its_publishes_and_acks_in_order_when_it_ends(broker_url, unique_queue, pika_channel):
    queue, results = unique_queue(), unique_queue()
    pika_channel.queue_declare(results, durable=True)
    with _consuming(broker_url, queue) as (worker, received):
        pika_channel.basic_publish("", queue, b"task", pika.BasicProperties(content_type="application/json"))
        _process_until(worker, lambda: received)
        with worker.batch():
            for n in range(3):
                worker.publish(f"result {n}".encode(), {"correlation_id": str(n)}, routing_key=results)
            worker.ack(received[0].delivery_tag)
        bodies = []
        deadline = time.monotonic() + 10
        while len(bodies) < 3 and time.monotonic() < deadline:
            method, _props, body = pika_channel.basic_get(results, auto_ack=True)
            if method is not None:
                bodies.append(body)
        assert bodies == [b"result 0", b"result 1", b"result 2"]
    # closed: an unacked task would be back in its queue now
    assert pika_channel.queue_declare(queue, passive=True).method.message_count == 0


def test_heartbeat_is_passed_through():
    assert WorkerConnection(heartbeat=None)._params.heartbeat == 0  # --without-heartbeat
    assert WorkerConnection(heartbeat=0)._params.heartbeat == 0
    assert Broker(heartbeat=120)._params.heartbeat == 120


def _process_until(worker: WorkerConnection, condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "nothing was delivered"
        worker.process_events(0.1)


def _global_prefetch_counts() -> set[int]:
    command = ["rabbitmqctl", "list_channels", "-q", "--formatter", "json", "global_prefetch_count"]
    out = subprocess.run(command, check=True, capture_output=True, text=True, timeout=60).stdout
    return {row["global_prefetch_count"] for row in json.loads(out)}


# -- the rpc:// result backend, over a real Broker ---------------------------------------------------------


def _app(broker: Broker, oid: str, result_backend: str | None = "rpc://") -> Any:
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
