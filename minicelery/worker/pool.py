"""The prefork pool: N child processes that run opaque jobs, driven from the main thread.

Celery counterpart: ``celery.concurrency.prefork`` driving ``billiard.pool.Pool`` (its result handler,
timeout handler and supervisor), with each child on its own pipe as Celery's ``-O fair`` gives.
The pool knows nothing of tasks or brokers: a job is an opaque picklable payload that the child's handler
turns into an opaque picklable result. Left out: billiard's shared in/out queues and helper threads,
autoscaling, revoking one job, ``maxmemperchild``, restart, and Windows. The only home of
``multiprocessing``.

Each child also has a one-job queue (:mod:`~minicelery.worker.jobqueue`) for the job it runs next; its
results say whether it took that job, and if not the pool steals it back before queuing another.

One thread drives the pool: the one that calls :meth:`Pool.start` calls every method. :meth:`Pool.poll`
is where it waits — on every child's pipe and exit sentinel, the next time-limit deadline and, so that a
worker needs no second thread, one foreign file descriptor (the broker socket, see :meth:`Pool.watch`).
A wake-up reads the ready pipes, reaps exited children and starts their replacements, signals children
past a time limit (soft: SIGUSR1, hard: SIGKILL), and queues what happened for :meth:`Pool.events`.
Being single-threaded, the pool needs no lock, and it forks only from the thread that owns it.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import pickle
import selectors
import signal
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from minicelery.worker.bookkeeping import Bookkeeping
from minicelery.worker.child import HandlerError, child_main, load_result, startup_signals_blocked
from minicelery.worker.events import PoolEvent
from minicelery.worker.jobqueue import QUEUE_LIMIT, JobQueue

__all__ = ["QUEUE_LIMIT", "HandlerError", "Pickled", "Pool"]

#: Seconds children get to exit after being asked (warm) or sent SIGTERM (cold) before SIGKILL.
EXIT_GRACE = 5.0

#: Selector keys' data: what a ready file descriptor means.
_MESSAGE, _EXIT, _WATCHED = "message", "exit", "watched"


@dataclass(frozen=True)
class Pickled:
    """A payload pickled ahead of time, which :meth:`Pool.submit` sends as it is.

    The worker pickles a job when its message arrives, while the children are busy, rather than when a
    child becomes free and waits for it."""

    blob: bytes

    @classmethod
    def of(cls, payload: Any) -> Pickled:
        """Pickle ``payload`` (raising whatever ``pickle`` raises for a value it cannot pickle)."""
        return cls(pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL))


@dataclass
class _Child:
    """A started child: its process object, the main process's end of its pipe, and its job queue."""

    process: Any  # multiprocessing.process.BaseProcess; the context's class is not nameable statically
    conn: Connection
    queue: JobQueue


