"""A real Celery 5 client drives a minicelery worker over RabbitMQ, with rpc:// results.

What is proven: ``python -m minicelery -A mini_side worker`` runs tasks sent by Celery's ``delay``,
``apply_async`` and ``send_task``, and Celery's rpc backend reads every answer the minicelery worker sends:
a return value (json and msgpack task messages), a task's ``ValueError`` re-raised in Celery, an unknown task
name answered with Celery's ``NotRegistered``, an expired task answered with ``TaskRevokedError`` (expired on
receipt, and expired while held for its ETA), a retried task that ends in ``SUCCESS``, a ``countdown`` held
until the ETA, and a task killed at its hard time limit reported as billiard's ``TimeLimitExceeded``.

The worker runs ``mini_side.py`` with two child processes (one per module); the client is ``celery_side.py``'s
app, so every exception asserted here is the class Celery itself rebuilds.
"""

from __future__ import annotations

import json
import time
import uuid

import billiard.exceptions
import celery.exceptions
import celery_side
import pytest

pytestmark = [pytest.mark.interop, pytest.mark.broker]

#: Seconds to wait for a result: far more than any of these tasks needs.
RESULT_TIMEOUT = 10


@pytest.fixture(scope="module")
def mini_worker(start_worker):
    """A minicelery worker with two children, accepting json and msgpack, on its own queue."""
    return start_worker("minicelery", concurrency=2, INTEROP_ACCEPT_CONTENT="json,msgpack")


@pytest.fixture
def client(celery_app, mini_worker):
    """The Celery client app, sending to the minicelery worker's queue by default."""
    celery_side.configure({"INTEROP_BROKER_URL": celery_app.conf.broker_url, "INTEROP_QUEUE": mini_worker.queue})
    return celery_app


def test_delay_returns_the_sum(client, mini_worker):
    assert celery_side.add.delay(2, 3).get(timeout=RESULT_TIMEOUT) == 5


def test_result_state_after_success(client, mini_worker):
    result = celery_side.add.apply_async((20, 22))
    assert result.get(timeout=RESULT_TIMEOUT) == 42
    assert result.state == "SUCCESS"
    assert result.successful() and result.ready()
    assert result.date_done is not None


@pytest.mark.parametrize("serializer", ["json", "msgpack"])
def test_arguments_arrive_as_sent(client, mini_worker, serializer):
    kwargs = {"text": "é ünïcode", "nested": {"list": [1, 2.5, None, True], "empty": {}}, "big": 2**40}
    result = celery_side.echo.apply_async(("a", 1), kwargs, serializer=serializer)
    assert result.get(timeout=RESULT_TIMEOUT) == {"args": ["a", 1], "kwargs": kwargs}


def test_task_failure_raises_the_original_exception(client, mini_worker):
    result = celery_side.fail.delay("boom")
    with pytest.raises(ValueError) as excinfo:
        result.get(timeout=RESULT_TIMEOUT)
    assert type(excinfo.value) is ValueError
    assert excinfo.value.args == ("boom",)
    assert result.state == "FAILURE"
    assert result.traceback.rstrip().splitlines()[-1] == "ValueError: boom"


def test_unknown_task_name_raises_not_registered(client, mini_worker):
    name = f"interop.no_such_task_{uuid.uuid4().hex[:8]}"
    result = client.send_task(name, (1, 2))
    with pytest.raises(celery.exceptions.NotRegistered) as excinfo:
        result.get(timeout=RESULT_TIMEOUT)
    assert excinfo.value.args == (name,)
    assert result.state == "FAILURE"
    # The worker goes on serving tasks after discarding it.
    assert celery_side.add.delay(1, 1).get(timeout=RESULT_TIMEOUT) == 2


def test_expired_on_receipt_is_revoked(client, mini_worker):
    result = celery_side.add.apply_async((2, 3), expires=-1)
    with pytest.raises(celery.exceptions.TaskRevokedError) as excinfo:
        result.get(timeout=RESULT_TIMEOUT)
    assert excinfo.value.args == ("expired",)
    assert result.state == "REVOKED"


def test_expired_while_held_for_its_eta_is_revoked(client, mini_worker):
    result = celery_side.add.apply_async((2, 3), countdown=1, expires=0.5)
    with pytest.raises(celery.exceptions.TaskRevokedError):
        result.get(timeout=RESULT_TIMEOUT)
    assert result.state == "REVOKED"


