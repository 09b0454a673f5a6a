"""The worker: boot, the main loop, reconnection and shutdown.

Start-up order: finalize the app (importing ``include``/``imports``), print the banner, start the pool
(children fork after the app is imported, and before pika is: they never carry it), connect to the
broker (unreachable: the children are stopped and the error raised), install signal handlers, declare
queues, set QoS and consume. The main loop is one thread: it waits in :meth:`Pool.poll` on the broker
socket and every child at once — woken by a delivery, a finished job, a time limit or the next ETA —
lets pika dispatch deliveries, and lets the :class:`Consumer` do the work.

Shutdown: SIGTERM or a first SIGINT is *warm* (stop consuming, send waiting messages back, let running
tasks finish, settle them, exit 0); SIGQUIT or a second SIGINT is *cold* (children are terminated; a
running task that was acked early gets a FAILURE result saying so, an ``acks_late`` one goes back to the
queue; exit 1). Broker loss: the connection is dropped and rebuilt with backoff while running tasks go
on; their results wait in an outbox, and the broker redelivers whatever was unacked. Celery's
counterpart is ``celery.apps.worker`` with ``celery.worker.consumer.Consumer``'s blueprint.
"""

from __future__ import annotations

import functools
import logging
import os
import platform
import signal
import socket
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..exceptions import OperationalError
from ..transport import QueueSpec
from ..urls import mask_broker_url
from .consumer import Consumer
from .job import make_handler
from .pool import Pool

if TYPE_CHECKING:
    from ..amqp import WorkerConnection

__all__ = ["Worker", "default_hostname", "expand_hostname"]

logger = logging.getLogger("minicelery.worker")

#: How long the loop may block on the broker before it looks at its flags again (shutdown latency).
LOOP_INTERVAL = 0.25

#: How long decided acks may wait for company (a result, more acks) before they are sent alone.
ACK_DELAY = 0.002

ARTLINES = [
    " --------------", "--- ***** -----", "-- ******* ----", "- *** --- * ---", "- ** ----------",
    "- ** ----------", "- ** ----------", "- ** ----------", "- *** --- * ---", "-- ******* ----",
    "--- ***** -----", " --------------",
]


def default_hostname() -> str:
    """Celery's default node name: ``celery@<host name>``."""
    return f"celery@{socket.gethostname()}"


def expand_hostname(name: str) -> str:
    """Expand ``%h`` (host name), ``%n`` (its first label) and ``%d`` (its domain) in a node name."""
    host = socket.gethostname()
    short, _, domain = host.partition(".")
    return name.replace("%h", host).replace("%n", short).replace("%d", domain)