class Pool:
    """A fixed number of child processes, each running one job at a time through a handler.

    Args:
        concurrency: how many children to keep running.
        handler_factory: a picklable module-level callable (or ``functools.partial`` of one) called once in
            each child to build the ``handler(payload) -> result`` function.
        max_tasks_per_child: replace a child after it ran this many jobs; None means never.
        start_method: ``'fork'`` (the default, as on Linux until Python 3.14) or ``'spawn'``.
        name_prefix: children are named ``f'{name_prefix}-{n}'``, n counting up from 1 and never reused.
    """

    def __init__(self, concurrency: int, handler_factory: Callable[[], Callable[[Any], Any]], *,
                 max_tasks_per_child: int | None = None, start_method: str | None = None,
                 name_prefix: str = "ForkPoolWorker") -> None:
        if start_method not in (None, "fork", "spawn"):  # a forkserver child's parent is not us
            raise ValueError(f"start_method must be None, 'fork' or 'spawn', not {start_method!r}")
        self._book = Bookkeeping(concurrency, max_tasks_per_child, name_prefix)
        # Any: typeshed's BaseContext lacks Process/Pipe, which every concrete context has.
        self._context: Any = multiprocessing.get_context(start_method or "fork")  # 3.14 defaults elsewhere
        self._handler_factory = handler_factory
        self._max_tasks = max_tasks_per_child
        self._children: dict[int, _Child] = {}
        self._events: list[PoolEvent] = []
        self._selector: selectors.BaseSelector | None = None
        self._watched: int | None = None
        self._running = False
        self._stopped = False

    # -- the owner's API --------------------------------------------------------------------------------

    def start(self) -> None:
        """Start ``concurrency`` children."""
        if self._running or self._stopped:
            raise RuntimeError("a pool can be started once only")
        self._selector = selectors.DefaultSelector()
        self._running = True
        for _ in range(self._book.concurrency):
            self._start_child()

    def submit(self, job_id: Hashable, payload: Any, *, soft_time_limit: float | None = None,
               time_limit: float | None = None, report_start: bool | None = None,
               queue: bool = False) -> bool:
        """Send a job to the child idle longest or, with ``queue`` and no child idle, queue it behind a busy
        child's job. Return True if a child took it now; a queued job ends up ``JobAccepted`` or
        ``JobReturned`` (unrun). Time limits count from the job's start; the child reports ``JobStarted``
        only if ``report_start`` (default: when a time limit applies). ``payload`` may be :class:`Pickled`.

        Raises:
            RuntimeError: the pool is not running, or has no room (check :meth:`can_take` first).
            ValueError: a job with this id is still running.
        """
        if not self._running:
            raise RuntimeError("the pool is not running")
        # Pickle before touching any state, so an unpicklable payload leaves the pool unchanged.
        blob = payload.blob if type(payload) is Pickled else Pickled.of(payload).blob
        timed = soft_time_limit is not None or time_limit is not None
        report = timed if report_start is None else report_start
        if queue and not self._book.idle_count() and len(blob) <= QUEUE_LIMIT:
            pid, number = self._book.queue(job_id, soft_time_limit, time_limit)
            # Never fails for a dead child: the pool holds the other end, and steals the job back.
            self._children[pid].queue.put((number, blob, report))
            return False
        pid, number = self._book.assign(job_id, soft_time_limit, time_limit)
        try:
            self._children[pid].conn.send((number, blob, report))
        except OSError:
            pass  # the child just died; its sentinel fires and the job is reported lost when it is reaped
        return True

    def can_take(self, payload: Any) -> bool:
        """Say whether :meth:`submit` with ``queue=True`` has room for ``payload`` now."""
        if self.idle_count():
            return True
        # A payload not pickled yet has no known size: it waits for an idle child.
        return type(payload) is Pickled and len(payload.blob) <= QUEUE_LIMIT and self._book.can_queue()

    def recall(self, limit: int | None = None) -> int:
        """Steal back up to ``limit`` queued jobs their children have not taken (all with None); each one
        comes back as ``JobReturned``. Return how many did."""
        returned = 0
        for pid, number in self._book.stealable():
            if limit is not None and returned >= limit:
                break
            child = self._children.get(pid)
            if child is not None and child.queue.steal() == number:  # else the child has it: it runs next
                self._events += self._book.returned(pid, number)
                returned += 1
        return returned

    def watch(self, fd: int | None) -> None:
        """Make :meth:`poll` also wake up when ``fd`` is readable (None: watch nothing foreign)."""
        assert self._selector is not None, "start the pool first"
        if self._watched is not None:
            # The old descriptor may be closed already (and its number even reused): forget it by number.
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(self._watched)
        self._watched = None
        if fd is not None:
            self._register(fd, _WATCHED, 0)
            self._watched = fd

    def poll(self, timeout: float | None) -> bool:
        """Wait up to ``timeout`` s (None: no limit) for a child or the watched descriptor, then handle
        children: read results, reap and replace exited ones, enforce time limits. Events go to
        :meth:`events`. Return whether the watched descriptor is readable."""
        if not self._running:
            return False
        assert self._selector is not None
        deadline = self._book.next_deadline()
        if deadline is not None:
            wait = max(0.0, deadline - time.monotonic())
            timeout = wait if timeout is None else min(timeout, wait)
        watched_ready = False
        exited: list[int] = []
        for key, _mask in self._selector.select(timeout):
            kind, pid = key.data
            if kind == _MESSAGE:
                self._read(pid)
            elif kind == _EXIT:
                exited.append(pid)
            else:
                watched_ready = True
        for pid in exited:
            self._on_exit(pid)
        if deadline is not None:
            self._enforce_limits()
        if exited:
            self._maintain()
        return watched_ready

    def events(self) -> list[PoolEvent]:
        """Return (and forget) the events queued since the last call."""
        events, self._events = self._events, []
        return events

    def has_events(self) -> bool:
        """True when :meth:`events` has something to return."""
        return bool(self._events)

    def idle_count(self) -> int:
        """Return how many children can take a job now (0 before start and once stopping)."""
        return self._book.idle_count() if self._running and self._book.accepting else 0

    def active(self) -> dict[Hashable, int]:
        """Return the jobs submitted and not yet ended, as ``{job_id: pid}``."""
        return self._book.active()

    def pids(self) -> list[int]:
        """Return the pids of the pool's child processes, oldest first."""
        return self._book.pids()

    def children(self) -> dict[int, str]:
        """Return ``{pid: name}`` of the pool's child processes (``ForkPoolWorker-N``)."""
        return self._book.names()

    def stop(self, cold: bool = False, timeout: float | None = None) -> None:
        """Stop the pool; no child process remains when this returns.

        Warm (the default) stops accepting jobs, waits for the running ones to end, then asks each child to
        exit. Cold terminates the children at once; their jobs are reported as ``JobLost(Terminated)``.
        Either way, queued jobs that no child has taken come back as ``JobReturned``.
        Either way the events of the jobs that ended stay queued for :meth:`events`.

        Args:
            cold: terminate running jobs instead of waiting for them.
            timeout: for a warm stop, how long to wait for running jobs before going cold (None: forever).
        """
        if not self._running:
            return
        self._book.stop_accepting()
        self.recall()  # queued jobs have not started: they go back to the caller, not down with the pool
        give_up = None if timeout is None else time.monotonic() + timeout
        while not cold and self._book.has_jobs():
            remaining = None if give_up is None else give_up - time.monotonic()
            if remaining is not None and remaining <= 0:
                cold = True
                break
            self.poll(remaining)
        self._running = False
        for pid, child in list(self._children.items()):
            self._read_pending(pid, child)  # results already sent count, whatever happens to the child
        self.recall()
        self._events.extend(self._book.close_all())
        self._end_children(cold)
        assert self._selector is not None
        self._selector.close()
        self._stopped = True

    def _start_child(self) -> None:
        """Start one child process and register it."""
        assert self._selector is not None
        name = self._book.new_name()
        parent_end, child_end = self._context.Pipe(duplex=True)
        queue = JobQueue()
        process = self._context.Process(
            target=child_main,
            args=(child_end, queue.child_end, self._handler_factory, self._max_tasks, os.getpid()),
            name=name, daemon=True,  # daemon: multiprocessing's atexit terminates children we leaked
        )
        with startup_signals_blocked():  # see child.py: the child unblocks once its handlers are set
            process.start()
        child_end.close()  # the child holds its end now; ours would only keep the pipe alive
        self._book.add_child(process.pid, name)
        self._children[process.pid] = _Child(process, parent_end, queue)
        self._register(parent_end.fileno(), _MESSAGE, process.pid)
        self._register(process.sentinel, _EXIT, process.pid)

    def _register(self, fd: int, kind: str, pid: int) -> None:
        """Watch ``fd`` for reading, replacing the entry of a closed descriptor that had its number."""
        assert self._selector is not None
        stale = self._selector.get_map().get(fd)
        if stale is not None:  # only the watched socket can close behind our back (pika closes it)
            self._selector.unregister(fd)
            if stale.data[0] == _WATCHED:
                self._watched = None
        self._selector.register(fd, selectors.EVENT_READ, (kind, pid))

    def _maintain(self) -> None:
        """Start children to get back to ``concurrency`` (none once stopping)."""
        for _ in range(self._book.missing() if self._running else 0):
            self._start_child()

    def _read(self, pid: int) -> None:
        """Read one message from a child's pipe (the selector reports the pipe again while more wait)."""
        child = self._children.get(pid)
        if child is None:
            return
        try:
            message = child.conn.recv()
        except (EOFError, OSError):
            # The child is gone: stop watching its pipe (readable forever at EOF); its sentinel does the rest
            self._forget_pipe(child)
            return
        self._events += self._apply(pid, message)

    def _apply(self, pid: int, message: tuple[Any, ...]) -> list[PoolEvent]:
        """Turn one child message into bookkeeping updates and events."""
        kind, number = message[0], message[1]
        if kind == "done":
            events: list[PoolEvent] = []
            queued = self._book.queued_number(pid)
            # A child that did not take its queued job before answering may still take it: steal it
            # back first, so that the queue holds what the bookkeeping says. If it is gone, the child has it.
            if queued is not None and message[4] != queued and self._children[pid].queue.steal() == queued:
                events += self._book.returned(pid, queued)
            return events + self._book.finished(pid, number, load_result(message[2]), message[3])
        if kind == "started":
            # CLOCK_MONOTONIC is system-wide on Linux, so the child's reading is comparable to ours and
            # limits count from when the job really began, not from when we got around to reading.
            return self._book.started(pid, number, message[2], message[3])
        raise ValueError(f"unknown message from child {pid}: {kind!r}")

    def _on_exit(self, pid: int) -> None:
        """Handle a child whose sentinel fired: read its last messages first, then reap and forget it."""
        child = self._children.get(pid)
        if child is None:
            return
        # A job still in its queue never ran: steal it before reading the results that may mention it.
        unrun = child.queue.steal()
        if unrun is not None:
            self._events += self._book.returned(pid, unrun)
        self._read_pending(pid, child)  # a recycled child sends its last result and exits at once
        del self._children[pid]
        exitcode = _reap(child.process)
        self._events += self._book.child_exited(pid, exitcode)
        self._close(child)

    def _read_pending(self, pid: int, child: _Child) -> None:
        """Read every message waiting in a child's pipe, reported by the selector or not."""
        with contextlib.suppress(EOFError, OSError):
            while child.conn.poll(0):
                self._events += self._apply(pid, child.conn.recv())

    def _enforce_limits(self) -> None:
        """Signal children whose job passed a time limit: SIGKILL for hard, SIGUSR1 for soft."""
        now = time.monotonic()
        lost = self._book.hard_expired(now)
        soft = self._book.soft_expired(now)
        # A child that exited meanwhile is fine to miss: its sentinel tells the rest.
        for event in lost:
            with contextlib.suppress(ProcessLookupError):
                os.kill(event.pid, signal.SIGKILL)
        for passed in soft:
            with contextlib.suppress(ProcessLookupError):
                os.kill(passed.pid, signal.SIGUSR1)
        self._events += [*lost, *soft]

    def _end_children(self, cold: bool) -> None:
        """Ask (warm) or force (cold: SIGTERM) every child to exit, SIGKILL stragglers, and reap them."""
        children, self._children = self._children, {}
        for child in children.values():
            if cold:
                child.process.terminate()
            else:
                with contextlib.suppress(OSError):  # it may have exited already
                    child.conn.send(None)
        deadline = time.monotonic() + EXIT_GRACE
        for pid, child in children.items():
            child.process.join(max(0.0, deadline - time.monotonic()))
            if child.process.exitcode is None:
                child.process.kill()
            self._book.child_exited(pid, _reap(child.process))  # expected exits: no events
            self._close(child)

    def _forget_pipe(self, child: _Child) -> None:
        assert self._selector is not None
        with contextlib.suppress(KeyError, ValueError, OSError):  # OSError: already closed
            self._selector.unregister(child.conn.fileno())

    def _close(self, child: _Child) -> None:
        """Unregister and close what a reaped child leaves behind."""
        assert self._selector is not None
        self._forget_pipe(child)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(child.process.sentinel)
        child.conn.close()
        child.queue.close()
        if child.process.exitcode is not None:  # close() refuses a child that was never reaped
            child.process.close()


def _reap(process: Any) -> int | None:
    """Wait for an exited child's status (at most ``EXIT_GRACE``: its sentinel said it is exiting)."""
    process.join(EXIT_GRACE)
    return None if process.exitcode is None else int(process.exitcode)
