"""The task module that the worker integration tests run in real ``python -m minicelery worker`` processes.

The worker imports it with ``-A wtasks`` and the tests import it too (as ``wtasks``, from this directory),
so that a custom exception raised by a task is rebuilt as the very class the client knows.

Configured from the environment, read once at import:

* ``WTASKS_BROKER``: the broker URL (default: ``MINICELERY_TEST_BROKER_URL``, the test broker, else
  RabbitMQ on 127.0.0.1:5672).
* ``WTASKS_QUEUE``: ``task_default_queue`` (tests also pass ``queue=`` explicitly when sending).
* ``WTASKS_ACCEPT``: comma-separated ``accept_content`` (default ``json``).
* ``WTASKS_BACKEND``: ``result_backend`` (default ``rpc://``; the canvas tests use ``file:///dir``).

Results go through ``rpc://``. Tasks that must be observed from outside their result (did it run? how
often?) append a line to a file whose path the test passes as an argument.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from minicelery import Celery
from minicelery.exceptions import SoftTimeLimitExceeded

BROKER = os.environ.get("WTASKS_BROKER") or os.environ.get("MINICELERY_TEST_BROKER_URL") \
    or "amqp://guest:guest@127.0.0.1:5672//"
QUEUE = os.environ.get("WTASKS_QUEUE", "minicelery-wtasks")
ACCEPT = [c.strip() for c in os.environ.get("WTASKS_ACCEPT", "json").split(",") if c.strip()]

BACKEND = os.environ.get("WTASKS_BACKEND", "rpc://")

app = Celery("wtasks", broker=BROKER, backend=BACKEND)
app.conf.task_default_queue = QUEUE
app.conf.accept_content = ACCEPT
app.conf.result_accept_content = ["json"]


class WtasksError(Exception):
    """A custom exception: the client must get this very class back (it imports this module too)."""


def _append(path: str, line: str) -> int:
    """Append ``line`` to ``path`` and return how many lines the file has now."""
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(line + "\n")
    with open(path, encoding="utf-8") as handle:
        return sum(1 for _ in handle)


# -- plain results ----------------------------------------------------------------------------------

@app.task
def add(x, y):
    return x + y


@app.task
def kw(a, b=0, *, c=None):
    return {"a": a, "b": b, "c": c}


@app.task
def fail(message="boom"):
    raise ValueError(message)


@app.task
def custom_fail(*args):
    raise WtasksError(*args)


@app.task
def sleepy(seconds):
    time.sleep(seconds)
    return seconds


@app.task
def getpid():
    return os.getpid()


def _wait_for(gate, timeout):
    deadline = time.monotonic() + timeout
    while not os.path.exists(gate):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the gate {gate} was not opened within {timeout}s")
        time.sleep(0.02)  # the task's own work: wait for the test to open the gate


@app.task
def hold(gate, timeout=30.0):
    """Run until the file ``gate`` exists (the test creates it); return the child's pid."""
    _wait_for(gate, timeout)
    return os.getpid()


@app.task
def loaded(*modules):
    """Which of ``modules`` this process has imported."""
    return sorted(name for name in modules if name in sys.modules)


@app.task
def stamp(path=None):
    """Return when it ran (epoch seconds); count the run in ``path`` if given."""
    if path:
        _append(path, "ran")
    return time.time()


@app.task
def counter(path):
    return _append(path, "ran")


@app.task(bind=True)
def whoami(self, *args, **kwargs):
    request = self.request
    return {
        "id": request.id, "args": request.args, "kwargs": request.kwargs, "retries": request.retries,
        "delivery_info": request.delivery_info, "hostname": request.hostname,
        "reply_to": request.reply_to, "correlation_id": request.correlation_id,
        "root_id": request.root_id, "parent_id": request.parent_id, "eta": request.eta,
        "called_directly": request.called_directly, "is_eager": request.is_eager,
    }


@app.task(track_started=True)
def tracked(seconds):
    time.sleep(seconds)
    return "tracked done"


@app.task(ignore_result=True)
def ignored(path):
    return _append(path, "ran")


# -- retries ----------------------------------------------------------------------------------------

@app.task(bind=True)
def retry_once(self, path, countdown=1):
    """Retry once with ``countdown``, then succeed; every run is counted in ``path``."""
    _append(path, f"{self.request.retries}")
    if self.request.retries < 1:
        raise self.retry(countdown=countdown)
    return f"done after {self.request.retries} retries"


