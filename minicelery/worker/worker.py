"""The worker: boot, the pool's lifetime, signals and the shutdown order.

Start-up order: import ``include``/``imports`` and finalize the app, print the banner, start the pool
(children fork after the app is imported, and before pika is: they never carry it), install the signal
handlers (so a shutdown signal while the broker is being retried is a shutdown too), then hand over to
the :class:`~minicelery.worker.consumer.Consumer`, which connects, consumes and runs the loop.

Shutdown: SIGTERM or a first SIGINT is *warm* (stop consuming, send waiting messages back, let running
tasks finish, settle them, exit 0); SIGQUIT or a second SIGINT is *cold* (children are terminated; a
running task that was acked early gets a FAILURE result saying so, an ``acks_late`` one goes back to the
queue; exit 1). Celery's counterpart is ``celery.apps.worker`` with ``celery.worker.WorkController``.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import threading
from typing import Any

# The app imports sending and results when first used; children send tasks and read results, so they
# come in here, once, before the children fork and share them.
from .. import result, sending  # noqa: F401
from ..brokers import open_transport
from ..imports import import_object
from .banner import banner
from .consumer import Consumer
from .job import make_handler
from .pool import Pool
from .remote import Remote
from .shutdown import Shutdown

__all__ = ["Worker", "default_hostname", "expand_hostname"]

logger = logging.getLogger("minicelery.worker")


def default_hostname() -> str:
    """Celery's default node name: ``celery@<host name>``."""
    return f"celery@{socket.gethostname()}"


def expand_hostname(name: str) -> str:
    """Expand ``%h`` (host name), ``%n`` (its first label) and ``%d`` (its domain) in a node name."""
    host = socket.gethostname()
    short, _, domain = host.partition(".")
    return name.replace("%h", host).replace("%n", short).replace("%d", domain)


class Worker:
    """One worker node: a consumer in the main process and a pool of child processes.

    Args:
        app: the app whose tasks to run.
        hostname: the node name (``celery@host``).
        concurrency: the number of child processes.
        queues: the queues to consume from (default: ``task_default_queue``).
        loglevel: the logging level (decides whether the banner lists tasks).
        prefetch_multiplier: messages reserved per child (``worker_prefetch_multiplier``).
        max_tasks_per_child: replace a child after this many tasks.
        heartbeat: AMQP heartbeat seconds (0 disables).
        app_spec: the ``-A`` string, so children started with ``spawn`` can import the app.
        start_method: multiprocessing start method (default ``fork``).
        time_limit: hard time limit for tasks that set none (``--time-limit``, ``task_time_limit``).
        soft_time_limit: soft time limit likewise.
        handle_signals: install the SIGTERM/SIGINT/SIGQUIT handlers (only possible in the main thread;
            a worker run in a thread is stopped through :attr:`shutdown` instead).
        banner: print the start-up banner.
        task_events: send task events (``-E``; default ``worker_send_task_events``).
        heartbeats: send worker-online/-heartbeat/-offline events (off: ``--without-heartbeat``).
    """

    def __init__(self, app: Any, *, hostname: str | None = None, concurrency: int | None = None,
                 queues: list[str] | None = None, loglevel: int = logging.WARNING,
                 prefetch_multiplier: int | None = None, max_tasks_per_child: int | None = None,
                 heartbeat: float | None = None, app_spec: str | None = None,
                 start_method: str | None = None, time_limit: float | None = None,
                 soft_time_limit: float | None = None, handle_signals: bool = True,
                 banner: bool = True, task_events: bool | None = None, heartbeats: bool = True) -> None:
        conf = app.conf
        self.app = app
        self.hostname = expand_hostname(hostname or default_hostname())
        self.concurrency = concurrency or conf.worker_concurrency or os.cpu_count() or 2
        self.queues = queues or [conf.task_default_queue]
        self.loglevel = loglevel
        multiplier = conf.worker_prefetch_multiplier if prefetch_multiplier is None else prefetch_multiplier
        self.prefetch_count = self.concurrency * multiplier
        self.max_tasks_per_child = max_tasks_per_child or conf.worker_max_tasks_per_child
        self.heartbeat = conf.broker_heartbeat if heartbeat is None else heartbeat
        self.app_spec = app_spec
        self.start_method = start_method
        self.time_limits = (time_limit if time_limit is not None else conf.task_time_limit,
                            soft_time_limit if soft_time_limit is not None else conf.task_soft_time_limit)
        self.handle_signals = handle_signals
        self.print_banner = banner
        self.task_events = conf.worker_send_task_events if task_events is None else task_events
        self.heartbeats = heartbeats
        self.shutdown = Shutdown(announce=handle_signals)
        #: Set once the consumer is connected and consuming (for whoever started this worker in a thread).
        self.ready = threading.Event()
        self.pool: Pool | None = None
        self.consumer: Consumer | None = None

    def start(self) -> int:
        """Run until shut down; return the exit code (0 after a warm shutdown, 1 after a cold one).

        Raises:
            OperationalError: the broker cannot be reached (and the retry settings say to give up).
        """
        conf = self.app.conf
        for name in tuple(conf.imports or ()) + tuple(conf.include or ()):
            import_object(name)
        self.app.finalize()
        if self.print_banner:
            print(banner(self.app, hostname=self.hostname, concurrency=self.concurrency, queues=self.queues,
                         loglevel=self.loglevel, task_events=bool(self.task_events)), flush=True)
        handler_factory = functools.partial(
            make_handler, self.app_spec if self.start_method == "spawn" and self.app_spec else self.app,
            self.hostname, self.loglevel)
        self.pool = Pool(self.concurrency, handler_factory, max_tasks_per_child=self.max_tasks_per_child,
                         start_method=self.start_method)
        # Fork before connecting: pika is not imported yet, so no child carries it (~7 MB each).
        self.pool.start()
        connection = None
        try:
            if self.handle_signals:
                self.shutdown.install()
            connection = open_transport(conf.broker_read_url or conf.broker_url, conf).connection(
                heartbeat=self.heartbeat)
            self.consumer = Consumer(self.app, self.pool, connection, self.shutdown, hostname=self.hostname,
                                     queues=self.queues, prefetch_count=self.prefetch_count,
                                     time_limits=self.time_limits, on_ready=self.ready.set)
            self.consumer.control = Remote(
                self.app, self.consumer, hostname=self.hostname, concurrency=self.concurrency,
                max_tasks_per_child=self.max_tasks_per_child, control=conf.worker_enable_remote_control,
                heartbeats=self.heartbeats, task_events=bool(self.task_events))
            self.consumer.run()
        finally:
            # Warm: the consumer returned once every running task was settled; the children exit now.
            self.pool.stop(cold=self.shutdown.mode == "cold")
            if connection is not None:
                connection.close()
        return 1 if self.shutdown.mode == "cold" else 0
