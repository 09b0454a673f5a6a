"""Periodic tasks: the schedule that docs/beat.md runs.

Run beat alone:            python -m minicelery -A examples.periodic beat -l INFO
Or inside a worker:        python -m minicelery -A examples.periodic worker -B -l INFO
"""

from __future__ import annotations

import os
from datetime import timedelta

from minicelery import Celery
from minicelery.schedules import crontab

app = Celery(
    "examples.periodic",
    broker=os.environ.get("MINICELERY_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//"),
)
app.conf.task_default_queue = "periodic"
app.conf.timezone = "Europe/Berlin"
app.conf.beat_schedule = {
    # an interval: every 10 seconds, counted from the last send
    "heartbeat-every-10s": {"task": "examples.periodic.heartbeat", "schedule": 10.0},
    # a timedelta, with arguments and apply_async options
    "cleanup-every-30s": {"task": "examples.periodic.cleanup", "schedule": timedelta(seconds=30),
                          "args": ("/tmp/cache",), "options": {"expires": 25}},
    # crontab: every minute, and weekdays at 07:30 Berlin time
    "report-every-minute": {"task": "examples.periodic.report", "schedule": crontab(minute="*"),
                            "kwargs": {"kind": "minutely"}},
    "morning-report": {"task": "examples.periodic.report",
                       "schedule": crontab.from_string("30 7 * * mon-fri"), "kwargs": {"kind": "morning"}},
}


@app.on_after_configure.connect
def setup_periodic_tasks(sender: Celery, **kwargs: object) -> None:
    """Celery's way to add entries in code, once the configuration is read."""
    sender.add_periodic_task(20.0, heartbeat, args=("from add_periodic_task",), name="heartbeat-every-20s")


@app.task
def heartbeat(note: str = "") -> str:
    """Say that the system is alive."""
    return f"alive {note}".strip()


@app.task
def cleanup(path: str) -> str:
    """Pretend to clean a cache directory."""
    return f"cleaned {path}"


@app.task
def report(kind: str) -> str:
    """Pretend to write a report."""
    return f"{kind} report written"
