"""The task module that the CLI, shutdown and broker-loss tests start workers with (``-A ctasks``).

It is imported by worker subprocesses, never by the tests themselves, and is configured from the
environment so that every test can use its own queue and its own bookkeeping files:

* ``CTASKS_BROKER``: the broker URL (default: ``MINICELERY_TEST_BROKER_URL``, the test broker, else
  RabbitMQ on 127.0.0.1:5672).
* ``CTASKS_QUEUE``: ``task_default_queue`` (what ``call`` sends to and ``purge`` empties by default).
* ``CTASKS_RETRY_ON_STARTUP`` (any non-empty value) and ``CTASKS_MAX_RETRIES``: set
  ``broker_connection_retry_on_startup = True`` and ``broker_connection_max_retries``.
* ``CTASKS_DIR``: a directory where tasks record what they did: ``started`` and ``finished`` get one
  line per task id (appended with ``O_APPEND``, so lines from several children never interleave).

``sleepy``/``sleepy_late`` sleep for a while; ``hold``/``hold_late`` run until a file (the gate) exists,
so that the test decides when a running task ends. They log ``ctasks: started <id>`` (WARNING, so it
shows at any log level) when they begin, which lets a test wait for "the task is running" on the
worker's stderr instead of sleeping.
"""

from __future__ import annotations

import logging
import os
import time

from minicelery import Celery

BROKER = os.environ.get("CTASKS_BROKER") or os.environ.get("MINICELERY_TEST_BROKER_URL") \
    or "amqp://guest:guest@127.0.0.1:5672//"
app = Celery("ctasks", broker=BROKER,
             backend="rpc://")
app.conf.task_default_queue = os.environ.get("CTASKS_QUEUE", "celery")
if os.environ.get("CTASKS_RETRY_ON_STARTUP"):
    app.conf.broker_connection_retry_on_startup = True
if os.environ.get("CTASKS_MAX_RETRIES"):
    app.conf.broker_connection_max_retries = int(os.environ["CTASKS_MAX_RETRIES"])

logger = logging.getLogger("ctasks")


def _record(kind: str, task_id: str) -> None:
    folder = os.environ.get("CTASKS_DIR")
    if not folder:
        return
    fd = os.open(os.path.join(folder, kind), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{task_id}\n".encode())
    finally:
        os.close(fd)


def _sleep(task_id: str, seconds: float) -> float:
    _record("started", task_id)
    logger.warning("ctasks: started %s", task_id)
    time.sleep(seconds)
    _record("finished", task_id)
    return seconds


def _hold(task_id: str, gate: str, timeout: float) -> str:
    _record("started", task_id)
    logger.warning("ctasks: started %s", task_id)
    deadline = time.monotonic() + timeout
    while not os.path.exists(gate):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the gate {gate} was not opened within {timeout}s")
        time.sleep(0.05)  # the task's own work: wait for the test to open the gate
    _record("finished", task_id)
    return "released"


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task(bind=True)
def sleepy(self, seconds: float) -> float:
    """Sleep ``seconds`` (acked early, when a child takes it: Celery's default)."""
    return _sleep(self.request.id, seconds)


@app.task(bind=True, acks_late=True)
def sleepy_late(self, seconds: float) -> float:
    """Sleep ``seconds``, acked only after it returns (``acks_late``)."""
    return _sleep(self.request.id, seconds)


@app.task(bind=True)
def hold(self, gate: str, timeout: float = 60.0) -> str:
    """Run until the file ``gate`` exists (the test creates it), then return ``'released'``."""
    return _hold(self.request.id, gate, timeout)


@app.task(bind=True, acks_late=True)
def hold_late(self, gate: str, timeout: float = 60.0) -> str:
    """``hold`` with ``acks_late``."""
    return _hold(self.request.id, gate, timeout)
