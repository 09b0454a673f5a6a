"""The task module of the beat integration tests (``-A btasks``), configured from the environment.

* ``BTASKS_BROKER``: the broker URL (default: ``MINICELERY_TEST_BROKER_URL``, the test broker, else
  RabbitMQ on 127.0.0.1:5672).
* ``BTASKS_QUEUE``: ``task_default_queue``, where beat sends the entry.
* ``BTASKS_INTERVAL``: the interval of the one entry, ``tick-every`` (``btasks.tick(1, 2)``), in seconds.
* ``BTASKS_DIR``: where ``tick`` appends one line per run (``runs``), for the ``worker -B`` test.
"""

from __future__ import annotations

import os

from minicelery import Celery

BROKER = os.environ.get("BTASKS_BROKER") or os.environ.get("MINICELERY_TEST_BROKER_URL") \
    or "amqp://guest:guest@127.0.0.1:5672//"
app = Celery("btasks", broker=BROKER)
app.conf.task_default_queue = os.environ.get("BTASKS_QUEUE", "celery")
app.conf.beat_schedule = {
    "tick-every": {"task": "btasks.tick", "schedule": float(os.environ.get("BTASKS_INTERVAL", "1.0")),
                   "args": (1, 2)},
}


@app.task(name="btasks.tick")
def tick(x: int, y: int) -> int:
    folder = os.environ.get("BTASKS_DIR")
    if folder:
        descriptor = os.open(os.path.join(folder, "runs"), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            os.write(descriptor, b"run\n")
        finally:
            os.close(descriptor)
    return x + y
