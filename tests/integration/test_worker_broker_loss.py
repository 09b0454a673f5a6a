"""A worker survives the loss of its broker (``rabbitmqctl stop_app`` ... ``start_app``, or a stop and start of
the embedded broker's process) by itself.

One restart serves every check, since a restart takes seconds and disturbs everyone using the broker.
The broker is always started again (the ``rabbitmq_restart`` fixture), whatever happens.

While the broker is down, two tasks are running: an early-acked one and an ``acks_late`` one, both
``ctasks.hold`` tasks that run until the test opens their gate (a file). The test opens it only once the
worker has logged the loss, so both finish during the outage. Their results cannot be read through
``rpc://``: a client's reply queue is auto-delete and goes with the restart. They are sent with
``reply_to`` naming a durable queue that the test declared, read back with ``basic_get``.

Outcomes (at-least-once, as with Celery):

* the early-acked task's result is kept in the worker's outbox and published after the reconnection;
* the ``acks_late`` task's message was unacknowledged when the connection died, so the broker delivers it
  again and the task **runs twice**: its first result (from the outbox) and its second both arrive.
"""

from __future__ import annotations

import collections
import json
import re
import signal
import time

import pytest
from broker_admin import MASKED_URL, ready_count
from cli_support import plain_channel, read_ids, wait_for_count

from minicelery import Celery

pytestmark = pytest.mark.broker


def replies(channel, queue: str, expected: int, timeout: float = 30.0) -> list[tuple[str, dict]]:
    """Take ``expected`` messages from ``queue`` as ``(correlation_id, decoded body)``, with a deadline."""
    found: list[tuple[str, dict]] = []
    deadline = time.monotonic() + timeout
    while len(found) < expected and time.monotonic() < deadline:
        method, properties, body = channel.basic_get(queue, auto_ack=True)
        if method is None:
            time.sleep(0.05)  # polling interval of a deadline-bounded wait
            continue
        assert properties.content_type == "application/json"
        found.append((properties.correlation_id, json.loads(body)))
    return found


def test_worker_reconnects_and_keeps_running_tasks(workers, broker_url, unique_queue, pika_channel,
                                                    rabbitmq_restart, tmp_path):
    queue, reply_queue = unique_queue("loss"), unique_queue("lossreply")
    pika_channel.queue_declare(reply_queue, durable=True)  # survives the restart, unlike rpc queues
    pika_channel.connection.close()
    gate = tmp_path / "gate"
    worker = workers(["-A", "ctasks", "worker", "-l", "INFO", "-c", "2", "-Q", queue],
                     env={"CTASKS_DIR": str(tmp_path)})
    worker.ready()
    sender = Celery("losssender", broker=broker_url, set_as_current=False)  # no backend: reply_to is ours
    early = sender.send_task("ctasks.hold", (str(gate),), queue=queue, reply_to=reply_queue).id
    late = sender.send_task("ctasks.hold_late", (str(gate),), queue=queue, reply_to=reply_queue).id
    sender.close()
    worker.wait_for_line(r"ctasks: started ", count=2)

    try:
        rabbitmq_restart.stop()
        # Only the acks_late message is unacknowledged: the other one was acked when a child took it.
        worker.wait_for_line(r"ERROR/MainProcess\] consumer: Connection to broker lost\. .*"
                             r"1 unacknowledged message\(s\) will be redelivered")
        after_loss = worker.mark()
        gate.touch()
        worker.wait_for_line(rf"Task ctasks\.hold\[{early}\] succeeded in [0-9.e-]+s: 'released'",
                             start=after_loss)
        worker.wait_for_line(rf"Task ctasks\.hold_late\[{late}\] succeeded in [0-9.e-]+s: 'released'",
                             start=after_loss)
        worker.wait_for_line(r"ERROR/MainProcess\] consumer: " + re.escape(f"Cannot connect to {MASKED_URL}")
                             + r": .*\.$", start=after_loss)
        worker.wait_for_line(r"^Trying again in \d+\.\d\d seconds\.\.\. \(\d+/\d+\)$", start=after_loss)
        assert worker.proc.poll() is None
        finished_during_outage = sorted(read_ids(tmp_path, "finished"))
        assert finished_during_outage == sorted([early, late])
    finally:
        rabbitmq_restart.start()  # start_app + await_startup, whatever happened

    # It reconnects by itself and consumes again.
    worker.wait_for_line(r"INFO/MainProcess\] " + re.escape(f"Connected to {MASKED_URL}") + "$",
                         start=after_loss, timeout=60)
    client = Celery("lossclient", broker=broker_url, backend="rpc://", set_as_current=False)
    try:
        assert client.send_task("ctasks.add", (2, 3), queue=queue).get(timeout=30) == 5
    finally:
        client.close()

    # The acks_late task is delivered again and runs a second time: at least once, as documented.
    worker.wait_for_line(rf"Task ctasks\.hold_late\[{late}\] received", start=after_loss)
    worker.wait_for_line(rf"Task ctasks\.hold_late\[{late}\] succeeded in", start=after_loss, count=2)
    started = collections.Counter(read_ids(tmp_path, "started"))
    assert started == {early: 1, late: 2}

    # Results: the early-acked one (from the outbox, after reconnecting) and the acks_late one twice.
    channel = plain_channel()  # the fixture's connection did not survive the restart
    try:
        got = replies(channel, reply_queue, 3)
    finally:
        channel.connection.close()
    assert sorted(cid for cid, _ in got) == sorted([early, late, late]), got
    for cid, meta in got:
        assert (meta["task_id"], meta["status"], meta["result"]) == (cid, "SUCCESS", "released")

    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0, worker.output()
    assert ready_count(queue) == 0


def test_broker_loss_during_a_warm_shutdown_starts_no_new_task(workers, broker_url, unique_queue,
                                                                 rabbitmq_restart, tmp_path):
    """Told to stop, the worker must not consume again when it reconnects while draining."""
    queue = unique_queue("warmloss")
    gate = tmp_path / "gate"
    worker = workers(["-A", "ctasks", "worker", "-l", "INFO", "-c", "1", "-Q", queue],
                     env={"CTASKS_DIR": str(tmp_path)})
    worker.ready()
    sender = Celery("warmlosssender", broker=broker_url, set_as_current=False)
    running = sender.send_task("ctasks.hold", (str(gate),), queue=queue).id
    waiting = [sender.send_task("ctasks.add", (n, n), queue=queue).id for n in range(2)]
    sender.close()
    worker.wait_for_line(rf"ctasks: started {running}")
    worker.wait_for_line(r"Task ctasks\.add\[\S+\] received", count=2)
    worker.signal(signal.SIGTERM)
    worker.wait_for_line(r"^worker: Warm shutdown \(MainProcess\)$", stream="stdout")
    assert wait_for_count(queue, 2) == 2  # the prefetched ones went back

    after = worker.mark()
    try:
        rabbitmq_restart.stop()
        worker.wait_for_line(r"consumer: Connection to broker lost", start=after)
    finally:
        rabbitmq_restart.start()
    worker.wait_for_line(r"INFO/MainProcess\] Connected to ", start=after, timeout=60)
    gate.touch()
    assert worker.wait(timeout=30) == 0, worker.output()
    worker.wait_for_line(rf"Task ctasks\.hold\[{running}\] succeeded")
    assert "ctasks.add" not in "\n".join(worker.stderr().splitlines()[after:]), worker.output()
    assert ready_count(queue) == 2 and read_ids(tmp_path, "started") == [running]
    assert all(task_id not in worker.stderr().split("Connected to")[-1] for task_id in waiting)
