"""The real Celery side of the interop tests: a Celery 5 app and the tasks both sides share by name.

Used two ways: a Celery worker subprocess imports it (``celery -A celery_side worker``), and the tests use
its app as a Celery *client*. Everything that varies between runs comes from environment variables, read by
:func:`settings_from_env` (the fixtures set them for the worker; they call :func:`configure` for the client):

* ``INTEROP_BROKER_URL``: the broker (default ``amqp://guest:guest@127.0.0.1:5672//``);
* ``INTEROP_QUEUE``: ``task_default_queue``, a unique name per test module;
* ``INTEROP_ACCEPT_CONTENT``: comma-separated serializers the worker accepts (default ``json``);
* ``INTEROP_RESULT_SERIALIZER``: the serializer of result messages (default ``json``);
* ``INTEROP_BACKEND``: the result backend (default ``rpc://``; the chord tests use ``file:///dir``).

The tasks mirror ``mini_side.py`` exactly (same names, same behaviour), so a message sent by either side
runs the same way on either side's worker.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

from celery import Celery

DEFAULT_BROKER_URL = "amqp://guest:guest@127.0.0.1:5672//"


def settings_from_env(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The app settings that the ``INTEROP_*`` variables decide (see the module docstring)."""
    env = os.environ if environ is None else environ
    accept = [name.strip() for name in env.get("INTEROP_ACCEPT_CONTENT", "json").split(",") if name.strip()]
    return {
        "broker_url": env.get("INTEROP_BROKER_URL", DEFAULT_BROKER_URL),
        "task_default_queue": env.get("INTEROP_QUEUE", "interop-default"),
        "accept_content": accept,
        "result_accept_content": ["json", "msgpack"],
        "result_serializer": env.get("INTEROP_RESULT_SERIALIZER", "json"),
    }


def configure(environ: Mapping[str, str] | None = None) -> None:
    """(Re)apply :func:`settings_from_env` to :data:`app`; Celery reads these settings at each send."""
    app.conf.update(settings_from_env(environ))


app = Celery("celery_side", backend=os.environ.get("INTEROP_BACKEND", "rpc://"))
app.conf.update(
    broker_connection_retry_on_startup=True,
    worker_enable_remote_control=False,  # no pidbox queue or exchange left behind
    worker_send_task_events=False,
    task_send_sent_event=False,
)
configure()


@app.task(name="interop.add")
def add(x: int, y: int) -> int:
    return x + y


@app.task(name="interop.echo")
def echo(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """Return the arguments as received, to compare with what was sent."""
    return {"args": list(args), "kwargs": kwargs}


@app.task(name="interop.fail")
def fail(message: str) -> None:
    raise ValueError(message)


@app.task(name="interop.flaky", bind=True, max_retries=5)
def flaky(self: Any, succeed_after: int) -> int:
    """Retry (with ``KeyError('k')``) until the ``succeed_after``-th retry, then return the retry count."""
    if self.request.retries < succeed_after:
        raise self.retry(exc=KeyError("k"), countdown=0.1)
    return self.request.retries


@app.task(name="interop.clock")
def clock() -> float:
    """The worker's wall-clock time when the task runs (``time.time()``), to check countdowns."""
    return time.time()


@app.task(name="interop.sleep")
def sleep(seconds: float) -> float:
    """Keep the worker busy for ``seconds`` (used to run into a hard time limit)."""
    time.sleep(seconds)
    return seconds


# -- canvas (the same on both sides) ------------------------------------------------------------------

@app.task(name="interop.mul")
def mul(x: int, y: int) -> int:
    return x * y


@app.task(name="interop.tsum")
def tsum(values: list[int]) -> int:
    return sum(values)


@app.task(name="interop.boom")
def boom(*args: Any) -> None:
    raise ValueError("boom", *args)


def _append(path: str, line: str) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(line + "\n")


@app.task(name="interop.note")
def note(value: Any, path: str, tag: str) -> Any:
    """A callback that records that it ran, and with what."""
    _append(path, f"{tag} {value!r}")
    return value


@app.task(name="interop.on_err")
def on_err(request: Any, exc: BaseException, traceback: str, path: str) -> None:
    """A new-style errback: called in the failing worker process."""
    _append(path, f"new {request.id} {exc!r}")


@app.task(name="interop.on_err_old")
def on_err_old(task_id: str, path: str) -> None:
    """An old-style errback: sent as a message with the failed task's id."""
    _append(path, f"old {task_id}")
