"""From deliveries to jobs, and from what the children report to results and acknowledgements.

The :class:`Dispatcher` is the consumer's bookkeeping, without I/O: it judges each delivery (refused,
expired, held for its ETA, or ready), gives ready requests to idle children, and turns the pool's events
into result messages (in its :class:`~minicelery.worker.outbox.Outbox`) and decided acknowledgements (in
its :class:`~minicelery.worker.acks.AckBook`), which the consumer sends. Celery's counterpart is
``celery.worker.strategy`` with ``celery.worker.request.Request``'s callbacks.
"""

from __future__ import annotations

import itertools
import logging
import time
from datetime import datetime, timezone
from typing import Any

from .. import states
from ..exceptions import TaskRevokedError, Terminated, TimeLimitExceeded, WorkerLostError
from ..transport import Delivery
from . import events as pool_events
from .acks import AckBook
from .job import JobResult, encode_result
from .outbox import Outbox
from .pool import Pool
from .request import Refusal, Request, read_delivery
from .state import RequestState

__all__ = ["Dispatcher"]

logger = logging.getLogger("minicelery.worker.consumer")


class Dispatcher:
    """Requests by stage, their acknowledgements and their results, for one worker.

    Args:
        app: the app whose tasks run.
        pool: the started pool the jobs go to.
        hostname: the node name, for STARTED results.
        time_limits: (hard, soft) limits for tasks whose message and class set none.
    """

    def __init__(self, app: Any, pool: Pool, *, hostname: str,
                 time_limits: tuple[float | None, float | None] = (None, None)) -> None:
        self.pool, self.hostname, self.time_limits = pool, hostname, time_limits
        conf = app.conf
        self.accept, self.result_serializer = conf.accept_content, conf.result_serializer
        self.send_results = app.backend.url != "disabled://"
        self.tasks = app.tasks
        self.generation = 0  # bumped for each new connection: older requests belong to a dead channel
        self.acks = AckBook()
        self.requests = RequestState()
        self.outbox = Outbox()
        self.accepting = True  # False once shutting down: deliveries go straight back
        self._job_ids = itertools.count(1)

    def new_connection(self) -> None:
        """A new connection consumes: deliveries of the old one are gone (the broker redelivers them),
        results it may not have written go out again."""
        self.generation += 1
        self.acks.forget()
        self.requests.forget_unstarted()
        self.outbox.connection_lost()

    # -- deliveries -------------------------------------------------------------------------------------

    def on_message(self, delivery: Delivery) -> None:
        """Judge one delivery and refuse, hold or ready it; never raise (called inside the connection)."""
        tag = delivery.delivery_tag
        self.acks.received(tag)
        try:
            if not self.accepting:  # shutting down: a delivery already on its way goes back at once
                return self.acks.reject(tag, requeue=True)
            found = read_delivery(delivery, self.tasks, self.accept, self.generation, self.send_results)
            if isinstance(found, Refusal):
                return self._refuse(tag, found)
            logger.info("Task %s received", found.label)
            if self._expired(found):
                return None
            eta = found.headers.eta
            if eta is not None and eta > datetime.now(timezone.utc):
                # Celery receives ETA tasks at once and keeps them unacked; the prefetch window grows by
                # one per held message (see Consumer._update_qos) so that the other tasks keep flowing.
                due = time.monotonic() + (eta - datetime.now(timezone.utc)).total_seconds()
                self.requests.hold(found, due)
            else:
                self.requests.ready.append(found)
        except Exception:  # a message we failed to foresee must not take the worker down
            logger.exception("Unexpected error handling message %r: rejected without requeue", tag)
            if self.acks.is_open(tag):  # unless decided before the error
                self.acks.reject(tag, requeue=False)
        return None

    def _refuse(self, tag: int, refusal: Refusal) -> None:
        logger.error(refusal.template, *refusal.values)
        if self.send_results and refusal.task_id and refusal.reply_to:
            reply = encode_result(refusal.task_id, states.FAILURE, refusal.error, traceback=None,
                                  serializer=self.result_serializer)
            self.outbox.add(refusal.reply_to, refusal.correlation_id or refusal.task_id, reply)
        self.acks.reject(tag, requeue=False)

    def _expired(self, request: Request) -> bool:
        expires = request.headers.expires
        if expires is None or expires > datetime.now(timezone.utc):
            return False
        logger.info("Discarding revoked task: %s", request.label)
        self._reply(request, states.REVOKED, TaskRevokedError("expired"))
        self.acks.ack(request.tag)
        return True

    def release_due(self) -> None:
        """Make the held requests whose ETA came ready (or answer them REVOKED when they expired)."""
        for request in self.requests.due(time.monotonic()):
            if not self._expired(request):
                self.requests.ready.append(request)

    def accept_ready(self) -> None:
        """Take as many ready requests as there are idle children; decide their early acks now."""
        for request in self.requests.accept(self.pool.idle_count()):
            if not request.acks_late:
                self.acks.ack(request.tag)

    def submit_accepted(self) -> None:
        """Give the accepted requests to their children (their early acks were sent meanwhile)."""
        for request in self.requests.take_accepted():
            job_id = next(self._job_ids)
            hard, soft = request.limits(self.time_limits)
            track = bool(request.task.track_started and request.job.send_result)
            self.pool.submit(job_id, request.job, soft_time_limit=soft, time_limit=hard,
                             report_start=track or hard is not None or soft is not None)
            self.requests.running[job_id] = request

    def handle_pool_events(self, events: list[pool_events.PoolEvent]) -> None:
        """Publish results and settle messages for what the children report."""
        for event in events:
            if isinstance(event, pool_events.JobDone):
                self._done(self.requests.running.pop(event.job_id), event.result)
            elif isinstance(event, pool_events.JobLost):
                self._lost(self.requests.running.pop(event.job_id), event.error)
            elif isinstance(event, pool_events.JobStarted):
                self._started(self.requests.running.get(event.job_id), event.pid)
            elif isinstance(event, pool_events.SoftLimitExceeded):
                request = self.requests.running.get(event.job_id)
                logger.warning("Soft time limit (%ss) exceeded for %s", event.limit,
                               request.label if request else event.job_id)
            elif isinstance(event, pool_events.ChildExited):
                logger.error("Process %r pid:%s exited with %r", event.name, event.pid, event.reason)

    def _started(self, request: Request | None, pid: int) -> None:
        if request is not None and request.task.track_started and request.job.send_result:
            self._reply(request, states.STARTED, {"pid": pid, "hostname": self.hostname})

    def _done(self, request: Request, result: Any) -> None:
        if not isinstance(result, JobResult):  # the handler itself broke: fail the task, keep going
            logger.error("Task handler raised error: %r", result)
            self._reply(request, states.FAILURE, WorkerLostError(f"Task handler raised error: {result!r}"))
            return self._settle(request, requeue=None)
        if result.reply is not None and request.headers.reply_to:
            self.outbox.add(request.headers.reply_to, request.headers.correlation_id, result.reply)
        return self._settle(request, requeue=result.requeue if result.state == states.REJECTED else None)

    def _lost(self, request: Request, error: BaseException) -> None:
        if isinstance(error, TimeLimitExceeded):
            logger.error("Hard time limit (%ss) exceeded for %s", error.args[0] if error.args else "?",
                         request.label)
        logger.error("Task handler raised error: %r", error)
        requeue = request.acks_late and (
            isinstance(error, Terminated)
            or (isinstance(error, WorkerLostError) and request.task.reject_on_worker_lost))
        if requeue:
            return self._settle(request, requeue=True)
        self._reply(request, states.FAILURE, error)
        return self._settle(request, requeue=None)

    def _settle(self, request: Request, *, requeue: bool | None) -> None:
        """Decide a finished request's message: ack, or reject (requeue or drop)."""
        if request.generation != self.generation or not self.acks.is_open(request.tag):
            return  # acked early already, or its channel is gone
        if requeue is None:
            self.acks.ack(request.tag)
        else:
            self.acks.reject(request.tag, requeue=requeue)

    def _reply(self, request: Request, state: str, value: Any) -> None:
        if request.job.send_result and request.headers.reply_to:
            reply = encode_result(request.headers.id, state, value, traceback=None,
                                  serializer=self.result_serializer)
            self.outbox.add(request.headers.reply_to, request.headers.correlation_id, reply)

    def requeue_waiting(self) -> None:
        """Send every request no child has taken back to its queue (never acked, so never lost)."""
        for request in self.requests.waiting():
            if self.acks.is_open(request.tag):
                self.acks.reject(request.tag, requeue=True)

    def terminate_accepted(self) -> None:
        """Cold shutdown: requests acked early but never given to a child will run nowhere: say so."""
        for request in self.requests.take_accepted():
            self._reply(request, states.FAILURE, Terminated("Terminated by a cold shutdown before it began"))
