"""Fixtures of the interop suite: a real RabbitMQ, real Celery 5, and worker subprocesses of both kinds.

Run with ``tox -e interop`` (which installs Celery). Nothing here skips: without RabbitMQ on 127.0.0.1:5672
or without the ``celery`` package, the tests fail and say why.

* ``broker_url``: the URL of the test broker, checked once per session.
* ``pika_channel``: a plain pika channel, to look at the broker without going through either library.
* ``unique_queue``: a factory of fresh queue names; each queue and the exchange of the same name is
  deleted at teardown.
* ``start_worker``: a module-scoped factory that starts a Celery or minicelery worker subprocess on a
  unique queue, waits until it says ``ready.``, and stops it (then deletes its queue) at teardown. When a
  test fails, the worker's output is added to the report.
* ``mini_app`` / ``celery_app``: the client apps of ``mini_side.py`` and ``celery_side.py``; each test
  module points them at its worker's queue with ``configure``. ``clients``: both, set back to their
  defaults, for tests that only send.
* ``fresh_celery_app``: a new Celery client app, for a reply queue that nobody has declared yet.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pika
import pytest

try:
    import celery
except ImportError as exc:  # fail the whole suite loudly rather than skip it
    raise ImportError("The interop tests need the real Celery 5 package: run them with `tox -e interop` "
                      "(or install celery>=5.3,<6).") from exc

HOST, PORT = "127.0.0.1", 5672
BROKER_URL = f"amqp://guest:guest@{HOST}:{PORT}//"
HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
#: How long a worker may take to start (a cold Celery import takes about a second).
WORKER_START_TIMEOUT = 30.0
#: How long a warm shutdown may take before the worker's process group is killed.
WORKER_STOP_TIMEOUT = 15.0


def plain_connection() -> pika.BlockingConnection:
    """A plain pika connection to the test broker."""
    return pika.BlockingConnection(pika.ConnectionParameters(HOST, PORT, socket_timeout=5))


def delete_queues(*names: str) -> None:
    """Delete these queues and the exchanges of the same names (missing ones are no error)."""
    connection = plain_connection()
    try:
        channel = connection.channel()
        for name in names:
            channel.queue_delete(name)
            channel.exchange_delete(name)
    finally:
        connection.close()


def new_queue_name(prefix: str) -> str:
    return f"interop-{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def broker_url() -> str:
    """The test broker's URL; fails (never skips) when RabbitMQ is not listening on 127.0.0.1:5672."""
    try:
        socket.create_connection((HOST, PORT), timeout=5).close()
    except OSError as exc:
        pytest.fail(f"RabbitMQ is not reachable on {HOST}:{PORT} ({exc}); start it before the interop tests.")
    return BROKER_URL


@pytest.fixture
def pika_channel(broker_url: str) -> Iterator[Any]:
    """A plain pika channel on its own connection, closed at teardown."""
    connection = plain_connection()
    try:
        yield connection.channel()
    finally:
        if connection.is_open:
            connection.close()


@pytest.fixture
def unique_queue(broker_url: str) -> Iterator[Callable[[str], str]]:
    """A factory ``unique_queue(prefix) -> name``; every name it gave is deleted at teardown."""
    names: list[str] = []

    def make(prefix: str = "q") -> str:
        names.append(new_queue_name(prefix))
        return names[-1]

    yield make
    if names:
        delete_queues(*names)