class Worker:
    """One worker node: a broker connection in the main process and a pool of child processes.

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
    """

    def __init__(self, app: Any, *, hostname: str | None = None, concurrency: int | None = None,
                 queues: list[str] | None = None, loglevel: int = logging.WARNING,
                 prefetch_multiplier: int | None = None, max_tasks_per_child: int | None = None,
                 heartbeat: float | None = None, app_spec: str | None = None,
                 start_method: str | None = None, time_limit: float | None = None,
                 soft_time_limit: float | None = None) -> None:
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
        self.stopping: str | None = None  # None, "warm" or "cold"; set by signal handlers only
        self._draining = False
        self._next_service = 0.0  # when pika's I/O loop must run next even if the socket is quiet
        self.connection: WorkerConnection | None = None
        self.pool: Pool | None = None
        self.consumer: Consumer | None = None

    # -- start-up ---------------------------------------------------------------------------------------

    def start(self) -> int:
        """Run until shut down; return the exit code (0 after a warm shutdown, 1 after a cold one).

        Raises:
            OperationalError: the broker cannot be reached at start-up.
        """
        self._import_modules()
        self.app.finalize()
        print(self.banner(), flush=True)
        handler_factory = functools.partial(
            make_handler, self.app_spec if self.start_method == "spawn" and self.app_spec else self.app,
            self.hostname, self.loglevel)
        self.pool = Pool(self.concurrency, handler_factory, max_tasks_per_child=self.max_tasks_per_child,
                         start_method=self.start_method)
        # Fork before connecting: pika is not imported yet, so no child carries it (~7 MB each).
        self.pool.start()
        try:
            # Before connecting, so that a shutdown signal while waiting for the broker is one too.
            self._install_signal_handlers()
            if self._connect_on_startup():
                self.consumer = Consumer(self.app, self.pool, hostname=self.hostname,
                                         prefetch_count=self.prefetch_count, time_limits=self.time_limits)
                self._consume()
                logger.info("%s ready.", self.hostname)
                self._loop()
        finally:
            self._close()
        return 1 if self.stopping == "cold" else 0

    def _import_modules(self) -> None:
        from ..imports import import_object

        conf = self.app.conf
        for name in tuple(conf.imports or ()) + tuple(conf.include or ()):
            import_object(name)

    def _connect_on_startup(self) -> bool:
        """Connect, retrying only if ``broker_connection_retry_on_startup``; return False if a shutdown
        signal came while waiting to retry.

        Celery retries by default; minicelery fails fast with one clear paragraph instead, unless
        asked to retry, because a worker that silently waits for a mistyped URL helps nobody.
        """
        conf = self.app.conf
        # 0 or None means "retry forever", as in Celery.
        retries = conf.broker_connection_max_retries or None
        attempts = retries if conf.broker_connection_retry_on_startup else 1
        attempt = 0
        while True:
            attempt += 1
            self.connection = self._connection()
            try:
                self.connection.connect()
                return True
            except OperationalError as exc:
                if self.stopping is not None:
                    return False
                if attempts is not None and attempt >= attempts:
                    raise
                delay = min(2.0 * attempt, 30.0)
                url = mask_broker_url(conf.broker_url, "**")
                logger.error("consumer: Cannot connect to %s: %s.\nTrying again in %.2f seconds... "
                             "(%s/%s)", url, _reason(exc, url), delay, attempt, attempts)
                self._serve_children(delay, until=("warm", "cold"))
                if self.stopping is not None:
                    return False

    def _connection(self) -> WorkerConnection:
        from ..amqp import WorkerConnection  # here: the pool forks before pika is loaded

        conf = self.app.conf
        return WorkerConnection(conf.broker_read_url or conf.broker_url, heartbeat=self.heartbeat,
                                connect_timeout=conf.broker_connection_timeout,
                                transport_options=conf.broker_transport_options)

    def _consume(self) -> None:
        """Declare the queues, set QoS and start consuming on the current connection."""
        assert self.connection is not None and self.consumer is not None
        connection, consumer = self.connection, self.consumer
        # basic.qos with global=True: RabbitMQ reads it as a per-channel limit, as Celery relies on.
        connection.qos(self.prefetch_count)
        for queue in self.queues:
            connection.declare(QueueSpec(queue))
            connection.consume(queue, consumer.on_message)
        consumer.connection = connection
        assert self.pool is not None
        self.pool.watch(connection.fileno())
        consumer.flush()
        logger.info("Connected to %s", mask_broker_url(self.app.conf.broker_url, "**"))

    # -- the loop ---------------------------------------------------------------------------------------

    def _loop(self) -> None:
        assert self.connection is not None and self.consumer is not None
        while True:
            if self.stopping == "cold":
                return self._cold_shutdown()
            if self.stopping == "warm":
                if not self._draining:
                    self._draining = True
                    self._stop_consuming()
                if not self.consumer.running:
                    self.consumer.flush()
                    return None
            try:
                self._step()
            except OperationalError as exc:
                self._reconnect(exc)

    def _step(self) -> None:
        """Wait for the broker, a child or a deadline; let pika dispatch deliveries; do the work."""
        assert self.connection is not None and self.consumer is not None and self.pool is not None
        connection, consumer = self.connection, self.consumer
        # Sending (acks, results) may run pika's I/O loop, which may read deliveries it dispatches only
        # in process_events: then the socket stays quiet, so do not wait for it.
        timeout = 0.0 if connection.has_buffered_input else consumer.next_timeout(LOOP_INTERVAL)
        acks_waiting = consumer.acks_waiting
        socket_ready = self.pool.poll(min(timeout, ACK_DELAY) if acks_waiting else timeout)
        if acks_waiting and not socket_ready and not self.pool.has_events():
            consumer.flush()  # nothing came for a moment: settle what is decided, then wait
            if not connection.has_buffered_input:
                socket_ready = self.pool.poll(timeout)
        pending = True  # whether something happened since the last tick (or a due ETA may wait)
        if self.pool.has_events():
            consumer.tick()  # children first: one of them may be idle, waiting for its next job
            pending = False
        now = time.monotonic()
        if socket_ready or connection.has_buffered_input or now >= self._next_service:
            self._next_service = now + LOOP_INTERVAL  # heartbeats need a regular turn
            connection.process_events(0)
            pending = True
        if pending:
            consumer.tick()

    def _reconnect(self, exc: BaseException) -> None:
        """Rebuild the connection with backoff; running tasks go on and their results wait."""
        assert self.consumer is not None
        dropped = self.consumer.connection_lost()
        if self.pool is not None:
            self.pool.watch(None)
        logger.error("consumer: Connection to broker lost. Trying to re-establish the connection... "
                     "(%s; %d unacknowledged message(s) will be redelivered by the broker)", exc, dropped)
        if self.connection is not None:
            self.connection.close()
        conf = self.app.conf
        if not conf.broker_connection_retry:
            raise OperationalError(f"Connection to broker lost and broker_connection_retry is off: {exc}")
        limit = conf.broker_connection_max_retries or None  # 0 or None: retry forever, as in Celery
        attempt = 0
        while self.stopping != "cold":
            attempt += 1
            delay = min(2.0 * attempt, 30.0)
            try:
                self.connection = self._connection()
                self.connection.connect()
                self._consume()
                # A warm shutdown in progress cancelled the old consumers; the loop cancels the new ones
                # before it reads a delivery, so no new task starts while the worker drains.
                self._draining = False
                return
            except OperationalError as error:
                if limit is not None and attempt >= limit:
                    raise
                url = mask_broker_url(conf.broker_url, "**")
                logger.error("consumer: Cannot connect to %s: %s.\nTrying again in %.2f seconds... "
                             "(%s/%s)", url, _reason(error, url), delay, attempt, limit)
                self._serve_children(delay, until=("cold",))
                if self.stopping == "warm" and not self.consumer.running:
                    return

    def _serve_children(self, delay: float, until: tuple[str, ...]) -> None:
        """Wait ``delay`` s without the broker (or until a shutdown in ``until`` is asked for), still
        serving the children: results collected, dead children replaced, time limits enforced."""
        assert self.pool is not None
        deadline = time.monotonic() + delay
        while self.stopping not in until and (remaining := deadline - time.monotonic()) > 0:
            self.pool.poll(min(remaining, LOOP_INTERVAL))
            if self.consumer is not None:  # None while the first connection is still being made
                self.consumer.handle_pool_events(self.pool.events())

    # -- shutdown ---------------------------------------------------------------------------------------

    def _install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self._on_sigterm)
        signal.signal(signal.SIGINT, self._on_sigint)
        signal.signal(signal.SIGQUIT, self._on_sigquit)

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        self._warm()

    def _on_sigint(self, signum: int, frame: Any) -> None:
        if self.stopping is None:
            _say("worker: Hitting Ctrl+C again will initiate cold shutdown, terminating all running "
                 "tasks!")
            self._warm()
        else:
            _say("worker: Hitting Ctrl+C again will terminate all running tasks!")
            self._cold()

    def _on_sigquit(self, signum: int, frame: Any) -> None:
        _say("worker: Hitting Ctrl+C again will terminate all running tasks!")
        self._cold()

    # Signal handlers only set flags: the main thread may be inside pika when a signal arrives, and
    # pika is not reentrant. The loop notices the flag within LOOP_INTERVAL and acts on it.
    def _warm(self) -> None:
        if self.stopping is None:
            _say("worker: Warm shutdown (MainProcess)")
            self.stopping = "warm"

    def _cold(self) -> None:
        if self.stopping != "cold":
            _say("worker: Cold shutdown (MainProcess)")
            self.stopping = "cold"

    def _stop_consuming(self) -> None:
        """Cancel the consumers and send every message not yet running back to the queue."""
        if self.consumer is None or self.consumer.connection is None:
            return
        try:
            self.consumer.connection.cancel_all()
            self.consumer.requeue_waiting()
        except OperationalError:
            pass  # the connection is gone anyway: the broker requeues everything unacked

    def _cold_shutdown(self) -> None:
        assert self.pool is not None and self.consumer is not None
        self.pool.stop(cold=True)
        self.consumer.handle_pool_events(self.pool.events())
        self.consumer.requeue_waiting()
        try:
            self.consumer.flush()
        except OperationalError:
            logger.error("Cold shutdown: the broker is unreachable; unacknowledged messages will be "
                         "redelivered by the broker, %d result(s) could not be sent",
                         len(self.consumer.outbox))

    def _close(self) -> None:
        if self.pool is not None:
            self.pool.stop(cold=self.stopping == "cold")
        if self.connection is not None:
            self.connection.close()

    # -- banner -----------------------------------------------------------------------------------------

    def banner(self) -> str:
        """The start-up banner, in Celery's shape."""
        app, conf = self.app, self.app.conf
        info = [
            f"{self.hostname} v{__version__} (minicelery)", "",
            f"{platform.platform()} {datetime.now():%Y-%m-%d %H:%M:%S}", "",
            "[config]",
            f".> app:         {app.main or '__main__'}:{id(app):#x}",
            f".> transport:   {mask_broker_url(conf.broker_url, '**')}",
            f".> results:     {app.backend.url}",
            f".> concurrency: {self.concurrency} (prefork)",
            ".> task events: OFF (minicelery sends no events)", "",
            "[queues]",
        ]
        info += [f".> {q:<16} exchange={q}(direct) key={q}" for q in sorted(self.queues)] + [""]
        lines = [" "] + [f"{ARTLINES[i]} {line}" if i < len(ARTLINES) else " " * 16 + line
                         for i, line in enumerate(info)]
        text = "\n".join(lines) + "\n"
        if self.loglevel <= logging.INFO:
            names = sorted(name for name in app.tasks
                           if self.loglevel <= logging.DEBUG or not name.startswith("celery."))
            text += "\n[tasks]\n" + "\n".join(f"  . {name}" for name in names) + "\n"
        return text


def _reason(error: BaseException, url: str) -> str:
    """The text of a connection error without the ``Cannot connect to <url>: `` the log line says already."""
    return str(error).removeprefix(f"Cannot connect to {url}: ")


def _say(text: str) -> None:
    """Write a line to stdout from a signal handler (``os.write`` is safe there; ``print`` is not)."""
    os.write(1, (text + "\n").encode())

