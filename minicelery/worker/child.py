"""The loop that runs inside one pool child process: take a job, run the handler, send back the result.

It also holds the two main-process halves of the child's contract, so both sides read together:
:func:`load_result` (unpickling what a child sent) and :func:`startup_signals_blocked` (starting a child).

Celery counterpart: ``billiard.pool.Worker`` (its ``workloop``, ``_make_child_methods`` and the soft time
limit signal handler) plus the child half of ``celery.concurrency.asynpool``. Left out: shared in/out queues
(each child has its own pipe), the "ready" handshake and ``EX_RECYCLE``-style exit codes (the main process
counts jobs too), ``maxmemperchild``, and running anything but the one handler built by ``handler_factory``.

The protocol is tiny, and each message is a named tuple defined here. On the child's pipe the main
process sends an :class:`Assignment` (job number, pickled payload, whether to report the start) or
``None`` to ask the child to exit. The child answers :class:`Started` before running the handler, only
when asked (time limits and ``track_started`` need it), and :class:`Done` after it. Payload and result
travel pre-pickled so that a value that cannot be pickled or unpickled becomes a :class:`HandlerError`
instead of killing either side.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import select
import signal
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import FrameType
from typing import Any, NamedTuple, Protocol

from ..exceptions import SoftTimeLimitExceeded

__all__ = ["Assignment", "Done", "HandlerError", "Started", "child_main", "load_result",
           "startup_signals_blocked"]

#: How often an idle child checks that the main process is still alive, in seconds.
PARENT_CHECK_INTERVAL = 1.0

#: Signals held back from a new child until it has installed its own handlers.
STARTUP_BLOCKED = frozenset({signal.SIGINT, signal.SIGTERM, signal.SIGQUIT, signal.SIGHUP,
                             signal.SIGUSR1, signal.SIGUSR2})


class Assignment(NamedTuple):
    """Main process → child: run job ``number`` (its pickled ``payload``); report its start if asked."""

    number: int
    payload: bytes
    report_start: bool


class Started(NamedTuple):
    """Child → main process: job ``number`` began at ``wall_time`` (``time.time()``) and ``monotonic``."""

    number: int
    wall_time: float
    monotonic: float


class Done(NamedTuple):
    """Child → main process: job ``number`` ended with ``result`` (pickled) after ``runtime`` seconds."""

    number: int
    result: bytes
    runtime: float


class Channel(Protocol):
    """The part of a ``multiprocessing`` connection the child uses (keeps multiprocessing out of here)."""

    def send(self, obj: Any) -> None:
        """Pickle and send ``obj`` to the main process."""

    def recv(self) -> Any:
        """Receive and unpickle the next message; raise ``EOFError`` once the pipe is closed."""

    def poll(self, timeout: float | None = ...) -> bool:
        """Wait up to ``timeout`` seconds for a message; say whether one is ready."""

    def fileno(self) -> int:
        """The descriptor to wait on."""


@dataclass(frozen=True)
class HandlerError:
    """The result of a job whose handler raised (or whose result could not be pickled).

    The handler is meant to catch its own errors; this marker only makes sure an escaping exception never
    kills the child nor leaves the main process waiting for an answer.
    """

    exc_type: str
    exc_repr: str
    traceback: str

    @classmethod
    def capture(cls, exc: BaseException) -> HandlerError:
        """Build the marker for ``exc``, with its formatted traceback."""
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        return cls(type(exc).__name__, repr(exc), text)


class _SoftLimit:
    """Whether a SIGUSR1 should raise: only while a handler runs, and at most once per job."""

    armed = False


def _on_soft_limit(signum: int, frame: FrameType | None) -> None:
    # Disarm before raising so the exception is raised once even if the signal lands while the job is
    # ending; _run_job catches it wherever it lands inside its outer try.
    if _SoftLimit.armed:
        _SoftLimit.armed = False
        raise SoftTimeLimitExceeded()


def child_main(channel: Channel, handler_factory: Callable[[], Callable[[Any], Any]],
               max_tasks: int | None, parent: int) -> None:
    """Run one child: build the handler once, then run jobs until told to stop or ``max_tasks`` ran.

    Args:
        channel: the child's end of its pipe to the main process.
        handler_factory: called once, here in the child, to build the handler (with ``spawn`` this is where
            the user's app gets imported again).
        max_tasks: exit cleanly after this many jobs (``max_tasks_per_child``); None means never.
        parent: the main process's pid, passed in rather than read here: if the main process died
            while this child started up, ``os.getppid()`` would already name the adoptive parent.
    """
    _reset_signals()
    handler = handler_factory()
    done = 0
    try:
        while (job := _next_job(channel, parent)) is not None:
            if job.report_start:
                channel.send(Started(job.number, time.time(), time.monotonic()))
            began = time.monotonic()
            result = _run_job(handler, job.payload)
            _send_result(channel, job.number, result, time.monotonic() - began)
            done += 1
            if max_tasks is not None and done >= max_tasks:
                return
    finally:
        _close(handler)


def _close(handler: Any) -> None:
    """Call the handler's ``close()``, if it has one, before the child exits: multiprocessing ends a child
    with ``os._exit``, so nothing else would close what the handler opened (a connection a retry used)."""
    close = getattr(handler, "close", None)
    if callable(close):
        try:
            close()
        except Exception:  # noqa: BLE001 - the child is exiting; its exit must not fail
            pass


def _reset_signals() -> None:
    """Drop the signal setup inherited from the main process and install the child's own."""
    # With fork the child inherits the worker's Python handlers (warm/cold shutdown on TERM, INT, QUIT)
    # and its wakeup fd; left in place, a signal to the child would run the worker's shutdown code here,
    # or write into the main process's wakeup pipe.
    signal.set_wakeup_fd(-1)
    for signum in signal.valid_signals():
        if callable(signal.getsignal(signum)):
            signal.signal(signum, signal.SIG_DFL)
    # The main process decides what Ctrl+C means; a child must not die of the terminal's SIGINT.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # SIGTERM keeps its default action: the child exits at once (a cold shutdown relies on it).
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    # SIGUSR1 is billiard's soft time limit signal too (SIGALRM would need a timer per child).
    signal.signal(signal.SIGUSR1, _on_soft_limit)
    # Anything that arrived since the fork was held pending (startup_signals_blocked); it lands now.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STARTUP_BLOCKED)


@contextlib.contextmanager
def startup_signals_blocked() -> Iterator[None]:
    """Block :data:`STARTUP_BLOCKED` in the calling thread while it starts a child, then restore the mask.

    A child inherits the mask (across exec too, for ``spawn``), so a Ctrl+C or SIGTERM arriving before
    :func:`child_main` reset the handlers waits instead of running the worker's handler (or raising
    ``KeyboardInterrupt``) in the child. The parent only defers such signals for the length of a fork.
    """
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STARTUP_BLOCKED)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _next_job(channel: Channel, parent: int) -> Assignment | None:
    """Wait for the next job; None means exit (asked to, the pipe closed, or the main process died)."""
    # Siblings forked later inherit the main process's end of this pipe, so EOF alone cannot tell us
    # the main process died; a reparented child (getppid changed) is an orphan and must go.
    while not select.select([channel.fileno()], [], [], PARENT_CHECK_INTERVAL)[0]:
        if os.getppid() != parent:
            return None
    try:
        job: Assignment | None = channel.recv()
    except EOFError:
        return None
    return job


