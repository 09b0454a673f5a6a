"""Independent clients on the embedded broker: Celery 5 (py-amqp, kombu) and Dramatiq (pika).

The broker runs in a thread of this process on a free port (memory only), so a test can look at what a
client told it (py-amqp's StartOk capabilities). Celery workers run as subprocesses with Celery's default
options (mingle, gossip, heartbeats, remote control: fanout, topic and exclusive queues).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator

import kombu
import pika
import pytest
from conftest import REPO

from minicelery.broker import Broker, Config

CELERY_APP = """
import os
from celery import Celery
app = Celery("ebceleryapp", broker=os.environ["EB_URL"], backend="rpc://")
app.conf.task_default_queue = os.environ["EB_QUEUE"]
app.conf.broker_connection_retry_on_startup = True

@app.task(name="eb.add")
def add(x, y):
    return x + y
"""


@pytest.fixture(scope="module")
def embedded() -> Iterator[Broker]:
    """An embedded broker in a thread; no exception may escape into its loop."""
    loop = asyncio.new_event_loop()
    errors: list[object] = []
    loop.set_exception_handler(lambda loop, context: errors.append(context))
    broker = Broker(Config(port=0))
    started = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(broker.start())
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(10)
    yield broker
    asyncio.run_coroutine_threadsafe(broker.stop(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    assert errors == []


def url(broker: Broker) -> str:
    return f"amqp://guest:guest@127.0.0.1:{broker.port}//"


@pytest.fixture(scope="module")
def celery_worker(embedded: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Celery 5 worker with default options on the embedded broker; yields its queue."""
    folder = tmp_path_factory.mktemp("ebcelery")
    (folder / "ebceleryapp.py").write_text(CELERY_APP)
    queue = f"eb-{uuid.uuid4().hex[:8]}"
    env = dict(os.environ, EB_URL=url(embedded), EB_QUEUE=queue,
               PYTHONPATH=os.pathsep.join([str(folder), str(REPO)]))
    worker = subprocess.Popen([sys.executable, "-m", "celery", "-A", "ebceleryapp", "worker", "-c", "1",
                               "-l", "INFO", "-n", f"{queue}@%h"], cwd=folder, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(worker.stdout or []), daemon=True)
    reader.start()
    deadline = time.monotonic() + 60
    while not any(" ready." in line for line in list(lines)):
        assert worker.poll() is None and time.monotonic() < deadline, "".join(lines)
        time.sleep(0.1)
    yield queue
    worker.terminate()
    worker.wait(30)


def celery_client(embedded: Broker, queue: str):
    from celery import Celery

    app = Celery("client", broker=url(embedded), backend="rpc://")
    app.conf.task_default_queue = queue
    return app


def test_py_amqp_declares_the_capabilities_the_server_advertises(embedded):  # check 2
    with kombu.Connection(url(embedded)) as connection:
        connection.connect()
        properties = [c.client_properties for c in embedded.connections
                      if c.client_properties.get("product") == "py-amqp"]
        assert properties
        assert set(properties[0]["capabilities"]) == {"consumer_cancel_notify", "connection.blocked",
                                                      "authentication_failure_close"}


def test_celery_worker_with_default_options_runs_tasks_and_answers_ping(embedded, celery_worker):  # 16
    app = celery_client(embedded, celery_worker)
    assert app.send_task("eb.add", (2, 3)).get(timeout=30) == 5
    replies = app.control.ping(timeout=2)
    assert any(celery_worker in name for reply in replies for name in reply)
    app.close()


def test_celery_eta_tasks_do_not_starve_new_ones(embedded, celery_worker):  # check 26 (the deviation)
    app = celery_client(embedded, celery_worker)
    for _ in range(4):  # -c 1: prefetch 4, all held as ETA tasks
        app.send_task("eb.add", (0, 0), countdown=60)
    assert app.send_task("eb.add", (4, 5)).get(timeout=20) == 9
    app.close()


def test_celery_client_to_a_minicelery_worker_with_float_headers(embedded):  # check 13
    queue = f"ebmini-{uuid.uuid4().hex[:8]}"
    env = dict(os.environ, INTEROP_BROKER_URL=url(embedded), INTEROP_QUEUE=queue,
               PYTHONPATH=os.pathsep.join([str(REPO / "tests" / "interop"), str(REPO)]))
    worker = subprocess.Popen([sys.executable, "-m", "minicelery", "-A", "mini_side", "worker", "-c", "1",
                               "-Q", queue], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        app = celery_client(embedded, queue)
        # timelimit travels as the header [30.5, 20.25]: doubles, which the broker passes through untouched
        result = app.send_task("interop.echo", (1.5, "x"), {"k": 2.25}, time_limit=30.5, soft_time_limit=20.25)
        assert result.get(timeout=30) == {"args": [1.5, "x"], "kwargs": {"k": 2.25}}
        app.close()
    finally:
        worker.terminate()
        worker.wait(30)


def test_dramatiq_failing_actor_lands_in_its_dead_letter_queue(embedded):  # check 31
    import dramatiq
    from dramatiq.brokers.rabbitmq import RabbitmqBroker

    queue = f"ebdq{uuid.uuid4().hex[:8]}"
    broker = RabbitmqBroker(url=f"amqp://guest:guest@127.0.0.1:{embedded.port}/%2F")

    @dramatiq.actor(broker=broker, queue_name=queue, max_retries=1, min_backoff=10, max_backoff=50)
    def always_fails() -> None:
        raise RuntimeError("no")

    always_fails.send()
    worker = dramatiq.Worker(broker, worker_threads=1)
    worker.start()
    try:
        connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", embedded.port))
        channel = connection.channel()
        deadline = time.monotonic() + 30
        method = None
        while method is None and time.monotonic() < deadline:
            method, properties, _ = channel.basic_get(f"{queue}.XQ", auto_ack=True)
            time.sleep(0.1)
        assert method is not None, "the failed message never reached the dead-letter queue"
        death = properties.headers["x-death"][0]
        assert (death["count"], death["reason"], death["queue"]) == (1, "rejected", queue)
        assert properties.headers["x-first-death-queue"] == queue
        connection.close()
    finally:
        worker.stop()
        broker.close()
