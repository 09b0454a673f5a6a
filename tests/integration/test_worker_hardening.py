"""A real worker against what the broker or a task can do to it: a consumer the broker cancels, ETA tasks
that would push the prefetch window past AMQP's limit, a task that forks a helper and dies.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import wtasks
from broker_admin import plain_connection
from worker_support import wait_queue_settled

from minicelery.exceptions import WorkerLostError

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
    # The queue exists again and is consumed: a task sent now runs.
    assert wtasks.add.apply_async((2, 3), queue=worker.queue).get(timeout=TIMEOUT) == 5


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
