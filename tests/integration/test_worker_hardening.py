"""A real worker against what a message, the broker or a task can do to it (issue 10's cases): a consumer
the broker cancels, ETA tasks that would push the prefetch window past AMQP's limit, a task that forks a
helper and dies, a result that cannot be encoded, headers nested thousands of levels deep, time limits of
0 and below, a huge return value, compressed messages: each a way the worker before them lost a task,
hung, crashed or looped.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pika
import pytest
import wtasks
from broker_admin import plain_connection
from worker_support import wait_queue_settled

from minicelery import message
from minicelery.exceptions import InvalidTaskError, WorkerLostError

pytest_plugins = ("worker_support",)  # start_worker, shared_worker, client_app, counter_file
pytestmark = pytest.mark.broker

TIMEOUT = 15


def test_a_consumer_cancelled_by_the_broker_is_restored(start_worker, client_app):
    worker = start_worker()
    assert wtasks.add.apply_async((1, 1), queue=worker.queue).get(timeout=TIMEOUT) == 2
    connection = plain_connection()
    try:
        connection.channel().queue_delete(worker.queue)  # RabbitMQ sends basic.cancel to the consumer
    finally:
        connection.close()
    worker.wait_for_line(rf"WARNING/MainProcess\] consumer: the broker cancelled the consumer of queue "
                         rf"'{worker.queue}' \(deleted or expired\?\); declaring it and consuming again")
    _wait_for_consumer(worker.queue)  # declared and consumed again (the warning comes first)
    assert wtasks.add.apply_async((2, 3), queue=worker.queue).get(timeout=TIMEOUT) == 5


def _wait_for_consumer(queue: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while True:
        connection = plain_connection()
        try:
            consumers = connection.channel().queue_declare(queue, passive=True).method.consumer_count
        except pika.exceptions.ChannelClosedByBroker:
            consumers = 0  # not declared again yet
        finally:
            if connection.is_open:
                connection.close()
        if consumers:
            return
        assert time.monotonic() < deadline, f"nobody consumes {queue} again"
        time.sleep(0.05)


def test_held_eta_tasks_lift_the_prefetch_window_instead_of_passing_amqps_limit(start_worker, client_app):
    # -c 1 with a multiplier of 65,530: the window starts 5 below AMQP's 65,535, so 10 held countdown
    # tasks would push it past; it is lifted instead, and every held task still runs once, at its time.
    worker = start_worker(concurrency=1, extra_args=("--prefetch-multiplier", "65530"))
    held = [wtasks.add.apply_async((i, i), queue=worker.queue, countdown=2) for i in range(10)]
    worker.wait_for_line(r"WARNING/MainProcess\] \d+ ETA tasks are held: the prefetch window would pass "
                         r"AMQP's 65535, so it is lifted")
    assert [r.get(timeout=TIMEOUT) for r in held] == [2 * i for i in range(10)]
    assert wtasks.add.apply_async((5, 5), queue=worker.queue).get(timeout=TIMEOUT) == 10
    wait_queue_settled(worker.queue)
    assert "Traceback" not in worker.log


def test_a_task_that_forks_a_helper_and_dies_is_reported_at_once(start_worker, client_app, tmp_path):
    worker = start_worker(concurrency=1)
    pid_file = tmp_path / "helper.pid"
    result = wtasks.fork_helper_and_die.apply_async((str(pid_file), 60), queue=worker.queue)
    try:
        began = time.monotonic()
        with pytest.raises(WorkerLostError, match="Worker exited prematurely"):
            result.get(timeout=TIMEOUT)
        assert time.monotonic() - began < 30  # well before the helper's 60 s end (Celery's takes 5 s)
        helper = int(Path(pid_file).read_text())
        os.kill(helper, 0)  # the helper is still alive: its open pipe did not delay the report
        assert wtasks.add.apply_async((1, 2), queue=worker.queue).get(timeout=TIMEOUT) == 3
    finally:
        if pid_file.exists():
            try:
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_a_result_that_cannot_travel_is_dropped_and_the_worker_serves_on(start_worker, client_app):
    # A task id over AMQP's 255-byte short string: its result's correlation_id cannot be encoded. The
    # worker must log and drop that one result, not take it for a lost connection and loop.
    worker = start_worker()
    reply_queue = f"{worker.queue}.replies"
    envelope = message.TaskMessage.create("wtasks.add", (1, 2), {}).encode("json")
    headers = {**envelope.properties["headers"], "id": "x" * 300}
    connection = plain_connection()
    try:
        channel = connection.channel()
        channel.queue_declare(reply_queue, auto_delete=True)
        channel.basic_publish("", worker.queue, envelope.body, pika.BasicProperties(
            content_type="application/json", content_encoding="utf-8", headers=headers, reply_to=reply_queue))
        worker.wait_for_line(r"ERROR/MainProcess\] Dropped the result for 'x{20}")
        assert wtasks.add.apply_async((2, 2), queue=worker.queue).get(timeout=TIMEOUT) == 4
        assert "Connection to broker lost" not in worker.log
    finally:
        connection.close()


def test_a_header_nested_thousands_of_levels_deep_is_refused_and_the_worker_serves_on(start_worker, client_app):
    # 5,000 levels (about 30 KB): pika's recursive decoder used to raise RecursionError mid-read, the
    # worker reconnected, got the same message again, and served nothing ever after.
    worker = start_worker()
    envelope = message.TaskMessage.create("wtasks.add", (1, 2), {}).encode("json")
    nested: dict = {}
    for _ in range(5000):
        nested = {"n": nested}
    result = client_app.AsyncResult(envelope.properties["headers"]["id"])
    client_app.backend.prepare(client_app.reply_queue)
    previous = sys.getrecursionlimit()
    sys.setrecursionlimit(previous + 20000)  # pika's own encoder recurses too, here in the test
    connection = plain_connection()
    try:
        channel = connection.channel()
        properties = pika.BasicProperties(
            content_type="application/json", content_encoding="utf-8", reply_to=client_app.reply_queue,
            correlation_id=result.id, headers={**envelope.properties["headers"], "deep": nested})
        channel.basic_publish("", worker.queue, envelope.body, properties)
    finally:
        sys.setrecursionlimit(previous)
        connection.close()
    with pytest.raises(InvalidTaskError, match="nest deeper than 32 levels"):
        result.get(timeout=TIMEOUT)
    assert wtasks.add.apply_async((2, 2), queue=worker.queue).get(timeout=TIMEOUT) == 4
    wait_queue_settled(worker.queue)
    assert "Connection to broker lost" not in worker.log


def test_time_limits_of_zero_mean_none_and_a_negative_one_fails_only_its_message(start_worker, client_app):
    worker = start_worker(extra_args=("--time-limit", "0", "--soft-time-limit", "0"))
    # `--time-limit 0` and a message's timelimit [0, 0]: no limit at all, the task runs to its end.
    assert wtasks.sleepy.apply_async((0.3,), queue=worker.queue, time_limit=0).get(timeout=TIMEOUT) == 0.3
    envelope = message.TaskMessage.create("wtasks.add", (1, 2), {}).encode("json")
    result = client_app.AsyncResult(envelope.properties["headers"]["id"])
    client_app.backend.prepare(client_app.reply_queue)
    connection = plain_connection()
    try:
        connection.channel().basic_publish("", worker.queue, envelope.body, pika.BasicProperties(
            content_type="application/json", content_encoding="utf-8", reply_to=client_app.reply_queue,
            correlation_id=result.id, headers={**envelope.properties["headers"], "timelimit": [-1, None]}))
    finally:
        connection.close()
    with pytest.raises(InvalidTaskError, match="timelimit"):
        result.get(timeout=TIMEOUT)
    assert wtasks.add.apply_async((2, 2), queue=worker.queue).get(timeout=TIMEOUT) == 4
    assert "Hard time limit" not in worker.log


def test_a_huge_return_value_makes_a_short_log_line(start_worker, client_app):
    worker = start_worker()  # logs at INFO
    result = wtasks.big.apply_async((2_000_000,), queue=worker.queue)
    assert len(result.get(timeout=TIMEOUT)) == 2_000_000
    worker.wait_for_line(rf"Task wtasks\.big\[{result.id}\] succeeded in")
    (line,) = worker.find(rf"Task wtasks\.big\[{result.id}\] succeeded in")
    assert len(line) < 1200 and line.rstrip().endswith("...")


@pytest.mark.parametrize("compression", ["gzip", "bzip2", "lzma"])
def test_a_compressed_message_runs(start_worker, client_app, compression):
    worker = start_worker()
    result = wtasks.add.apply_async((20, 22), queue=worker.queue, compression=compression)
    assert result.get(timeout=TIMEOUT) == 42
