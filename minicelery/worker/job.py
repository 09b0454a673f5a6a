"""What a pool child does with one job: decode the body, run the task, encode the result message.

The main process only reads a message's headers and hands the raw body over; the child does the
expensive part (decoding arguments, running the task, logging the outcome, serializing the result) so
the main process stays free to feed every child. Celery's counterpart is ``celery.app.trace`` as called
from ``celery.worker.request``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

from .. import log, protocol, serialization, states
from ..app import Celery
from ..exceptions import EncodeError, NotRegistered
from ..followup import embed_fields, follow_embed
from ..imports import find_app
from ..saferepr import saferepr
from ..trace import Outcome, run_task

__all__ = ["Job", "JobResult", "JobHandler", "encode_result"]

logger = logging.getLogger("minicelery.worker.job")


@dataclass(frozen=True)
class Job:
    """One task to run, as the main process sends it to a child (picklable, small)."""

    task: str
    id: str
    body: bytes
    content_type: str | None
    content_encoding: str | None
    request: dict[str, Any]
    send_result: bool
    events: bool = False  # task events are on: describe the outcome for task-succeeded/-failed


@dataclass(frozen=True)
class JobResult:
    """What a child sends back: the state, and the result message ready to publish (or None)."""

    state: str
    reply: tuple[str, str, bytes] | None
    requeue: bool = False
    summary: str | None = None  # with task events: saferepr of the result, or repr of the exception
    traceback: str | None = None


def encode_result(task_id: str, state: str, value: Any, *, traceback: str | None, serializer: str,
                  parent_id: str | None = None, children: list[Any] | None = None,
                  group_id: str | None = None) -> tuple[str, str, bytes]:
    """Serialize a result message in Celery's rpc format: ``(content_type, encoding, body)``.

    Raises:
        EncodeError: ``value`` cannot be encoded with ``serializer``.
    """
    meta = protocol.result_meta(task_id, state, value, traceback=traceback, children=children,
                                parent_id=parent_id, group_id=group_id, serializer=serializer)
    return serialization.dumps(meta, serializer)


class JobHandler:
    """Runs jobs in a child process for one app (built once per child by ``make_handler``)."""

    def __init__(self, app: Any, hostname: str) -> None:
        self.app = app
        self.hostname = hostname
        conf = app.conf
        self.accept = conf.accept_content
        self.result_serializer = conf.result_serializer
        self.tasks = app.tasks

    def __call__(self, job: Job) -> JobResult:
        try:
            task = self.tasks[job.task]
        except NotRegistered as exc:  # the main process checks first; a stale registry is still safe
            return self._failed(job, exc)
        try:
            compression = (job.request.get("headers") or {}).get("compression")
            args, kwargs, embed = protocol.decode_body(job.body, job.content_type, job.content_encoding,
                                                       self.accept, compression)
        except Exception as exc:  # noqa: BLE001 - any decoding problem fails this task only
            logger.error("Task %s[%s] cannot decode its body: %r", job.task, job.id, exc)
            return self._failed(job, exc)
        request = {**job.request, "args": args, "kwargs": kwargs, "hostname": self.hostname,
                   "called_directly": False, "is_eager": False, **embed_fields(embed)}
        outcome = run_task(task, args, kwargs, request)
        # Canvas (followup.py): next chain step, callbacks, errbacks; sent before the result is stored.
        outcome, children = follow_embed(self.app, task, request, outcome)
        reply = None
        if job.send_result and outcome.state not in (states.IGNORED, states.REJECTED):
            try:
                reply = encode_result(job.id, outcome.state, outcome.value, traceback=outcome.traceback,
                                      serializer=self.result_serializer,
                                      parent_id=job.request.get("parent_id"), children=children,
                                      group_id=job.request.get("group"))
            except EncodeError as exc:  # the return value cannot travel: the task fails, and says so
                outcome = Outcome(states.FAILURE, exc, None, outcome.runtime)
                reply = encode_result(job.id, states.FAILURE, exc, traceback=None,
                                      serializer=self.result_serializer)
        self._log(task, job, outcome)
        if reply is not None and hasattr(self.app.backend, "store_encoded"):  # file://: stored here
            self.app.backend.store_encoded(job.id, reply[2])
            reply = None
        if not job.events:
            return JobResult(outcome.state, reply, requeue=outcome.requeue)
        summary = (saferepr(outcome.value, task.resultrepr_maxsize) if outcome.state == states.SUCCESS
                   else repr(outcome.value))
        return JobResult(outcome.state, reply, outcome.requeue, summary, outcome.traceback)

    def close(self) -> None:
        """Close the broker connection this child opened, if any (a retry publishes through it)."""
        self.app.close()

    def _failed(self, job: Job, exc: BaseException) -> JobResult:
        reply = None
        if job.send_result:
            reply = encode_result(job.id, states.FAILURE, exc, traceback=None,
                                  serializer=self.result_serializer)
        return JobResult(states.FAILURE, reply)

    @staticmethod
    def _log(task: Any, job: Job, outcome: Outcome) -> None:
        # Bounded, as Celery's saferepr: a 20 MB return value must not make a 20 MB log line. Built only
        # when the line is written: at the worker's default level (WARNING) a success logs nothing.
        if outcome.state == states.SUCCESS:
            if logger.isEnabledFor(logging.INFO):
                logger.info("Task %s[%s] succeeded in %ss: %s", task.name, job.id, outcome.runtime,
                            saferepr(outcome.value, task.resultrepr_maxsize))
        elif outcome.state == states.RETRY:
            logger.info("Task %s[%s] retry: %s", task.name, job.id, outcome.retry)
        elif outcome.state == states.FAILURE:
            logger.error("Task %s[%s] raised unexpected: %s\n%s", task.name, job.id,
                         saferepr(outcome.value, task.resultrepr_maxsize), (outcome.traceback or "").rstrip())
        elif outcome.state == states.REJECTED:
            logger.info("Task %s[%s] rejected (requeue=%s)", task.name, job.id, outcome.requeue)


def make_handler(app_or_spec: Any, hostname: str, loglevel: int) -> JobHandler:
    """Build the handler inside a child: with ``spawn`` the app is re-imported from its ``-A`` string."""
    if isinstance(app_or_spec, str):  # a spawned child starts from scratch: logging and app again
        log.setup(loglevel)
        app = find_app(app_or_spec, Celery)
    else:
        app = app_or_spec
    app.finalize()
    logger.debug("child %s ready", os.getpid())
    return JobHandler(app, hostname)
