"""The Dramatiq side of the comparisons: a RabbitMQ broker and a ``noop`` actor on ``BENCH_QUEUE``.

Used by the publish benchmark (``noop.send()``) and by the drain benchmark
(``dramatiq bench_dramatiq --processes 2 --threads 1``). Only imported where Dramatiq is installed.
"""

from __future__ import annotations

import os
import time

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker

QUEUE = os.environ.get("BENCH_QUEUE", "bench_dramatiq_default")

# The same connection settings as minicelery's defaults and the pika references (see common.PIKA_SETTINGS).
broker = RabbitmqBroker(host="127.0.0.1", port=5672, heartbeat=120, connection_attempts=1,
                        socket_timeout=4.0, stack_timeout=4.0)
dramatiq.set_broker(broker)


WORK = float(os.environ.get("BENCH_TASK_WORK") or 0)  # as in bench_tasks.py


@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def noop() -> None:
    """Do nothing (or spin for ``WORK`` seconds, like bench_tasks.noop)."""
    end = time.perf_counter() + WORK
    while time.perf_counter() < end:
        pass


def queues(name: str = QUEUE) -> tuple[str, str, str]:
    """The queues Dramatiq declares for ``name``: the queue, its delay queue and its dead-letter queue."""
    return name, f"{name}.DQ", f"{name}.XQ"
