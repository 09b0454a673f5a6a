"""A minicelery beat for the interop tests: ``mini_side``'s app with one entry, ``interop.echo(1, 2)``
every second, sent to ``INTEROP_QUEUE`` (a Celery worker consumes it). Must not import celery."""

from __future__ import annotations

from mini_side import app

app.conf.beat_schedule = {"echo-every-second": {"task": "interop.echo", "schedule": 1.0, "args": (1, 2),
                                                "kwargs": {"from": "minicelery beat"}}}