def test_retried_task_eventually_succeeds(client, mini_worker):
    result = celery_side.flaky.delay(2)
    assert result.get(timeout=RESULT_TIMEOUT) == 2  # two RETRY states came first, then SUCCESS
    assert result.state == "SUCCESS"


def test_retry_leaves_the_clients_reply_queue_alone(client, mini_worker, unique_queue, pika_channel):
    """Every result of a retried task reaches the client's reply queue, in Celery's result format.

    Regression: the worker child used to declare *and consume* the ``reply_to`` queue when it re-sent the
    task, so it swallowed the client's later results (Celery declares only its own reply queue).
    """
    reply_queue = unique_queue("reply")
    pika_channel.queue_declare(reply_queue, durable=True, auto_delete=True, arguments={"x-expires": 86400000})
    task_id = str(uuid.uuid4())
    celery_side.flaky.apply_async((2,), task_id=task_id, reply_to=reply_queue)
    replies = []
    deadline = time.monotonic() + RESULT_TIMEOUT
    while (not replies or json.loads(replies[-1][1])["status"] != "SUCCESS") and time.monotonic() < deadline:
        method, properties, body = pika_channel.basic_get(reply_queue, auto_ack=True)
        if method is not None:
            replies.append((properties, body))
    assert [json.loads(body)["status"] for _, body in replies] == ["RETRY", "RETRY", "SUCCESS"]
    assert pika_channel.queue_declare(reply_queue, passive=True).method.consumer_count == 0
    for properties, _ in replies:
        assert (properties.content_type, properties.content_encoding, properties.delivery_mode,
                properties.correlation_id, properties.headers) == ("application/json", "utf-8", 1, task_id, {})
    retry, success = json.loads(replies[0][1]), json.loads(replies[-1][1])
    assert retry["result"] == {"exc_type": "KeyError", "exc_message": ["k"], "exc_module": "builtins"}
    assert list(success) == ["status", "result", "traceback", "children", "date_done", "parent_id", "task_id"]
    assert (success["result"], success["parent_id"], success["task_id"]) == (2, task_id, task_id)


def test_countdown_is_honoured(client, mini_worker):
    countdown = 2
    sent_at = time.time()
    result = celery_side.clock.apply_async(countdown=countdown)
    with pytest.raises(celery.exceptions.TimeoutError):  # the worker holds the message until the ETA
        result.get(timeout=countdown / 2)
    assert result.get(timeout=RESULT_TIMEOUT) >= sent_at + countdown - 0.05


def test_hard_time_limit_raises_time_limit_exceeded(client, mini_worker):
    result = celery_side.sleep.apply_async((30,), time_limit=1)
    with pytest.raises(billiard.exceptions.TimeLimitExceeded) as excinfo:
        result.get(timeout=RESULT_TIMEOUT)
    assert excinfo.value.args == (1,)
    assert result.state == "FAILURE"
    # The killed child was replaced: both children serve tasks again.
    assert [r.get(timeout=RESULT_TIMEOUT) for r in [celery_side.add.delay(i, i) for i in range(4)]] == [0, 2, 4, 6]


def test_outstanding_results_awaited_in_reverse_order(client, mini_worker):
    results = [celery_side.add.delay(i, 1000) for i in range(8)]
    assert [r.get(timeout=RESULT_TIMEOUT) for r in reversed(results)] == [i + 1000 for i in reversed(range(8))]


@pytest.mark.parametrize("compression", ["gzip", "bzip2", "lzma"])
def test_a_compressed_task_from_celery_runs_on_the_minicelery_worker(client, mini_worker, compression):
    # kombu compresses the body and adds the `compression` header; the minicelery child decompresses.
    result = celery_side.add.apply_async((20, 22), compression=compression)
    assert result.get(timeout=RESULT_TIMEOUT) == 42


def test_a_zero_time_limit_from_celery_means_no_limit(client, mini_worker):
    # Celery reads 0 as "no limit" (timelimit [0, 0] on the wire); the task must run, not be killed.
    result = celery_side.sleep.apply_async((0.2,), time_limit=0, soft_time_limit=0)
    assert result.get(timeout=RESULT_TIMEOUT) == 0.2
