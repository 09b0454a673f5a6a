"""The worker's main-process bookkeeping: deliveries in, pool jobs out, acks and results back.

Every delivery is checked from its headers alone (the body stays raw for the child): a malformed header,
a disallowed content type or an unknown task is logged with its reason, rejected without requeue and,
when the sender waits for a result, answered with a FAILURE — the worker never crashes and never loops
on a bad message. Good messages are held until their ETA, then given to an idle child or queued behind a
busy child's job (the pool steals it back if another child goes idle first). Acks follow Celery: early
(when a child takes the job) by default, after the outcome with ``acks_late``. A message is
never acked before its fate is decided and never left unacked once it is. Celery's counterpart is
``celery.worker.consumer`` with ``strategy`` and ``request``.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from .. import protocol, serialization, states
from ..exceptions import (
    ContentDisallowed,
    InvalidTaskError,
    NotRegistered,
    TaskRevokedError,
    Terminated,
    TimeLimitExceeded,
    WorkerLostError,
)
from . import events as pool_events
from .acks import AckBook
from .job import Job, JobResult, encode_result
from .pool import Pickled

__all__ = ["Consumer", "Request"]

logger = logging.getLogger("minicelery.worker.consumer")

# The headers name the task id, so an operator can tell which message was dropped.
_INVALID = """\
Received invalid task message: %s
The message has been ignored and discarded.

The full contents of the message headers:
%r
"""

_UNREGISTERED = """\
Received unregistered task of type %r.
The message has been ignored and discarded.

Did you remember to import the module containing this task?
Or maybe you're using relative imports?

Please see the documentation for more information: the worker imports the modules named by -A,
`include` and `imports`, and a task's name must match between the client and the worker.

The full contents of the message body was:
%r (%db)

The full contents of the message headers:
%r
"""


@dataclass(eq=False)
class Request:
    """A task message the worker accepted: its delivery, its parsed headers and the job for a child."""

    tag: int
    generation: int
    headers: protocol.TaskHeaders
    task: Any
    job: Job
    acks_late: bool
    reject_on_worker_lost: bool
    payload: Pickled  # the job, pickled on arrival: a free child need not wait for it

    @property
    def label(self) -> str:
        """``name[id]``, as Celery's log lines show a task."""
        return f"{self.headers.task}[{self.headers.id}]"


def _limits(request: Request, default: tuple[float | None, float | None]) -> tuple[Any, Any]:
    """The (hard, soft) limits of a request: the message's, else the task's, else the worker's."""
    hard, soft = request.headers.timelimit
    task = request.task
    hard = next((v for v in (hard, task.time_limit, default[0]) if v is not None), None)
    soft = next((v for v in (soft, task.soft_time_limit, default[1]) if v is not None), None)
    return hard, soft