class WorkerProcess:
    """A worker subprocess whose output (stdout and stderr together) is collected by a reader thread."""

    def __init__(self, kind: str, argv: list[str], env: dict[str, str], queue: str) -> None:
        self.kind = kind
        self.queue = queue
        self.lines: list[str] = []
        self._changed = threading.Condition()  # notified at each new line and at the end of the output
        self._ended = False
        # A session of its own, so that the finalizer can kill the worker and its pool children together.
        self.process = subprocess.Popen(argv, cwd=HERE, env=env, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self._reader = threading.Thread(target=self._read, name=f"{kind}-worker-output", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._ended = True
            self._changed.notify_all()

    def output(self) -> str:
        with self._changed:
            return "\n".join(self.lines)

    def wait_for_line(self, text: str, timeout: float) -> bool:
        """Block until a line of output contains ``text`` (True), or the output ends or time runs out."""
        with self._changed:
            self._changed.wait_for(lambda: self._ended or any(text in line for line in self.lines), timeout)
            return any(text in line for line in self.lines)

    def wait_ready(self, timeout: float) -> None:
        """Block until the worker logged ``ready.``; fail with its output if it exited or took too long."""
        if not self.wait_for_line(" ready.", timeout):  # both workers log "<node name> ready." when consuming
            self.stop()
            pytest.fail(f"The {self.kind} worker did not become ready within {timeout}s "
                        f"(exit code {self.process.returncode}). Its output:\n{self.output()}")

    def terminate(self) -> None:
        """Ask for a warm shutdown: SIGTERM to the worker's main process only."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        """Warm shutdown (see :meth:`terminate`); kill the worker's whole process group if that hangs."""
        self.terminate()
        try:
            self.process.wait(WORKER_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        # Children of a worker that died badly: they share its session (process group id = its pid).
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self._reader.join(5)


def worker_env(queue: str, **extra: str) -> dict[str, str]:
    """The environment of a worker subprocess: ``INTEROP_*`` settings, and this tree first on the path."""
    env = dict(os.environ)
    # The working tree's minicelery (not a copy installed in site-packages), and the *_side modules.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), str(REPO), env.get("PYTHONPATH")]))
    env.update({"INTEROP_BROKER_URL": BROKER_URL, "INTEROP_QUEUE": queue, **extra})
    return env


def worker_argv(kind: str, queue: str, concurrency: int) -> list[str]:
    if kind == "celery":
        # prefork, not solo: a solo worker without heartbeats took 10 s to act on SIGTERM (and more than
        # 20 s on SIGQUIT), as nothing else wakes its event loop; prefork stops in about 1.5 s.
        return [sys.executable, "-m", "celery", "-A", "celery_side", "worker", "-l", "INFO",
                "-c", str(concurrency), "-Q", queue, "-n", f"{queue}@%h", "-P", "prefork",
                "--without-mingle", "--without-gossip", "--without-heartbeat"]
    if kind == "minicelery":
        return [sys.executable, "-m", "minicelery", "-A", "mini_side", "worker", "-l", "INFO",
                "-c", str(concurrency), "-Q", queue, "-n", f"{queue}@%h", "--without-heartbeat"]
    raise ValueError(f"unknown worker kind {kind!r}")


@pytest.fixture(scope="module")
def start_worker(broker_url: str) -> Iterator[Callable[..., WorkerProcess]]:
    """A factory ``start_worker(kind, concurrency=1, **env) -> WorkerProcess`` (kind: celery, minicelery).

    Each worker consumes its own unique queue (``worker.queue``); ``env`` adds ``INTEROP_*`` variables,
    e.g. ``INTEROP_ACCEPT_CONTENT='msgpack'``. Every worker is stopped, and its queue deleted, at the end
    of the module.
    """
    workers: list[WorkerProcess] = []

    def start(kind: str, concurrency: int = 1, **env: str) -> WorkerProcess:
        queue = new_queue_name(kind)
        worker = WorkerProcess(kind, worker_argv(kind, queue, concurrency), worker_env(queue, **env), queue)
        workers.append(worker)
        worker.wait_ready(WORKER_START_TIMEOUT)
        return worker

    yield start
    for worker in workers:  # all at once: a warm shutdown takes a second or two
        worker.terminate()
    for worker in workers:
        worker.stop()
    if workers:
        delete_queues(*(worker.queue for worker in workers))


@pytest.fixture(scope="session")
def mini_app(broker_url: str) -> Iterator[Any]:
    """``mini_side.app``, the minicelery client; its rpc reply queue is deleted at the end of the session."""
    import mini_side

    yield mini_side.app
    reply_queue = mini_side.app.thread_oid
    mini_side.app.close()
    delete_queues(reply_queue)


@pytest.fixture(scope="session")
def celery_app(broker_url: str) -> Iterator[Any]:
    """``celery_side.app``, the Celery client; its rpc reply queue is deleted at the end of the session."""
    import celery_side

    yield celery_side.app
    reply_queue = celery_side.app.thread_oid
    celery_side.app.close()
    delete_queues(reply_queue)


@pytest.fixture
def clients(celery_app: Any, mini_app: Any) -> tuple[Any, Any]:
    """Both client apps, with their defaults (nothing here reaches a worker)."""
    import celery_side
    import mini_side

    celery_side.configure({})
    mini_side.configure({})
    return celery_app, mini_app


@pytest.fixture
def fresh_celery_app(broker_url: str) -> Iterator[Any]:
    """A new Celery client app, whose rpc reply queue (named by its ``thread_oid``) nobody declared yet."""
    app = celery.Celery(f"interop-probe-{uuid.uuid4().hex[:8]}", broker=broker_url, backend="rpc://")
    yield app
    app.close()
    delete_queues(app.thread_oid)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Add the output of every worker the test used to the report of a failed test."""
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for name, value in getattr(item, "funcargs", {}).items():
            if isinstance(value, WorkerProcess):
                report.sections.append((f"{value.kind} worker output ({name})", value.output()[-20000:]))
