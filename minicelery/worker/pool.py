"""The prefork pool: N child processes that run opaque jobs, driven from the main thread.

Celery counterpart: ``celery.concurrency.prefork`` driving ``billiard.pool.Pool`` (its result handler,
timeout handler and supervisor), with each child on its own pipe and jobs written only to idle children,
as Celery's ``-O fair`` does. The pool knows nothing of tasks or brokers: a job is an opaque picklable
payload that the child's handler turns into an opaque picklable result. Left out: billiard's shared
in/out queues and helper threads, autoscaling, ``maxmemperchild``, restart, and Windows. The only home of
``multiprocessing``.

One thread drives the pool: the one that calls :meth:`Pool.start` calls every method. The pool watches
every child's pipe and a *pidfd* per child (a descriptor that turns readable when that process exits,
whatever its own children keep open) in one selector, whose descriptor :meth:`Pool.fileno` hands to the
worker's loop; :meth:`Pool.poll` then reads the ready pipes, reaps exited children and starts their
replacements, signals children past a time limit (soft: SIGUSR1, hard: SIGKILL), and queues what
happened for :meth:`Pool.events`. Being single-threaded, the pool needs no lock, and it forks only from
the thread that owns it.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import pickle
import select
import selectors
import signal
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from .bookkeeping import Bookkeeping
from .child import Assignment, Done, HandlerError, Started, child_main, load_result, startup_signals_blocked
from .events import PoolEvent

__all__ = ["HandlerError", "Pool"]

#: Seconds children get to exit after being asked (warm) or sent SIGTERM (cold) before SIGKILL.
EXIT_GRACE = 5.0

#: Selector keys' data: what a ready descriptor means.
_MESSAGE, _EXIT = "message", "exit"


@dataclass
class _Child:
    """A started child: its process object, the main process's end of its pipe, and its pidfd."""

    process: Any  # multiprocessing.process.BaseProcess; the context's class is not nameable statically
    conn: Connection
    pidfd: int


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
        self._selector = selectors.DefaultSelector()
        self._running = False
        self._stopped = False

    # -- the owner's API --------------------------------------------------------------------------------

    def start(self) -> None:
        """Start ``concurrency`` children."""
        if self._running or self._stopped:
            raise RuntimeError("a pool can be started once only")
        self._running = True
        for _ in range(self._book.concurrency):
            self._start_child()

    def fileno(self) -> int:
        """A descriptor that is readable whenever :meth:`poll` has something to read or reap (the
        selector's own: an epoll descriptor can itself be waited on), for an outer event loop."""
        return self._selector.fileno()

    def submit(self, job_id: Hashable, payload: Any, *, soft_time_limit: float | None = None,
               time_limit: float | None = None, report_start: bool | None = None) -> None:
        """Send a job to the child idle longest. Time limits count from the job's start; the child reports
        ``JobStarted`` only if ``report_start`` (default: when a time limit applies).

        Raises:
            RuntimeError: the pool is not running, or no child is idle (check :meth:`idle_count` first).
            ValueError: a job with this id is still running.
        """
        if not self._running:
            raise RuntimeError("the pool is not running")
        # Pickle before touching any state, so an unpicklable payload leaves the pool unchanged.
        blob = pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
        timed = soft_time_limit is not None or time_limit is not None
        pid, number = self._book.assign(job_id, soft_time_limit, time_limit)
        try:
            self._children[pid].conn.send(Assignment(number, blob, timed if report_start is None
                                                     else report_start))
        except OSError:
            pass  # the child just died; its pidfd fires and the job is reported lost when it is reaped

    def poll(self, timeout: float | None) -> None:
        """Wait up to ``timeout`` s (None: no limit) for a child, then handle children: read results,
        reap and replace exited ones, enforce time limits. Events go to :meth:`events`."""
        if not self._running:
            return
        deadline = self._book.next_deadline()
        if deadline is not None:
            wait = max(0.0, deadline - time.monotonic())
            timeout = wait if timeout is None else min(timeout, wait)
        exited: list[int] = []
        for key, _mask in self._selector.select(timeout):
            kind, pid = key.data
            if kind == _MESSAGE:
                self._read(pid)
            else:
                exited.append(pid)
        for pid in exited:
            self._on_exit(pid)
        if deadline is not None:
            self._enforce_limits()
        if exited:
            self._maintain()

    def next_deadline(self) -> float | None:
        """The monotonic time of the next time limit, when :meth:`poll` must run even if nothing else
        happens (None: no running job has a limit)."""
        return self._book.next_deadline()

    def events(self) -> list[PoolEvent]:
        """Return (and forget) the events queued since the last call."""
        events, self._events = self._events, []
        return events

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
        Either way the events of the jobs that ended stay queued for :meth:`events`.

        Args:
            cold: terminate running jobs instead of waiting for them.
            timeout: for a warm stop, how long to wait for running jobs before going cold (None: forever).
        """
        if not self._running:
            return
        self._book.stop_accepting()
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
        self._events.extend(self._book.close_all())
        self._end_children(cold)
        self._selector.close()
        self._stopped = True

    # -- children ---------------------------------------------------------------------------------------

    def _start_child(self) -> None:
        """Start one child process and register its pipe and pidfd."""
        name = self._book.new_name()
        parent_end, child_end = self._context.Pipe(duplex=True)
        process = self._context.Process(
            target=child_main, args=(child_end, self._handler_factory, self._max_tasks, os.getpid()),
            name=name, daemon=True,  # daemon: multiprocessing's atexit terminates children we leaked
        )
        with startup_signals_blocked():  # see child.py: the child unblocks once its handlers are set
            process.start()
        child_end.close()  # the child holds its end now; ours would only keep the pipe alive
        # A pidfd, not the process's sentinel: a task's own child inherits the sentinel and would keep
        # it from firing until it exits too (https://man7.org/linux/man-pages/man2/pidfd_open.2.html).
        pidfd = os.pidfd_open(process.pid)
        self._book.add_child(process.pid, name)
        self._children[process.pid] = _Child(process, parent_end, pidfd)
        self._selector.register(parent_end.fileno(), selectors.EVENT_READ, (_MESSAGE, process.pid))
        self._selector.register(pidfd, selectors.EVENT_READ, (_EXIT, process.pid))

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
            # The child is gone: stop watching its pipe (readable forever at EOF); its pidfd does the rest
            self._forget_pipe(child)
            return
        self._events += self._apply(pid, message)

    def _apply(self, pid: int, message: Any) -> list[PoolEvent]:
        """Turn one child message into bookkeeping updates and events."""
        match message:
            case Done(number, blob, runtime):
                return self._book.finished(pid, number, load_result(blob), runtime)
            case Started(number, started_at, monotonic):
                # CLOCK_MONOTONIC is system-wide on Linux, so the child's reading is comparable to ours
                # and limits count from when the job really began, not from when we read the message.
                return self._book.started(pid, number, started_at, monotonic)
        raise ValueError(f"unknown message from child {pid}: {message!r}")

    def _on_exit(self, pid: int) -> None:
        """Handle a child whose pidfd fired: read its last messages first, then reap and forget it."""
        child = self._children.pop(pid, None)
        if child is None:
            return
        self._read_pending(pid, child)  # a recycled child sends its last result and exits at once
        self._events += self._book.child_exited(pid, _reap(child))
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
        # A child that exited meanwhile is fine to miss: its pidfd tells the rest.
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
            if not _exited(child, max(0.0, deadline - time.monotonic())):
                child.process.kill()
            self._book.child_exited(pid, _reap(child))  # expected exits: no events
            self._close(child)

    def _forget_pipe(self, child: _Child) -> None:
        with contextlib.suppress(KeyError, ValueError, OSError):  # OSError: already closed
            self._selector.unregister(child.conn.fileno())

    def _close(self, child: _Child) -> None:
        """Unregister and close what a reaped child leaves behind."""
        self._forget_pipe(child)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(child.pidfd)
        os.close(child.pidfd)
        child.conn.close()
        if child.process.exitcode is not None:  # close() refuses a child that was never reaped
            child.process.close()


def _exited(child: _Child, timeout: float) -> bool:
    """Wait up to ``timeout`` s for a child to exit (its pidfd turning readable); say whether it did."""
    return bool(select.select([child.pidfd], [], [], timeout)[0])


def _reap(child: _Child) -> int | None:
    """Collect an exited child's status (at most ``EXIT_GRACE``: its pidfd said it is exiting).

    ``exitcode`` asks the kernel without waiting (``waitpid`` with ``WNOHANG``), unlike ``join()``,
    which waits for the process's sentinel that a task's own child may still hold open."""
    _exited(child, EXIT_GRACE)
    code = child.process.exitcode
    return None if code is None else int(code)