class Consumer:
    """Turns deliveries into jobs and pool events into acks and results, for one worker.

    The worker drives it from its main thread: ``on_message`` for each delivery, then ``tick`` after
    every wake-up. Broker calls go through ``connection`` (swapped on reconnect).
    """

    def __init__(self, app: Any, pool: Any, *, hostname: str, prefetch_count: int,
                 time_limits: tuple[float | None, float | None] = (None, None)) -> None:
        self.app = app
        self.pool = pool
        self.hostname = hostname
        self.prefetch_count = prefetch_count
        self.time_limits = time_limits  # (hard, soft) for tasks whose message and class set none
        self.accept, self.result_serializer = app.conf.accept_content, app.conf.result_serializer
        self.send_results = app.backend.url != "disabled://"
        self.tasks = app.tasks
        self.connection: Any = None
        self.generation = 0
        self.acks = AckBook()
        self.ready: deque[Request] = deque()
        self.held: list[tuple[float, int, Request]] = []
        self.running: dict[int, Request] = {}
        self.outbox: list[tuple[str, str, tuple[str, str, bytes]]] = []
        self._seq = itertools.count(1)
        self.accepting = True
        # Acks wait until half the prefetch window is decided (or the loop goes idle, see the worker):
        # fewer frames for us and for the broker, and the window never runs dry.
        self.ack_batch = max(1, prefetch_count // 2) if prefetch_count else 16

    # -- deliveries ---------------------------------------------------------------------------------

    def on_message(self, delivery: Any) -> None:
        """Check one delivery from its headers and queue, hold or refuse it; never raise."""
        try:
            self._on_message(delivery)
        except Exception:  # a message we failed to foresee must not take the worker down
            logger.exception("Unexpected error handling message %r: rejected without requeue",
                             delivery.delivery_tag)
            if self.acks.is_open(delivery.delivery_tag):  # unless decided before the error
                self.acks.reject(delivery.delivery_tag, requeue=False)

    def _on_message(self, delivery: Any) -> None:
        tag, props = delivery.delivery_tag, delivery.properties
        self.acks.received(tag)
        if not self.accepting:  # shutting down: a delivery already on its way goes back at once
            return self.acks.reject(tag, requeue=True)
        try:
            headers = protocol.parse_headers(props.get("headers"), props)
        except InvalidTaskError as exc:
            return self._refuse(delivery, None, exc, _INVALID, exc, props.get("headers"))
        try:
            serialization.check_accepted(props.get("content_type"), self.accept)
        except ContentDisallowed as exc:
            return self._refuse(delivery, headers, exc, _INVALID, exc, props.get("headers"))
        task = self.tasks.get(headers.task)
        if task is None:
            missing = NotRegistered(headers.task, self.tasks.suggest(headers.task))
            return self._refuse(delivery, headers, missing, _UNREGISTERED, headers.task, delivery.body[:1024],
                                len(delivery.body), props.get("headers"))
        logger.info("Task %s[%s] received", headers.task, headers.id)
        request = self._request(delivery, headers, task)
        if self._expired(request):
            return None
        if headers.eta is not None and headers.eta > datetime.now(timezone.utc):
            self._hold(request)
        else:
            self.ready.append(request)
        return None

    def _request(self, delivery: Any, headers: protocol.TaskHeaders, task: Any) -> Request:
        props = delivery.properties
        send_result = bool(self.send_results and headers.reply_to and not headers.ignore_result
                           and not task.ignore_result)
        fields = {"id": headers.id, "retries": headers.retries, "root_id": headers.root_id,
                  "parent_id": headers.parent_id, "group": headers.group, "origin": headers.origin,
                  "reply_to": headers.reply_to, "correlation_id": headers.correlation_id,
                  "eta": props["headers"].get("eta"), "expires": props["headers"].get("expires"),
                  "timelimit": headers.timelimit, "ignore_result": headers.ignore_result,
                  "argsrepr": headers.argsrepr, "kwargsrepr": headers.kwargsrepr,
                  "headers": headers.headers,
                  "delivery_info": {"exchange": delivery.exchange, "routing_key": delivery.routing_key,
                                    "priority": props.get("priority") or 0,
                                    "redelivered": delivery.redelivered}}
        job = Job(headers.task, headers.id, delivery.body, props.get("content_type"),
                  props.get("content_encoding"), fields, send_result)
        return Request(delivery.delivery_tag, self.generation, headers, task, job,
                       acks_late=bool(task.acks_late),
                       reject_on_worker_lost=bool(task.reject_on_worker_lost),
                       payload=Pickled.of(job))

    def _refuse(self, delivery: Any, headers: protocol.TaskHeaders | None, exc: BaseException,
                template: str, *args: Any) -> None:
        logger.error(template, *args)
        props = delivery.properties
        task_id = headers.id if headers else (props.get("headers") or {}).get("id")
        reply_to = headers.reply_to if headers else props.get("reply_to")
        if self.send_results and isinstance(task_id, str) and reply_to:
            reply = encode_result(task_id, states.FAILURE, exc, traceback=None,
                                  serializer=self.result_serializer)
            self.publish(reply_to, props.get("correlation_id") or task_id, reply)
        self.acks.reject(delivery.delivery_tag, requeue=False)

    def _expired(self, request: Request) -> bool:
        expires = request.headers.expires
        if expires is None or expires > datetime.now(timezone.utc):
            return False
        logger.info("Discarding revoked task: %s", request.label)
        self._reply(request, states.REVOKED, TaskRevokedError("expired"))
        self.acks.ack(request.tag)
        return True

    def _hold(self, request: Request) -> None:
        # Celery receives ETA tasks at once and keeps them unacked; raising the prefetch window by one
        # per held message keeps the other tasks flowing meanwhile.
        delay = (request.headers.eta - datetime.now(timezone.utc)).total_seconds()  # type: ignore[operator]
        heapq.heappush(self.held, (time.monotonic() + delay, next(self._seq), request))
        self._update_qos()

    def _update_qos(self) -> None:
        if self.prefetch_count and self.connection is not None:
            self.connection.qos(self.prefetch_count + len(self.held))

    # -- the loop's work ------------------------------------------------------------------------------

    def tick(self) -> None:
        """Do everything that became possible: pool events, due ETAs, dispatch; send results, and acks
        once ``ack_batch`` of them are decided."""
        self.handle_pool_events(self.pool.events())
        self._release_due()
        self.dispatch()
        # Acks go with results (one write either way), else once a batch of them is decided.
        self.flush(acks=bool(self.outbox) or self.acks.decided() >= self.ack_batch)

    @property
    def acks_waiting(self) -> bool:
        """True when decided acks or rejects wait for a :meth:`flush`."""
        return self.acks.decided() > 0

    def next_timeout(self, cap: float) -> float:
        """How long the loop may wait for I/O before the next ETA falls due (at most ``cap``)."""
        if not self.held:
            return cap
        return max(0.0, min(cap, self.held[0][0] - time.monotonic()))

    def _release_due(self) -> None:
        released = False
        now = time.monotonic()
        while self.held and self.held[0][0] <= now:
            request = heapq.heappop(self.held)[2]
            released = True
            if request.generation == self.generation and not self._expired(request):
                self.ready.append(request)
        if released:
            self._update_qos()

    def dispatch(self) -> None:
        """Give ready requests to idle children, then queue them behind busy ones; if a child is left
        idle with nothing ready, steal back a job queued behind another child for it."""
        self._submit_ready()
        idle = self.pool.idle_count()
        if idle and self.pool.recall(idle):
            self.handle_pool_events(self.pool.events())
            self._submit_ready()

    def _submit_ready(self) -> None:
        while self.ready and self.pool.can_take(self.ready[0].payload):
            request = self.ready.popleft()
            if request.generation != self.generation:
                continue  # its channel is gone: the broker redelivers it
            job_id = next(self._seq)
            hard, soft = _limits(request, self.time_limits)
            track = bool(request.task.track_started and request.job.send_result)
            accepted = self.pool.submit(job_id, request.payload, soft_time_limit=soft, time_limit=hard,
                                        report_start=track or hard is not None or soft is not None,
                                        queue=True)
            self.running[job_id] = request
            if accepted:
                self._accepted(request)

    def _accepted(self, request: Request) -> None:
        """A child took the job: the early ack happens now."""
        if not request.acks_late and request.generation == self.generation:
            self.acks.ack(request.tag)

    def handle_pool_events(self, events: list[Any]) -> None:
        """Publish results and settle messages for what the children report."""
        returned: list[Request] = []
        for event in events:
            if isinstance(event, pool_events.JobDone):
                self._done(self.running.pop(event.job_id), event.result)
            elif isinstance(event, pool_events.JobAccepted):
                self._accepted(self.running[event.job_id])
            elif isinstance(event, pool_events.JobLost):
                self._lost(self.running.pop(event.job_id), event.error)
            elif isinstance(event, pool_events.JobReturned):
                returned.append(self.running.pop(event.job_id))
            elif isinstance(event, pool_events.JobStarted):
                self._started(self.running.get(event.job_id), event.pid)
            elif isinstance(event, pool_events.SoftLimitExceeded):
                request = self.running.get(event.job_id)
                logger.warning("Soft time limit (%ss) exceeded for %s", event.limit,
                               request.label if request else event.job_id)
            elif isinstance(event, pool_events.ChildExited):
                logger.error("Process %r pid:%s exited with %r", event.name, event.pid, event.reason)
        self._returned(returned)

    def _returned(self, requests: list[Request]) -> None:
        """Jobs back from a child's queue unrun wait for a child again, or go back to the broker."""
        current = [request for request in requests if request.generation == self.generation]
        if self.accepting:
            self.ready.extendleft(reversed(current))
        else:
            for request in (request for request in current if self.acks.is_open(request.tag)):
                self.acks.reject(request.tag, requeue=True)  # never accepted, so never acked

    def _started(self, request: Request | None, pid: int) -> None:
        if request is not None and request.task.track_started and request.job.send_result:
            self._reply(request, states.STARTED, {"pid": pid, "hostname": self.hostname})

    def _done(self, request: Request, result: Any) -> None:
        if not isinstance(result, JobResult):  # the handler itself broke: fail the task, keep going
            logger.error("Task handler raised error: %r", result)
            self._reply(request, states.FAILURE, WorkerLostError(f"Task handler raised error: {result!r}"))
            return self._settle(request, requeue=None)
        if result.reply is not None and request.headers.reply_to:
            self.publish(request.headers.reply_to, request.headers.correlation_id, result.reply)
        if result.state == states.REJECTED:
            return self._settle(request, requeue=result.requeue)
        return self._settle(request, requeue=None)

    def _lost(self, request: Request, error: BaseException) -> None:
        if isinstance(error, TimeLimitExceeded):
            logger.error("Hard time limit (%ss) exceeded for %s", error.args[0] if error.args else "?",
                         request.label)
        logger.error("Task handler raised error: %r", error)
        requeue = request.acks_late and (
            isinstance(error, Terminated)
            or (isinstance(error, WorkerLostError) and request.reject_on_worker_lost))
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
            self.publish(request.headers.reply_to, request.headers.correlation_id, reply)

    # -- broker I/O -----------------------------------------------------------------------------------

    def publish(self, reply_to: str, correlation_id: str, reply: tuple[str, str, bytes]) -> None:
        """Send a result message to the client's reply queue (kept for later while disconnected)."""
        self.outbox.append((reply_to, correlation_id, reply))

    def flush(self, acks: bool = True) -> None:
        """Send queued results, then (if ``acks``) the acks and rejects decided so far, in one write.
        Results stay queued until that write is done, so a lost connection loses none."""
        connection = self.connection
        if connection is None or not (self.outbox or (acks and self.acks.decided())):
            return
        with connection.batch():
            for reply_to, correlation_id, (content_type, encoding, body) in self.outbox:
                connection.publish(body, {"content_type": content_type, "content_encoding": encoding,
                                          "correlation_id": correlation_id, "delivery_mode": 1,
                                          "priority": 0, "headers": {}},
                                   exchange="", routing_key=reply_to)
            for call in self.acks.flush() if acks else ():
                if call.op == "ack":
                    connection.ack(call.tag, multiple=call.multiple)
                else:
                    connection.reject(call.tag, requeue=call.requeue)
        self.outbox.clear()

    def connection_lost(self) -> int:
        """Forget every delivery of the lost channel (the broker redelivers them); return how many."""
        self.connection = None
        self.generation += 1
        self.ready.clear()
        self.held.clear()
        return self.acks.forget()

    def requeue_waiting(self) -> None:
        """Stop accepting work and send back every message no child has taken yet (shutdown)."""
        self.accepting = False
        self.pool.recall()
        self.handle_pool_events(self.pool.events())
        for request in list(self.ready) + [item[2] for item in self.held]:
            if request.generation == self.generation and self.acks.is_open(request.tag):
                self.acks.reject(request.tag, requeue=True)
        self.ready.clear()
        self.held.clear()

