"""The real worker — consumer, prefork pool, child processes — run in-process on ``memory://``.

No broker server: ``start_worker`` runs the worker on a thread of this process, and the memory transport
carries task messages and rpc results. These tests check end-to-end behaviour (results, failures,
retries published from a child, ETAs, refusals, lost children, shutdown) without RabbitMQ.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from minicelery import Celery
from minicelery.exceptions import NotRegistered, TimeoutError, WorkerLostError
from minicelery.testing import start_worker


def make_app() -> Celery:
    app = Celery(f"mem{uuid.uuid4().hex[:6]}", broker=f"memory://{uuid.uuid4().hex}", backend="rpc://",
                 set_as_current=False)

    @app.task(name="t.add", shared=False)
    def add(x, y):
        return x + y

    @app.task(name="t.boom", shared=False)
    def boom(text):
        raise ValueError(text)

    @app.task(name="t.flaky", shared=False, bind=True, max_retries=3)
    def flaky(self, failures):
        if self.request.retries < failures:
            raise self.retry(countdown=0.05)
        return self.request.retries

    @app.task(name="t.pid", shared=False)
    def pid():
        return os.getpid()

    @app.task(name="t.die", shared=False)
    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    return app


@pytest.fixture
def app() -> Iterator[Celery]:
    app = make_app()
    yield app
    app.close()


def test_delay_then_get_with_no_broker_server(app):
    with start_worker(app):
        assert app.tasks["t.add"].delay(2, 3).get(timeout=10) == 5


def test_many_results_come_back_in_any_order_from_several_children(app):
    with start_worker(app, concurrency=2):
        results = [app.tasks["t.add"].delay(i, i) for i in range(200)]
        assert [r.get(timeout=10) for r in reversed(results)] == [2 * i for i in reversed(range(200))]
        pids = {app.tasks["t.pid"].delay().get(timeout=10) for _ in range(20)}
    assert os.getpid() not in pids  # tasks ran in child processes, not in this one


def test_a_failure_is_raised_on_the_client(app):
    with start_worker(app):
        result = app.tasks["t.boom"].delay("no")
        with pytest.raises(ValueError, match="no"):
            result.get(timeout=10)
        assert result.state == "FAILURE"


def test_a_retry_published_by_a_child_process_reaches_the_worker(app):
    with start_worker(app):
        assert app.tasks["t.flaky"].delay(2).get(timeout=10) == 2


def test_a_countdown_is_held_then_run(app):
    with start_worker(app):
        sent = time.monotonic()
        assert app.tasks["t.add"].apply_async((1, 1), countdown=0.3).get(timeout=10) == 2
        assert time.monotonic() - sent >= 0.3


def test_an_unknown_task_is_refused_with_not_registered(app):
    with start_worker(app):
        result = app.send_task("t.missing", (1,))
        with pytest.raises(NotRegistered):
            result.get(timeout=10)


def test_a_child_that_dies_is_reported_and_replaced(app):
    with start_worker(app):
        with pytest.raises(WorkerLostError):
            app.tasks["t.die"].delay().get(timeout=10)
        assert app.tasks["t.add"].delay(1, 2).get(timeout=10) == 3


def test_the_worker_stops_at_the_end_and_leaves_no_thread_nor_child(app):
    with start_worker(app, concurrency=2) as worker:
        assert app.tasks["t.add"].delay(1, 1).get(timeout=10) == 2
        pids = worker.pool.pids() if worker.pool else []
    assert pids and not any(_alive(pid) for pid in pids)
    assert not [t for t in threading.enumerate() if t.name.startswith("minicelery-worker")]


def test_nothing_is_lost_when_no_worker_runs(app):
    result = app.tasks["t.add"].delay(4, 4)
    with pytest.raises(TimeoutError):
        result.get(timeout=0.2)
    with start_worker(app):  # the message waited in the memory broker's queue
        assert result.get(timeout=10) == 8


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
