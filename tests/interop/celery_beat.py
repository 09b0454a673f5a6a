"""A Celery beat for the interop tests: ``celery_side``'s app with one entry, ``interop.echo(3, 4)``
every second, sent to ``INTEROP_QUEUE`` (a minicelery worker consumes it)."""

from __future__ import annotations

from celery_side import app

app.conf.beat_schedule = {"echo-every-second": {"task": "interop.echo", "schedule": 1.0, "args": (3, 4),
                                                "kwargs": {"from": "celery beat"}}}
