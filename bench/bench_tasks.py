"""The tasks the benchmark workers run: one module for both minicelery and Celery.

``BENCH_IMPL=celery`` builds the app with Celery instead of minicelery, so both workers register the same
task names (``bench_tasks.noop``, ``bench_tasks.add``) and can consume the same messages. The broker and
the result backend come from ``BENCH_BROKER`` and ``BENCH_BACKEND`` (empty: no backend).
"""

from __future__ import annotations

import os

if os.environ.get("BENCH_IMPL") == "celery":
    from celery import Celery
else:
    from minicelery import Celery

app = Celery("bench_tasks", broker=os.environ.get("BENCH_BROKER", "amqp://guest:guest@127.0.0.1:5672//"),
             backend=os.environ.get("BENCH_BACKEND") or None)


@app.task
def noop() -> None:
    """Do nothing: the benchmark measures the machinery around the task."""


@app.task
def add(x: int, y: int) -> int:
    """Add two numbers: the round-trip benchmark's task."""
    return x + y
