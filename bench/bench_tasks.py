"""The tasks the benchmark workers run: one module for both minicelery and Celery.

``BENCH_IMPL=celery`` builds the app with Celery instead of minicelery, so both workers register the same
task names (``bench_tasks.noop``, ``bench_tasks.add``) and can consume the same messages. The broker and
the result backend come from ``BENCH_BROKER`` and ``BENCH_BACKEND`` (empty: no backend);
``BENCH_DEFAULT_QUEUE`` sets ``task_default_queue`` (the canvas benchmark's workers publish the next
chain steps there, so it must be the queue they consume, not ``celery``).
"""

from __future__ import annotations

import os
import time

if os.environ.get("BENCH_IMPL") == "celery":
    from celery import Celery
else:
    from minicelery import Celery

#: Seconds each ``noop`` keeps its CPU busy (``BENCH_TASK_WORK``; 0: it does nothing). The short-task
#: drain uses it: the same messages, tasks long enough for the gap between two jobs to show.
WORK = float(os.environ.get("BENCH_TASK_WORK") or 0)

app = Celery("bench_tasks", broker=os.environ.get("BENCH_BROKER", "amqp://guest:guest@127.0.0.1:5672//"),
             backend=os.environ.get("BENCH_BACKEND") or None)
if os.environ.get("BENCH_DEFAULT_QUEUE"):
    app.conf.task_default_queue = os.environ["BENCH_DEFAULT_QUEUE"]


@app.task
def noop() -> None:
    """Do nothing (or spin for ``WORK`` seconds): the benchmark measures the machinery around the task."""
    if WORK:
        spin(WORK)


def spin(seconds: float) -> None:
    """Keep the CPU busy for ``seconds``, as a short CPU-bound task does (sleeping would free the core)."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


@app.task
def add(x: int, y: int) -> int:
    """Add two numbers: the round-trip benchmark's task."""
    return x + y
