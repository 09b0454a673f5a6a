"""From deliveries to jobs, and from what the children report to results and acknowledgements.

The :class:`Dispatcher` is the consumer's bookkeeping, without I/O: it judges each delivery (refused,
expired, held for its ETA, or ready), gives ready requests to idle children, and turns the pool's events
into result messages (in its :class:`~minicelery.worker.outbox.Outbox`) and decided acknowledgements (in
its :class:`~minicelery.worker.acks.AckBook`), which the consumer sends. Remote control reaches in at
three places only: the ``revoked`` ids (discarded on arrival), :meth:`Dispatcher.terminate`, and the
optional ``on_event`` callback, set only while task events are on, which hears of each task transition.
Celery's counterpart is ``celery.worker.strategy`` with ``celery.worker.request.Request``'s callbacks.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import itertools
import logging
import os
import time
from collections.abc import Callable, Container
from datetime import UTC, datetime
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
        self.total: collections.Counter[str] = collections.Counter()  # task name → accepted (stats)
        self.revoked: Container[str] = frozenset()  # remote control puts its revoked set here
        self.terminated: dict[str, int] = {}  # task id → the signal a revoke sent its child
        self._killed: set[int] = set()  # pids a revoke signalled: their exit is no error
        #: ``on_event(kind, request, fields)`` for each task transition (received, started, succeeded,
        #: failed, retried, revoked) while task events are on; None otherwise, so the task path pays nothing.
        self.on_event: Callable[[str, Request, dict[str, Any]], None] | None = None

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
            found = read_delivery(delivery, self.tasks, self.accept, self.generation, self.send_results,
                                  events=self.on_event is not None)
            if isinstance(found, Refusal):
                return self._refuse(tag, found)
            logger.info("Task %s received", found.label)
            if self._discarded(found):
                return None
            eta = found.headers.eta
            if eta is not None and eta > datetime.now(UTC):
                # Celery receives ETA tasks at once and keeps them unacked; the prefetch window grows by
                # one per held message (see Consumer._update_qos) so that the other tasks keep flowing.
                due = time.monotonic() + (eta - datetime.now(UTC)).total_seconds()
                self.requests.hold(found, due)
            else:
                self.requests.ready.append(found)
            if self.on_event is not None:
                self.on_event("received", found, {})
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

    def _discarded(self, request: Request) -> bool:
        """Answer a revoked or expired request REVOKED and ack it, as Celery does; False for the others."""
        expires = request.headers.expires
        if request.headers.id in self.revoked:
            reason = "revoked"
        elif expires is not None and expires <= datetime.now(UTC):
            reason = "expired"
        else:
            return False
        logger.info("Discarding revoked task: %s", request.label)
        self._reply(request, states.REVOKED, TaskRevokedError(reason))
        self.acks.ack(request.tag)
        if self.on_event is not None:
            self.on_event("revoked", request, {"terminated": False, "signum": None,
                                               "expired": reason == "expired"})
        return True

    def release_due(self) -> None:
        """Make the held requests whose ETA came ready (or answer them REVOKED when revoked or expired)."""
        for request in self.requests.due(time.monotonic()):
            if not self._discarded(request):
                self.requests.ready.append(request)

    def accept_ready(self) -> None:
        """Take as many ready requests as there are idle children; decide their early acks now. One
        revoked since it arrived is discarded instead."""
        for request in self.requests.accept(self.pool.idle_count()):
            if self._discarded(request):
                self.requests.accepted.remove(request)
            elif not request.acks_late:
                self.acks.ack(request.tag)

    def submit_accepted(self) -> None:
        """Give the accepted requests to their children (their early acks were sent meanwhile)."""
        for request in self.requests.take_accepted():
            job_id = next(self._job_ids)
            hard, soft = request.limits(self.time_limits)
            track = bool(request.task.track_started and request.job.send_result)
            job = request.job
            if self.on_event is not None and not job.events:  # received before task events were turned on
                job = dataclasses.replace(job, events=True)
            self.pool.submit(job_id, job, soft_time_limit=soft, time_limit=hard,
                             report_start=track or hard is not None or soft is not None)
            self.requests.running[job_id] = request
            request.time_start = time.time()
            self.total[request.headers.task] += 1
            if self.on_event is not None:
                # A job goes only to an idle child, which starts it at once: task-started is said here
                # rather than on the child's word, which would cost a message and a loop turn per task.
                self.on_event("started", request, {})

    def terminate(self, task_ids: list[str], signum: int) -> list[str]:
        """Send ``signum`` to the children running any of ``task_ids``; return the ids found running.

        The job then ends as lost, and is answered REVOKED ``terminated`` instead of a failure."""
        pids = self.pool.active()
        found = []
        for job_id, request in list(self.requests.running.items()):
            if request.headers.id in task_ids and job_id in pids:
                self.terminated[request.headers.id] = signum
                found.append(request.headers.id)
                self._killed.add(pids[job_id])
                with contextlib.suppress(ProcessLookupError):  # it ended meanwhile: its result wins
                    os.kill(pids[job_id], signum)
        return found

    def handle_pool_events(self, events: list[pool_events.PoolEvent]) -> None:
        """Publish results and settle messages for what the children report."""
        for event in events:
            if isinstance(event, pool_events.JobDone):
                self._done(self.requests.running.pop(event.job_id), event.result, event.runtime)
            elif isinstance(event, pool_events.JobLost):
                self._lost(self.requests.running.pop(event.job_id), event.error)
            elif isinstance(event, pool_events.JobStarted):
                self._started(self.requests.running.get(event.job_id), event.pid)
            elif isinstance(event, pool_events.SoftLimitExceeded):
                request = self.requests.running.get(event.job_id)
                logger.warning("Soft time limit (%ss) exceeded for %s", event.limit,
                               request.label if request else event.job_id)
            elif isinstance(event, pool_events.ChildExited):
                level = logging.INFO if event.pid in self._killed else logging.ERROR  # asked for: no error
                self._killed.discard(event.pid)
                logger.log(level, "Process %r pid:%s exited with %r", event.name, event.pid, event.reason)

    def _started(self, request: Request | None, pid: int) -> None:
        if request is not None and request.task.track_started and request.job.send_result:
            self._reply(request, states.STARTED, {"pid": pid, "hostname": self.hostname})

    def _done(self, request: Request, result: Any, runtime: float = 0.0) -> None:
        if not isinstance(result, JobResult):  # the handler itself broke: fail the task, keep going
            logger.error("Task handler raised error: %r", result)
            self._reply(request, states.FAILURE, WorkerLostError(f"Task handler raised error: {result!r}"))
            return self._settle(request, requeue=None)
        if self.terminated:  # a terminate that came too late: the result stands
            self.terminated.pop(request.headers.id, None)
        if self.on_event is not None and result.summary is not None:
            self._report_outcome(request, result, runtime)
        if result.reply is not None and request.headers.reply_to:
            self.outbox.add(request.headers.reply_to, request.headers.correlation_id, result.reply)
        return self._settle(request, requeue=result.requeue if result.state == states.REJECTED else None)

    def _report_outcome(self, request: Request, result: JobResult, runtime: float) -> None:
        assert self.on_event is not None
        if result.state == states.SUCCESS:
            self.on_event("succeeded", request, {"result": result.summary, "runtime": runtime})
        elif result.state in (states.FAILURE, states.RETRY):
            kind = "failed" if result.state == states.FAILURE else "retried"
            self.on_event(kind, request, {"exception": result.summary, "traceback": result.traceback})

    def _lost(self, request: Request, error: BaseException) -> None:
        signum = self.terminated.pop(request.headers.id, None)
        if signum is not None:  # revoked with terminate: Celery answers REVOKED, not a lost worker
            self._reply(request, states.REVOKED, TaskRevokedError("terminated"))
            if self.on_event is not None:
                self.on_event("revoked", request, {"terminated": True, "signum": signum, "expired": False})
            return self._settle(request, requeue=None)
        if self.on_event is not None:
            self.on_event("failed", request, {"exception": repr(error), "traceback": None})
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