def _run_job(handler: Callable[[Any], Any], blob: bytes) -> Any:
    """Run the handler on the unpickled payload; anything it raises becomes a :class:`HandlerError`."""
    try:
        _SoftLimit.armed = True
        try:
            # Our own pipe: the main process pickled this job. A message body inside it is still the
            # broker's raw bytes, which only the json/msgpack serializer ever decodes.
            return handler(pickle.loads(blob))
        finally:
            _SoftLimit.armed = False
    except Exception as exc:
        # Exception, not BaseException: SystemExit from a job ends the child, as it does in Celery, and
        # the main process then reports the job lost.
        return HandlerError.capture(exc)


def _send_result(channel: Channel, number: int, result: Any, runtime: float) -> None:
    """Send a job's result, replacing a result that cannot be pickled by a :class:`HandlerError`."""
    try:
        blob = pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        blob = pickle.dumps(HandlerError.capture(exc), protocol=pickle.HIGHEST_PROTOCOL)
    channel.send(Done(number, blob, runtime))


def load_result(blob: bytes) -> Any:
    """Unpickle a result in the main process; one that cannot be rebuilt there becomes a HandlerError."""
    try:
        return pickle.loads(blob)  # pickled by our own child: no broker data is ever unpickled
    except Exception as exc:
        return HandlerError.capture(exc)
