"""Run a real worker inside a test: :func:`start_worker`, named after Celery's
``celery.contrib.testing.worker.start_worker``.

The worker is the real one — its consumer, its prefork pool of child processes — run on a thread of
the calling process. With ``broker_url = 'memory://'`` and ``result_backend = 'rpc://'`` it needs no
broker server at all::

    app = Celery("proj", broker="memory://", backend="rpc://")

    @app.task
    def add(x, y):
        return x + y

    with start_worker(app):
        assert add.delay(2, 3).get(timeout=10) == 5

Left out from Celery's: the ``solo`` and ``threads`` pools (the pool is always prefork, forked from the
worker's thread), the ``celery.ping`` readiness task (the worker is ready once it consumes), ``logfile``.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from typing import Any

from .exceptions import TimeoutError
from .worker.worker import Worker

__all__ = ["start_worker"]


@contextlib.contextmanager
def start_worker(app: Any, concurrency: int = 1, loglevel: int | str = logging.WARNING,
                 ready_timeout: float = 10.0, shutdown_timeout: float = 10.0,
                 **options: Any) -> Iterator[Worker]:
    """Start a worker for ``app`` on a thread, yield it once it consumes, and shut it down warm after.

    Args:
        app: the app whose tasks the worker runs.
        concurrency: how many child processes.
        loglevel: the worker's log level (``'INFO'`` or ``logging.INFO``).
        ready_timeout: how long to wait for the worker to consume before failing.
        shutdown_timeout: how long running tasks may take to finish at the end before they are terminated.
        **options: any other :class:`~minicelery.worker.worker.Worker` argument (``queues``, ...).

    Raises:
        TimeoutError: the worker did not start consuming within ``ready_timeout``.
        Exception: whatever stopped the worker (``OperationalError`` for an unreachable broker).
    """
    level = logging.getLevelName(loglevel.upper()) if isinstance(loglevel, str) else loglevel
    worker = Worker(app, concurrency=concurrency, loglevel=level, handle_signals=False, banner=False,
                    **options)
    failures: list[BaseException] = []
    # The app's transport exists before the pool forks, so that the children inherit their way to it: a
    # memory:// broker made after the fork would be a different, empty one in each child.
    app.broker  # noqa: B018 - created for its side effect

    def run() -> None:
        try:
            worker.start()
        except BaseException as exc:  # noqa: BLE001 - handed to the test's thread below
            failures.append(exc)
        finally:
            worker.ready.set()  # wake the waiter below if the worker never got there

    thread = threading.Thread(target=run, name=f"minicelery-worker-{worker.hostname}", daemon=True)
    thread.start()
    try:
        if not worker.ready.wait(ready_timeout):
            raise TimeoutError(f"the worker did not start consuming within {ready_timeout} s")
        if failures:
            raise failures[0]
        yield worker
    finally:
        worker.shutdown.warm()
        thread.join(shutdown_timeout)
        if thread.is_alive():
            worker.shutdown.cold()
            thread.join(shutdown_timeout)
    if failures:
        raise failures[0]