@app.task(bind=True, max_retries=2)
def always_retry(self, *args):
    """Retry forever (immediately); ends as ``MaxRetriesExceededError`` after 2 retries."""
    raise self.retry(countdown=0)


@app.task(bind=True, max_retries=1)
def retry_with_exc(self):
    """Retry with ``exc=``; after the one retry allowed, that exception is the failure."""
    raise self.retry(exc=KeyError("k"), countdown=0)


@app.task(bind=True, autoretry_for=(KeyError,), max_retries=2, retry_backoff=1, retry_backoff_max=600,
          retry_jitter=False)
def auto_retry(self, path):
    """Raise KeyError twice (auto-retried with backoff 1 s then 2 s), then succeed."""
    _append(path, f"{self.request.retries} {time.time()}")
    if self.request.retries < 2:
        raise KeyError("auto")
    return "auto done"


@app.task(bind=True, autoretry_for=(KeyError,), max_retries=1, retry_backoff=False,
          retry_kwargs={"countdown": 0})
def auto_retry_exhausted(self):
    raise KeyError("always")


# -- time limits ------------------------------------------------------------------------------------

@app.task(soft_time_limit=1)
def soft_limit():
    try:
        for _ in range(100):
            time.sleep(0.1)
    except SoftTimeLimitExceeded:
        return "caught soft"
    return "not interrupted"


@app.task(time_limit=1)
def hard_limit():
    while True:
        time.sleep(0.05)


# -- child death ------------------------------------------------------------------------------------

@app.task
def exit_child():
    os._exit(1)


@app.task
def kill_self():
    os.kill(os.getpid(), signal.SIGKILL)


@app.task
def kill_at_gate(gate, timeout=30.0):
    """SIGKILL its own child once the file ``gate`` exists."""
    _wait_for(gate, timeout)
    os.kill(os.getpid(), signal.SIGKILL)


@app.task(bind=True, acks_late=True, reject_on_worker_lost=True)
def kill_first_delivery(self, path):
    """SIGKILL its own child on the first delivery; succeed once the message comes back redelivered."""
    _append(path, f"redelivered={self.request.delivery_info['redelivered']}")
    if not self.request.delivery_info["redelivered"]:
        os.kill(os.getpid(), signal.SIGKILL)
    return "survived redelivery"


@app.task(acks_late=True, reject_on_worker_lost=False)
def kill_late(path):
    """acks_late without reject_on_worker_lost: its child dies and the message is not requeued."""
    _append(path, "ran")
    os.kill(os.getpid(), signal.SIGKILL)


@app.task
def fork_helper_and_die(pid_file, lifetime):
    """Fork a helper that outlives its parent (inheriting its pipe and sentinel), then SIGKILL itself."""
    helper = os.fork()
    if helper == 0:
        time.sleep(lifetime)
        os._exit(0)
    Path(pid_file).write_text(str(helper))
    os.kill(os.getpid(), signal.SIGKILL)


# -- canvas ----------------------------------------------------------------------------------------

@app.task
def mul(x, y):
    return x * y


@app.task
def tsum(xs):
    return sum(xs)


@app.task
def echo(*args, **kwargs):
    return [list(args), kwargs]


@app.task
def boom(*args):
    raise ValueError("boom", *args)


@app.task
def on_err(request, exc, traceback, path):
    """A new-style errback: called in the failing worker process with the failed request."""
    _append(path, f"new {request.id} {exc!r} {os.getpid()} {traceback.splitlines()[-1]}")


@app.task(bind=True)
def on_err_bound(self, request, exc, traceback, path):
    """A bound new-style errback (Celery mis-sorts it as old style; minicelery calls it)."""
    _append(path, f"bound {request.id} {exc!r}")


@app.task
def on_err_old(task_id, path):
    """An old-style errback: sent as a message with the failed task's id first."""
    _append(path, f"old {task_id}")
    return task_id


@app.task
def note(value, path, tag):
    """A callback that records it ran (and with what)."""
    _append(path, f"{tag} {value!r}")
    return value


@app.task
def big(size):
    """Return a text of ``size`` characters (its log line must stay short)."""
    return "x" * size
