"""``delay()``/``send_task`` through the app, read back with plain pika: routing and failure modes."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from minicelery import Celery
from minicelery.exceptions import EncodeError, OperationalError

pytestmark = pytest.mark.broker


def get_one(channel, queue, timeout=5.0):
    """The next message on ``queue`` (waits for it: a publish is asynchronous on the broker side)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        method, props, body = channel.basic_get(queue, auto_ack=True)
        if method is not None:
            return method, props, body
        channel.connection.process_data_events(time_limit=0.05)
    raise AssertionError(f"no message on {queue} within {timeout}s")


@pytest.fixture
def app(broker_url):
    app = Celery("sendtest", broker=broker_url)
    yield app
    app.close()


def test_delay_goes_to_the_default_queue_as_celery_writes_it(app, unique_queue, pika_channel):
    queue = unique_queue("default")
    app.conf.task_default_queue = queue

    @app.task
    def add(x, y):
        return x + y

    result = add.delay(2, 3)
    method, props, body = get_one(pika_channel, queue)
    assert (method.exchange, method.routing_key) == ("", queue)
    assert body == b'[[2, 3], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]'
    assert props.correlation_id == props.headers["id"] == props.headers["root_id"] == result.id
    assert (props.content_type, props.content_encoding, props.delivery_mode) == (
        "application/json", "utf-8", 2)
    assert props.headers["task"] == add.name and props.reply_to == app.reply_queue


def test_queue_option_and_task_routes(app, unique_queue, pika_channel):
    routed, explicit = unique_queue("routed"), unique_queue("explicit")
    app.conf.task_routes = {"sendtest.routed.*": {"queue": routed}}
    app.send_task("sendtest.routed.one", (1,))
    app.send_task("anything", (2,), queue=explicit)
    assert json.loads(get_one(pika_channel, routed)[2])[0] == [1]
    assert json.loads(get_one(pika_channel, explicit)[2])[0] == [2]


def test_msgpack_serializer(app, unique_queue, pika_channel):
    queue = unique_queue("msgpack")
    app.send_task("t", (2, 3), queue=queue, serializer="msgpack")
    _, props, body = get_one(pika_channel, queue)
    assert (props.content_type, props.content_encoding) == ("application/x-msgpack", "binary")
    assert body.hex().startswith("939202038084a963616c6c6261636b73c0")


def test_unencodable_argument_fails_before_anything_is_sent(app, unique_queue, pika_channel):
    queue = unique_queue("unencodable")
    with pytest.raises(EncodeError, match="not JSON serializable"):
        app.send_task("t", (object(),), queue=queue)
    app.send_task("t", (1,), queue=queue)  # the queue exists and holds only the good message
    assert json.loads(get_one(pika_channel, queue)[2])[0] == [1]
    assert pika_channel.queue_declare(queue, passive=True).method.message_count == 0


def test_unreachable_broker_is_an_operational_error_with_the_password_masked():
    app = Celery("down", broker="amqp://guest:secretpw@127.0.0.1:1//")
    started = time.monotonic()
    with pytest.raises(OperationalError) as info:
        app.send_task("t", (1,))
    assert "amqp://guest:**@127.0.0.1:1//" in str(info.value) and "secretpw" not in str(info.value)
    assert time.monotonic() - started < 5


def test_get_without_a_result_backend_says_so(app, unique_queue):
    result = app.send_task("t", (1,), queue=unique_queue("nobackend"))
    with pytest.raises(NotImplementedError, match="No result backend is configured"):
        result.get(timeout=1)


EXIT_SCRIPT = """
import atexit, sys
seen = {}
# Registered before minicelery's own exit hook, so it runs after it (atexit is last in, first out).
atexit.register(lambda: print("closed at exit:", not seen["connection"].is_open, flush=True))
from minicelery import Celery
app = Celery("exiting", broker=sys.argv[1], set_as_current=False)
app.conf.task_default_queue = sys.argv[2]
noop = app.task(name="exiting.noop", shared=False)(lambda: None)
for _ in range(int(sys.argv[3])):
    noop.delay()
seen["connection"] = app.broker._state().link.connection
print("sent", flush=True)
"""


def test_a_script_that_publishes_and_exits_closes_its_connection_and_loses_nothing(
        broker_url, unique_queue, pika_channel):
    # Without a polite close RabbitMQ may drop messages it received but had not yet routed.
    queue, count = unique_queue(), 3000
    done = subprocess.run([sys.executable, "-c", EXIT_SCRIPT, broker_url, queue, str(count)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["sent", "closed at exit: True"]
    deadline = time.monotonic() + 20  # the broker routes into the queue asynchronously
    while (depth := pika_channel.queue_declare(queue, durable=True, passive=True).method.message_count) \
            < count and time.monotonic() < deadline:
        time.sleep(0.05)
    assert depth == count
