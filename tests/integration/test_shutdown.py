"""Worker shutdown with tasks in flight: warm (SIGTERM, first SIGINT) and cold (SIGQUIT, second SIGINT).

Every task is accounted for: ``ctasks`` appends each task id to ``started`` when it begins and to
``finished`` when it ends (files in a per-test directory), the client holds every result, and the
messages left are counted in the queue with a passive declare once the worker has exited. Signals go to
the worker's main process only, as ``kill PID`` would send them.
"""

from __future__ import annotations

import collections
import signal

import pika
import pytest
from broker_admin import ready_count
from cli_support import read_ids

from minicelery import Celery
from minicelery.exceptions import Terminated, TimeoutError

pytestmark = pytest.mark.broker


@pytest.fixture
def client(broker_url):
    app = Celery("shutdownclient", broker=broker_url, backend="rpc://", set_as_current=False)
    yield app
    app.close()


def start_worker(workers, queue, folder, *options):
    worker = workers(["-A", "ctasks", "worker", "-l", "INFO", "-Q", queue, *options],
                     env={"CTASKS_DIR": str(folder)})
    worker.ready()
    return worker


def test_warm_shutdown_finishes_running_tasks_and_requeues_the_rest(workers, client, unique_queue, tmp_path):
    queue = unique_queue("warm")
    worker = start_worker(workers, queue, tmp_path, "-c", "2")
    results = [client.send_task("ctasks.sleepy", (1.5,), queue=queue) for _ in range(2)]
    results += [client.send_task("ctasks.sleepy", (0.1,), queue=queue) for _ in range(4)]
    later = client.send_task("ctasks.add", (1, 1), queue=queue, countdown=600)  # held for its ETA
    worker.wait_for_line(r"ctasks: started ", count=2)
    worker.wait_for_line(r"INFO/MainProcess\] Task ctasks\.sleepy\[\S+\] received", count=6)  # prefetched
    worker.wait_for_line(rf"INFO/MainProcess\] Task ctasks\.add\[{later.id}\] received")

    worker.signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0, worker.output()
    assert "worker: Warm shutdown (MainProcess)" in worker.stdout().splitlines()
    running = read_ids(tmp_path, "started")
    assert len(running) >= 2  # the two it was running when told to stop
    assert sorted(read_ids(tmp_path, "finished")) == sorted(running)  # they finished
    by_id = {r.id: r for r in results}
    for task_id in running:
        assert by_id[task_id].get(timeout=10) in (1.5, 0.1)  # their results were delivered
    # Every other one is back in the queue, the ETA one included.
    assert ready_count(queue) == len(results) - len(running) + 1

    # A second worker drains the queue: each task ran exactly once, none was lost.
    second = start_worker(workers, queue, tmp_path, "-c", "4")
    for result in results:
        assert result.get(timeout=20) in (1.5, 0.1)
    second.wait_for_line(rf"INFO/MainProcess\] Task ctasks\.add\[{later.id}\] received")
    second.signal(signal.SIGTERM)
    assert second.wait() == 0, second.output()
    started = collections.Counter(read_ids(tmp_path, "started"))
    assert set(started) == set(by_id) and set(started.values()) == {1}, started
    assert sorted(read_ids(tmp_path, "finished")) == sorted(by_id)
    assert ready_count(queue) == 1  # only the ETA task, back again: its time has not come


def test_second_sigint_turns_warm_into_cold(workers, client, unique_queue, tmp_path):
    queue = unique_queue("sigint")
    worker = start_worker(workers, queue, tmp_path, "-c", "1")
    running = client.send_task("ctasks.sleepy", (60,), queue=queue)
    waiting = client.send_task("ctasks.sleepy", (60,), queue=queue)
    worker.wait_for_line(rf"ctasks: started {running.id}")
    worker.wait_for_line(rf"Task ctasks\.sleepy\[{waiting.id}\] received")

    worker.signal(signal.SIGINT)
    worker.wait_for_line(r"^worker: Hitting Ctrl\+C again will initiate cold shutdown, terminating all "
                         r"running tasks!$", stream="stdout")
    worker.wait_for_line(r"^worker: Warm shutdown \(MainProcess\)$", stream="stdout")
    assert worker.proc.poll() is None  # warm: it waits for the running task
    worker.signal(signal.SIGINT)
    assert worker.wait(timeout=15) == 1, worker.output()
    out = worker.stdout().splitlines()
    assert "worker: Hitting Ctrl+C again will terminate all running tasks!" in out
    assert "worker: Cold shutdown (MainProcess)" in out
    with pytest.raises(Terminated):
        running.get(timeout=10)
    assert running.state == "FAILURE"
    assert ready_count(queue) == 1  # the prefetched one went back
    assert read_ids(tmp_path, "started") == [running.id] and read_ids(tmp_path, "finished") == []


def test_sigquit_fails_early_acked_running_tasks_and_requeues_the_rest(workers, client, unique_queue,
                                                                        tmp_path):
    queue = unique_queue("sigquit")
    worker = start_worker(workers, queue, tmp_path, "-c", "2")
    results = [client.send_task("ctasks.sleepy", (60,), queue=queue) for _ in range(5)]
    worker.wait_for_line(r"ctasks: started ", count=2)
    worker.wait_for_line(r"Task ctasks\.sleepy\[\S+\] received", count=5)

    worker.signal(signal.SIGQUIT)
    assert worker.wait(timeout=15) == 1, worker.output()
    assert "worker: Cold shutdown (MainProcess)" in worker.stdout().splitlines()
    running = read_ids(tmp_path, "started")
    assert len(running) == 2 and read_ids(tmp_path, "finished") == []
    by_id = {r.id: r for r in results}
    for task_id in running:
        with pytest.raises(Terminated):  # a FAILURE result, rather than a client waiting forever
            by_id[task_id].get(timeout=10)
        assert by_id[task_id].state == "FAILURE"
    assert ready_count(queue) == 3  # the unstarted ones
    worker.wait_for_line(r"ERROR/MainProcess\] Task handler raised error: Terminated\(", count=2)


def test_sigquit_requeues_a_running_acks_late_task(workers, client, unique_queue, tmp_path, pika_channel):
    queue = unique_queue("latequit")
    worker = start_worker(workers, queue, tmp_path, "-c", "1")
    late = client.send_task("ctasks.sleepy_late", (60,), queue=queue)
    worker.wait_for_line(rf"ctasks: started {late.id}")

    worker.signal(signal.SIGQUIT)
    assert worker.wait(timeout=15) == 1, worker.output()
    assert "worker: Cold shutdown (MainProcess)" in worker.stdout().splitlines()
    assert ready_count(queue) == 1
    method, properties, _body = pika_channel.basic_get(queue, auto_ack=False)
    assert isinstance(method, pika.spec.Basic.GetOk)
    assert properties.headers["id"] == late.id and method.redelivered  # the very message, back
    pika_channel.basic_nack(method.delivery_tag, requeue=True)
    with pytest.raises(TimeoutError):  # no FAILURE was sent for it: it will run again
        late.get(timeout=0.5)
