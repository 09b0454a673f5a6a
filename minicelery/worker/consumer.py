"""The consumer: owns the broker connection and the worker's loop — deliveries in, jobs out, results and
acknowledgements back, reconnection when the broker goes away.

One loop turn (:meth:`Consumer.turn`): wait on the connection, which also watches the pool's descriptor
and wakes for a delivery, a finished job or the next deadline; read what the children reported; release
ETA tasks that fell due; give ready requests to idle children; send results and acknowledgements. What
to do with each delivery and each report is the :class:`~minicelery.worker.dispatch.Dispatcher`'s
bookkeeping; the consumer does the I/O. Everything happens on the worker's main thread: no locks.

Acknowledgement follows Celery: early (the default) when a child takes the job — the ack leaves in the
wait that comes before the job is handed over, so an early-acked task never runs unless its ack went
out — or after the outcome with ``acks_late``. A message is never acked before its fate is decided and is
settled once it is. Bad messages are refused (logged, rejected without requeue, answered with a FAILURE
when the sender waits) and the worker never crashes or loops on one. Remote control and monitoring
events hook in through one optional object, :attr:`Consumer.control` (``worker/remote.py``): told of
each new connection, given a moment in each turn, and flushed at its end, after the results, the acks
and the jobs: nothing the turn does waits for a monitor. Celery's counterpart is
``celery.worker.consumer.Consumer`` with its blueprint steps, ``strategy`` and ``request``.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import time
from collections.abc import Callable
from typing import Any

from ..exceptions import OperationalError
from ..transport import Connection, QueueSpec
from .dispatch import Dispatcher
from .pool import Pool
from .shutdown import Shutdown

__all__ = ["Consumer"]

logger = logging.getLogger("minicelery.worker.consumer")

#: The longest the loop waits before it looks at its shutdown flag again, in seconds.
LOOP_INTERVAL = 0.25

#: AMQP's largest prefetch count (a short integer); past it the window is lifted, as Celery does.
MAX_PREFETCH = 65535


class Consumer:
    """Consumes the worker's queues into its pool, and settles every message it receives.

    Args:
        app: the app whose tasks run.
        pool: the started pool.
        connection: an unopened consuming connection (see :mod:`minicelery.transport`).
        shutdown: the worker's shutdown flag, set by its signal handlers.
        hostname: the node name, for STARTED results.
        queues: the queues to declare and consume.
        prefetch_count: the prefetch window (0: unlimited).
        time_limits: (hard, soft) limits for tasks whose message and class set none.
        on_ready: called once, when the first connection consumes.
    """

    def __init__(self, app: Any, pool: Pool, connection: Connection, shutdown: Shutdown, *, hostname: str,
                 queues: list[str], prefetch_count: int,
                 time_limits: tuple[float | None, float | None] = (None, None),
                 on_ready: Callable[[], None] = lambda: None) -> None:
        self.app, self.pool, self.connection, self.shutdown = app, pool, connection, shutdown
        self.hostname, self.queues, self.prefetch_count = hostname, queues, prefetch_count
        self.dispatch = Dispatcher(app, pool, hostname=hostname, time_limits=time_limits)
        self.cancelled: list[str] = []  # queues whose consumer the broker cancelled
        self._qos_sent: int | None = None
        self._on_ready = on_ready
        #: Remote control and events (a ``worker.remote.Remote``), or None; the worker sets it.
        self.control: Any = None

    # -- the loop ---------------------------------------------------------------------------------------

    def run(self) -> None:
        """Connect, then consume until the worker shuts down (warm: every running task settled first).

        Raises:
            OperationalError: the broker cannot be reached and the retry settings say to give up.
        """
        try:
            if self.connect(startup=True):
                logger.info("%s ready.", self.hostname)
                self._on_ready()
                self._loop()
        finally:
            if self.control is not None:
                with contextlib.suppress(OperationalError):  # the broker is gone: nobody to tell
                    self.control.stopped(self.connection)
            self.connection.unwatch()  # the pool's descriptor closes with the pool

    def _loop(self) -> None:
        """Turn until a shutdown is complete, reconnecting whenever the connection is lost."""
        while True:
            mode = self.shutdown.mode
            if mode == "cold":
                return self._cold_shutdown()
            if mode == "warm":
                if self.dispatch.accepting:
                    self._stop_consuming()
                if not self.dispatch.requests.busy:
                    return self._flush_quietly()
            try:
                self.turn()
            except OperationalError as exc:
                self._connection_lost(exc)
                if not self.connect(startup=False):
                    return None

    def turn(self) -> None:
        """One turn of the loop: wait for I/O, a child or a deadline, then do everything that became
        possible. ``OperationalError`` when the connection is lost."""
        self.connection.wait(self._timeout())
        self.dispatch.outbox.written()
        self.pool.poll(0)
        self.dispatch.handle_pool_events(self.pool.events())
        self._repair_consumers()
        self.dispatch.release_due()
        self.dispatch.accept_ready()
        self._update_qos()
        if self.control is not None:
            self.control.turn(self.connection)
        self.flush()
        if self.dispatch.requests.accepted:
            # Their early acks must leave before the children get the jobs: a wait that blocks for
            # nothing writes them (and may read more deliveries, which wait for the next turn).
            self.connection.wait(0)
            self.dispatch.outbox.written()
            self.dispatch.submit_accepted()
        if self.control is not None:  # events go last: the turn's results, acks and jobs wait for none
            self.control.flush(self.connection)

    def _timeout(self) -> float:
        """How long the next wait may last: until the next ETA, time limit or event flush, at most
        ``LOOP_INTERVAL``."""
        requests = self.dispatch.requests
        control = self.control.next_deadline() if self.control is not None else None
        deadlines = [d for d in (requests.next_due(), self.pool.next_deadline(), control) if d is not None]
        return max(0.0, min([LOOP_INTERVAL, *(d - time.monotonic() for d in deadlines)]))

    # -- connecting -------------------------------------------------------------------------------------

    def connect(self, *, startup: bool) -> bool:
        """Connect and consume, retrying as the settings say; False if a shutdown came meanwhile.

        Celery retries at start-up by default; minicelery fails fast with one clear paragraph unless
        ``broker_connection_retry_on_startup`` is set, because a worker silently waiting for a mistyped
        URL helps nobody. A connection lost later is rebuilt while ``broker_connection_retry`` is on."""
        conf = self.app.conf
        limit = conf.broker_connection_max_retries or None  # 0 or None: retry forever, as in Celery
        if startup and not conf.broker_connection_retry_on_startup:
            limit = 1
        elif not startup and not conf.broker_connection_retry:
            raise OperationalError("Connection to broker lost and broker_connection_retry is off",
                                   url=self.connection.url, reason="broker_connection_retry is off")
        for attempt in itertools.count(1):
            try:
                self.connection.connect()
                self._consume()
                return True
            except OperationalError as exc:
                if limit is not None and attempt >= limit:
                    raise
                delay = min(2.0 * attempt, 30.0)
                logger.error("consumer: Cannot connect to %s: %s.\nTrying again in %.2f seconds... (%s/%s)",
                             exc.url or self.connection.url, exc.reason or exc, delay, attempt, limit)
                self._serve_children(delay)
                if self.shutdown.mode == "cold" or (self.shutdown.mode == "warm"
                                                    and not self.dispatch.requests.busy):
                    return False
        raise AssertionError("unreachable")  # pragma: no cover - itertools.count never ends

    def _consume(self) -> None:
        """Declare the queues, set the prefetch window and consume, on a fresh connection."""
        self.dispatch.new_connection()
        self._qos_sent = None
        self.connection.watch(self.pool.fileno(), _nothing)
        self._update_qos()
        for queue in self.queues:
            self.connection.declare(QueueSpec(queue))
            self.connection.consume(queue, self.dispatch.on_message, self.cancelled.append)
        if self.control is not None:
            self.control.connected(self.connection)
        if not self.dispatch.accepting:  # a warm shutdown began while disconnected: consume nothing new
            self.connection.cancel_all()
        logger.info("Connected to %s", self.connection.url)

    def _connection_lost(self, exc: OperationalError) -> None:
        """Say so; the next connection forgets the lost channel's deliveries (the broker redelivers them)."""
        dropped = len(self.dispatch.acks)
        logger.error("consumer: Connection to broker lost. Trying to re-establish the connection... "
                     "(%s; %d unacknowledged message(s) will be redelivered by the broker)", exc, dropped)

    def _serve_children(self, delay: float) -> None:
        """Wait ``delay`` s without the broker (or until a cold shutdown), still serving the children:
        results collected into the outbox, dead children replaced, time limits enforced."""
        deadline = time.monotonic() + delay
        while self.shutdown.mode != "cold" and (remaining := deadline - time.monotonic()) > 0:
            self.pool.poll(min(remaining, LOOP_INTERVAL))
            self.dispatch.handle_pool_events(self.pool.events())
            if self.shutdown.mode == "warm" and not self.dispatch.requests.busy:
                return

    def _repair_consumers(self) -> None:
        """Consume again from queues whose consumer the broker cancelled (deleted, say), as Celery does."""
        while self.cancelled:
            queue = self.cancelled.pop()
            logger.warning("consumer: the broker cancelled the consumer of queue %r (deleted or expired?); "
                           "declaring it and consuming again", queue)
            if self.dispatch.accepting:
                self.connection.declare(QueueSpec(queue))
                self.connection.consume(queue, self.dispatch.on_message, self.cancelled.append)

    def _update_qos(self) -> None:
        """Keep the prefetch window at ``prefetch_count`` plus the ETA tasks held, or lift it past AMQP's
        limit (Celery turns the limit off then too): held messages keep their places."""
        if not self.prefetch_count:
            return
        held = self.dispatch.requests.held_count
        wanted = self.prefetch_count + held
        if wanted > MAX_PREFETCH:
            if self._qos_sent != 0:
                logger.warning("%d ETA tasks are held: the prefetch window would pass AMQP's %d, so it is "
                               "lifted until fewer are held", held, MAX_PREFETCH)
            wanted = 0
        if wanted != self._qos_sent:
            self.connection.qos(wanted)
            self._qos_sent = wanted

    # -- sending ----------------------------------------------------------------------------------------

    def flush(self) -> None:
        """Hand the results, then the acks and rejects decided so far, to the connection (they leave in
        its next wait)."""
        self.dispatch.outbox.publish(self.connection)
        for call in self.dispatch.acks.flush():
            if call.op == "ack":
                self.connection.ack(call.tag, multiple=call.multiple)
            else:
                self.connection.reject(call.tag, requeue=call.requeue)

    def _flush_quietly(self) -> None:
        """Send what is left before the worker exits; a broker gone by then redelivers what was unacked."""
        try:
            self.flush()
            self.connection.wait(0)
        except OperationalError:
            logger.error("Shutdown: the broker is unreachable; unacknowledged messages will be redelivered "
                         "by the broker, %d result(s) could not be sent",
                         len(self.dispatch.outbox))

    # -- shutdown ---------------------------------------------------------------------------------------

    def _stop_consuming(self) -> None:
        """Warm shutdown: cancel the consumers and send every message no child has taken back."""
        self.dispatch.accepting = False
        self.dispatch.requeue_waiting()
        try:
            self.connection.cancel_all()
        except OperationalError:
            pass  # the connection is gone anyway: the broker requeues everything unacked

    def _cold_shutdown(self) -> None:
        """Cold shutdown: terminate the children, report their jobs, requeue the rest, send what can be."""
        self.dispatch.accepting = False
        self.connection.unwatch()  # the pool's descriptor closes with the pool
        self.dispatch.terminate_accepted()
        self.pool.stop(cold=True)
        self.dispatch.handle_pool_events(self.pool.events())
        self.dispatch.requeue_waiting()
        self._flush_quietly()


def _nothing() -> None:
    """The pool's descriptor only has to wake the loop: every turn reads the pool anyway."""
