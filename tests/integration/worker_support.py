"""Running real ``python -m minicelery -A wtasks worker`` processes for the worker integration tests.

* :class:`WorkerProcess`: one worker subprocess (a ``cli_support.WorkerProcess`` running ``-A wtasks`` on
  one queue), so a test can wait for a log line with ``wait_for_line`` instead of sleeping.
* ``start_worker``: a fixture, a factory of workers on fresh queues; every worker is stopped (SIGTERM, then
  SIGQUIT, then SIGKILL) and every queue deleted at teardown.
* ``counter_file``: a fresh file path that counting tasks append to; :func:`count_runs` reads it.
* :func:`queue_counts` / :func:`wait_queue_settled`: what the broker holds in a queue (ready and unacked).
* :func:`child_pids`: the live child processes of a pid, read from ``/proc``.
* :func:`wait_for_state`: poll an ``AsyncResult`` until it shows a state, with a deadline.

A test module loads the fixtures with ``pytest_plugins = ("worker_support",)`` and imports the helpers
with ``from worker_support import ...`` (this directory is on ``sys.path``, as pytest puts it there for
``conftest.py``). PYTEST_DONT_REWRITE: the module is imported before pytest could rewrite its asserts
(which carry their own messages), and this marker keeps pytest from warning about it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import broker_admin
import cli_support
import pytest
from broker_admin import BROKER_URL, delete_queues

#: How long a worker may take to log ``ready.``.
START_TIMEOUT = 30.0


def unique_name(prefix: str = "w") -> str:
    """A fresh queue name for one test."""
    return f"minicelery-{prefix}-{uuid.uuid4().hex[:12]}"


class WorkerProcess(cli_support.WorkerProcess):
    """A ``-A wtasks`` worker on one queue (its stdout and stderr read as in :mod:`cli_support`).

    Args:
        queue: the queue to consume (``-Q``); also ``WTASKS_QUEUE`` for the task module.
        concurrency: ``-c``.
        hostname: ``-n`` (default: a unique ``w-<hex>@%h``).
        extra_args: more worker options, e.g. ``['--max-tasks-per-child', '2']``.
        env: more environment variables, e.g. ``{'WTASKS_ACCEPT': 'json,msgpack'}``.
    """

    def __init__(self, queue: str, *, concurrency: int = 1, hostname: str | None = None,
                 extra_args: tuple[str, ...] | list[str] = (), env: dict[str, str] | None = None,
                 loglevel: str = "INFO") -> None:
        self.queue = queue
        self.hostname = hostname or f"w-{uuid.uuid4().hex[:8]}@%h"
        super().__init__(["-A", "wtasks", "worker", "-l", loglevel, "-c", str(concurrency), "-Q", queue,
                          "-n", self.hostname, *extra_args],
                         env={"WTASKS_QUEUE": queue, "WTASKS_BROKER": BROKER_URL, **(env or {})})

    @property
    def lines(self) -> list[str]:
        """The log (stderr) lines read so far."""
        with self.err.changed:
            return list(self.err.lines)

    @property
    def log(self) -> str:
        """Everything the worker logged so far (stderr), as one string."""
        return self.stderr()

    def find(self, pattern: str, after: int = 0) -> list[str]:
        """Every log line from index ``after`` on that matches ``pattern`` (``re.search``)."""
        regex = re.compile(pattern)
        return [line for line in self.lines[after:] if regex.search(line)]

    def wait_ready(self, timeout: float = START_TIMEOUT) -> WorkerProcess:
        """Wait for ``<hostname> ready.``."""
        self.ready(timeout)
        return self

    def children(self) -> list[int]:
        """The pids of the worker's live child processes."""
        return child_pids(self.pid)

    def stop(self, timeout: float = 10.0) -> int | None:
        """Stop the worker: SIGTERM (warm), then SIGQUIT (cold), then SIGKILL; return its exit code."""
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGQUIT, 5.0), (signal.SIGKILL, 5.0)):
            if self.proc.poll() is not None:
                break
            try:
                self.proc.send_signal(sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(wait)
            except subprocess.TimeoutExpired:
                continue
        self.kill()  # reads the output to its end and closes the pipes; a no-op signal once it exited
        return self.proc.poll()


def child_pids(pid: int) -> list[int]:
    """The pids of the live (not zombie) processes whose parent is ``pid``, from ``/proc``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue  # it exited meanwhile
        fields = stat.rpartition(")")[2].split()  # after "pid (comm)": state, ppid, ...
        if len(fields) > 1 and int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry))
    return sorted(found)


def queue_counts(queue: str) -> tuple[int, int]:
    """``(messages_ready, messages_unacknowledged)`` of ``queue``, from the broker's admin interface."""
    for row in broker_admin.list_queues():
        if row["name"] == queue:
            return int(row["messages_ready"]), int(row["messages_unacknowledged"])
    raise AssertionError(f"queue {queue!r} not found by {broker_admin.BROKER_NAME}'s admin interface")


def wait_queue_settled(queue: str, expected: tuple[int, int] = (0, 0), timeout: float = 10.0) -> None:
    """Wait until ``queue_counts(queue) == expected`` (RabbitMQ updates its counters asynchronously)."""
    deadline = time.monotonic() + timeout
    counts = queue_counts(queue)
    while counts != expected:
        assert time.monotonic() < deadline, f"queue {queue} holds (ready, unacked)={counts}, not {expected}"
        time.sleep(0.2)  # polling interval of a condition with a deadline
        counts = queue_counts(queue)


def wait_for_state(result: Any, wanted: str, timeout: float = 10.0) -> list[str]:
    """Poll ``result.state`` until it is ``wanted``; return the distinct states seen, in order."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        state = result.state
        if not seen or seen[-1] != state:
            seen.append(state)
        if state == wanted:
            return seen
        assert time.monotonic() < deadline, f"{result!r} never reached {wanted}; states seen: {seen}"
        time.sleep(0.01)  # polling interval of a condition with a deadline


def count_runs(path: str | Path) -> int:
    """How many runs a counting task recorded in ``path`` (0 if it never ran)."""
    try:
        return len(Path(path).read_text().splitlines())
    except FileNotFoundError:
        return 0


# -- fixtures -----------------------------------------------------------------------------------------

@pytest.fixture
def start_worker(broker_url: str) -> Iterator[Callable[..., WorkerProcess]]:
    """A factory ``start_worker(concurrency=1, extra_args=(), env=None, hostname=None, wait=True)``.

    Each worker consumes a fresh queue (``worker.queue``); it is started and, unless ``wait`` is false,
    has logged ``ready.`` when returned. At teardown every worker is stopped and every queue deleted.
    """
    workers: list[WorkerProcess] = []

    def start(concurrency: int = 1, extra_args: tuple[str, ...] | list[str] = (),
              env: dict[str, str] | None = None, hostname: str | None = None,
              wait: bool = True, queue: str | None = None) -> WorkerProcess:
        worker = WorkerProcess(queue or unique_name(), concurrency=concurrency, hostname=hostname,
                               extra_args=extra_args, env=env)
        workers.append(worker)
        if wait:
            worker.wait_ready()
        return worker

    try:
        yield start
    finally:
        for worker in workers:
            worker.stop()
        delete_queues(sorted({worker.queue for worker in workers}))


@pytest.fixture(scope="module")
def shared_worker(broker_url: str) -> Iterator[WorkerProcess]:
    """One ``-c 2`` worker for a whole test module (for tests that need nothing special); its queue is
    fresh and deleted at the end of the module. Tests tell their lines apart by task id."""
    worker = WorkerProcess(unique_name("shared"), concurrency=2)
    try:
        worker.wait_ready()
        yield worker
    finally:
        worker.stop()
        delete_queues([worker.queue])


@pytest.fixture(scope="module")
def client_app() -> Iterator[Any]:
    """The ``wtasks`` app as the tests' client; its connection (and so its auto-delete reply queue)
    is closed at the end of the module."""
    import wtasks

    try:
        yield wtasks.app
    finally:
        wtasks.app.broker.close()


@pytest.fixture
def counter_file(tmp_path: Path) -> str:
    """A fresh path for a counting task to append to."""
    return str(tmp_path / f"runs-{uuid.uuid4().hex[:8]}.txt")
