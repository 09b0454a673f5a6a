"""The prefork pool: N child processes that run opaque jobs, watched by one collector thread.

Celery counterpart: ``celery.concurrency.prefork`` driving ``billiard.pool.Pool`` (its result handler,
timeout handler and supervisor threads), with each child on its own pipe as Celery's ``-O fair`` gives.
The pool knows nothing of tasks or brokers: a job is an opaque picklable payload that the child's handler
turns into an opaque picklable result. Left out: billiard's shared in/out queues and async mode, autoscaling,
revoking one job, ``maxmemperchild``, restart, and Windows. The only home of ``multiprocessing``.

Threading contract:

* The *main thread* (the one that calls :meth:`Pool.start`) calls every public method. It alone creates
  processes: replacements for dead or recycled children are started inside :meth:`Pool.events` and
  :meth:`Pool.submit`, because forking from another thread while some thread holds a lock (logging, stdio,
  the broker library) can leave that lock held forever in the child. It also closes the pipes and sentinels
  of reaped children, so a file descriptor is never closed under a ``send`` in progress.
* The *collector thread* waits (``multiprocessing.connection.wait``) on every child pipe and process
  sentinel, turns messages into events, enforces time limits (soft: SIGUSR1, hard: SIGKILL), reaps dead
  children, queues events and then calls ``notify()``. ``notify`` therefore runs on the collector thread and
  must be thread-safe (with pika: ``connection.add_callback_threadsafe``); it should only wake the main
  thread, which then calls :meth:`Pool.events`.
* One lock guards the :class:`~minicelery.worker.bookkeeping.Bookkeeping`, the child table and the event
  queue. Nothing that can block (pipe writes, forks, joins, ``notify``) happens while holding it.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import pickle
import signal
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

from minicelery.worker.bookkeeping import (
    Bookkeeping,
    ChildExited,
    JobDone,
    JobLost,
    JobStarted,
    PoolEvent,
    SoftLimitExceeded,
)
from minicelery.worker.child import HandlerError, child_main, load_result, startup_signals_blocked

__all__ = ["ChildExited", "HandlerError", "JobDone", "JobLost", "JobStarted", "Pool", "PoolEvent",
           "SoftLimitExceeded"]

logger = logging.getLogger(__name__)

#: Seconds children get to exit after being asked (warm) or sent SIGTERM (cold) before SIGKILL.
EXIT_GRACE = 5.0


@dataclass
class _Child:
    """A started child: its process object, the main process's end of its pipe, and whether it hit EOF."""

    process: Any  # multiprocessing.process.BaseProcess; the context's class is not nameable statically
    conn: Connection
    eof: bool = False


class Pool:
    """A fixed number of child processes, each running one job at a time through a handler.

    Args:
        concurrency: how many children to keep running.
        handler_factory: a picklable module-level callable (or ``functools.partial`` of one) called once in
            each child to build the ``handler(payload) -> result`` function.
        max_tasks_per_child: replace a child after it ran this many jobs; None means never.
        start_method: ``'fork'`` (the default, as on Linux until Python 3.14) or ``'spawn'``.
        notify: called from the collector thread after events are queued or a child exits.
        name_prefix: children are named ``f'{name_prefix}-{n}'``, n counting up from 1 and never reused.
    """

    def __init__(self, concurrency: int, handler_factory: Callable[[], Callable[[Any], Any]], *,
                 max_tasks_per_child: int | None = None, start_method: str | None = None,
                 notify: Callable[[], None] | None = None, name_prefix: str = "ForkPoolWorker") -> None:
        if start_method not in (None, "fork", "spawn"):  # a forkserver child's parent is not us
            raise ValueError(f"start_method must be None, 'fork' or 'spawn', not {start_method!r}")
        self._book = Bookkeeping(concurrency, max_tasks_per_child, name_prefix)
        # Any: typeshed's BaseContext lacks Process/Pipe, which every concrete context has.
        self._context: Any = multiprocessing.get_context(start_method or "fork")  # 3.14 defaults elsewhere
        self._handler_factory = handler_factory
        self._max_tasks = max_tasks_per_child
        self._notify = notify
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # wakes a warm stop() waiting for jobs to end
        self._children: dict[int, _Child] = {}
        self._reaped: list[_Child] = []  # closed by the main thread, see the module docstring
        self._events: list[PoolEvent] = []
        self._running = False
        self._closing = False
        self._stopped = threading.Event()
        self._collector: threading.Thread | None = None
        self._wake_r, self._wake_w = -1, -1

    # -- the main thread's API --------------------------------------------------------------------------

    def start(self) -> None:
        """Start ``concurrency`` children and the collector thread."""
        if self._running or self._stopped.is_set():
            raise RuntimeError("a pool can be started once only")
        # A self-pipe lets the main thread wake the collector when a child is added or on stop().
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._running = True
        for _ in range(self._book.concurrency):
            self._start_child()
        self._collector = threading.Thread(target=self._collect, name="PoolCollector", daemon=True)
        self._collector.start()

    def submit(self, job_id: Hashable, payload: Any, *, soft_time_limit: float | None = None,
               time_limit: float | None = None, report_start: bool | None = None) -> int:
        """Send a job to the child idle longest and return its pid; time limits count from the job's start.
        The child reports ``JobStarted`` only if ``report_start`` (default: when a time limit applies).

        Raises:
            RuntimeError: the pool is not running, or no child is idle (check :meth:`idle_count` first).
            ValueError: a job with this id is still running.
        """
        self._maintain()
        # Pickle before touching any state, so an unpicklable payload leaves the pool unchanged.
        blob = pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
        with self._lock:
            if not self._running:
                raise RuntimeError("the pool is not running")
            pid, number = self._book.assign(job_id, soft_time_limit, time_limit)
            conn = self._children[pid].conn
        try:
            timed = soft_time_limit is not None or time_limit is not None
            conn.send((number, blob, timed if report_start is None else report_start))
        except OSError:
            pass  # the child just died; the collector reports the job as lost when it reaps the child
        return pid

    def events(self) -> list[PoolEvent]:
        """Return (and forget) the events queued since the last call, after replacing exited children."""
        self._maintain()
        with self._lock:
            events, self._events = self._events, []
        return events

    def idle_count(self) -> int:
        """Return how many children can take a job now (0 before start and once stopping)."""
        with self._lock:
            return self._book.idle_count() if self._running and self._book.accepting else 0

    def active(self) -> dict[Hashable, int]:
        """Return the jobs submitted and not yet ended, as ``{job_id: pid}``."""
        with self._lock:
            return self._book.active()

    def pids(self) -> list[int]:
        """Return the pids of the pool's child processes, oldest first."""
        with self._lock:
            return self._book.pids()

    def children(self) -> dict[int, str]:
        """Return ``{pid: name}`` of the pool's child processes (``ForkPoolWorker-N``)."""
        with self._lock:
            return self._book.names()

    def stop(self, cold: bool = False, timeout: float | None = None) -> None:
        """Stop the pool; no child process remains when this returns.

        Warm (the default) stops accepting jobs, waits for the running ones to end, then asks each child to
        exit. Cold terminates the children at once; their jobs are reported as ``JobLost(Terminated)``.

        Args:
            cold: terminate running jobs instead of waiting for them.
            timeout: for a warm stop, how long to wait for running jobs before going cold (None: forever).
        """
        with self._lock:
            if not self._running:
                return
            self._book.stop_accepting()
        if not cold:
            with self._changed:
                cold = not self._changed.wait_for(lambda: not self._book.has_jobs(), timeout)
        with self._lock:
            self._running, self._closing = False, True
            lost = self._book.close_all()
            self._events.extend(lost)
        self._wake_collector()
        if self._collector is not None:
            self._collector.join()
        self._end_children(cold)
        self._close_reaped()
        os.close(self._wake_r)
        os.close(self._wake_w)
        self._stopped.set()
        if lost:
            self._call_notify()

    def join(self, timeout: float | None = None) -> bool:
        """Wait until :meth:`stop` has finished (possibly in another thread); say whether it has."""
        return self._stopped.wait(timeout)

    def _start_child(self) -> None:
        """Start one child process and register it (main thread only)."""
        with self._lock:
            name = self._book.new_name()
        parent_end, child_end = self._context.Pipe(duplex=True)
        process = self._context.Process(
            target=child_main, args=(child_end, self._handler_factory, self._max_tasks, os.getpid()),
            name=name, daemon=True,  # daemon: multiprocessing's atexit terminates children we leaked
        )
        with startup_signals_blocked():  # see child.py: the child unblocks once its handlers are set
            process.start()
        child_end.close()  # the child holds its end now; ours would only keep the pipe alive
        with self._lock:
            self._book.add_child(process.pid, name)
            self._children[process.pid] = _Child(process, parent_end)
        self._wake_collector()

    def _maintain(self) -> None:
        """Close what the collector reaped and start children to get back to ``concurrency``."""
        self._close_reaped()
        with self._lock:
            missing = self._book.missing() if self._running else 0
        for _ in range(missing):
            self._start_child()

    def _close_reaped(self) -> None:
        with self._lock:
            reaped, self._reaped = self._reaped, []
        for child in reaped:
            child.conn.close()
            if child.process.exitcode is not None:  # close() refuses a child that was never reaped
                child.process.close()

    def _end_children(self, cold: bool) -> None:
        """Ask (warm) or force (cold: SIGTERM) every child to exit, SIGKILL stragglers, and reap them."""
        with self._lock:
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
            exitcode = _reap(child.process)
            with self._lock:
                self._book.child_exited(pid, exitcode)  # expected exits: no events
                self._reaped.append(child)

    def _wake_collector(self) -> None:
        # A full pipe already holds a wake-up; a closed one (-1 before start) has no collector to wake.
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    def _call_notify(self) -> None:
        if self._notify is None:
            return
        try:
            self._notify()
        except Exception:
            logger.exception("Pool notify callback raised")

    # -- the collector thread ---------------------------------------------------------------------------

    def _collect(self) -> None:
        """Run the collector thread until stop(): wait, read, reap, enforce limits, publish."""
        while True:
            with self._lock:
                if self._closing:
                    return
                watched = self._watch_list()
                deadline = self._book.next_deadline()
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready = wait(list(watched), timeout)
            events: list[PoolEvent] = []  # filled in place, so a failure keeps what was read before it
            try:
                exited = self._handle_ready(ready, watched, events)
                events += self._enforce_limits()
            except Exception:
                # The collector must survive anything, or every running job would hang forever.
                logger.exception("Pool collector failed to handle an event")
                exited = True  # wake the main thread anyway, in case a child needs replacing
            self._publish(events, exited)

    def _watch_list(self) -> dict[Any, tuple[str, int]]:
        """Map every object to wait on to ``(kind, pid)``; called with the lock held."""
        watched: dict[Any, tuple[str, int]] = {self._wake_r: ("wake", 0)}
        for pid, child in self._children.items():
            watched[child.process.sentinel] = ("exit", pid)
            if not child.eof:  # a pipe at EOF stays readable and would make wait() spin
                watched[child.conn] = ("message", pid)
        return watched

    def _handle_ready(self, ready: list[Any], watched: dict[Any, tuple[str, int]],
                      events: list[PoolEvent]) -> bool:
        """Read ready pipes into ``events``, then reap exited children; say whether any child exited."""
        exited: list[int] = []
        for obj in ready:
            kind, pid = watched[obj]
            if kind == "wake":
                _drain(self._wake_r)
            elif kind == "message":
                events.extend(self._read(pid))
            else:
                exited.append(pid)
        for pid in exited:
            events.extend(self._on_exit(pid))
        return bool(exited)

    def _read(self, pid: int) -> list[PoolEvent]:
        """Read every message waiting on a child's pipe and apply it to the bookkeeping."""
        with self._lock:
            child = self._children.get(pid)
        events: list[PoolEvent] = []
        while child is not None and not child.eof and child.conn.poll(0):
            try:
                message = child.conn.recv()
            except (EOFError, OSError):
                child.eof = True  # the child is gone; its sentinel tells the rest
                break
            with self._lock:
                events += self._apply(pid, message)
        return events

    def _apply(self, pid: int, message: tuple[Any, ...]) -> list[PoolEvent]:
        """Turn one child message into bookkeeping updates and events; called with the lock held."""
        kind, number = message[0], message[1]
        if kind == "started":
            # CLOCK_MONOTONIC is system-wide on Linux, so the child's reading is comparable to ours and
            # limits count from when the job really began, not from when we got around to reading.
            return self._book.started(pid, number, message[2], message[3])
        if kind == "done":
            return self._book.finished(pid, number, load_result(message[2]), message[3])
        raise ValueError(f"unknown message from child {pid}: {kind!r}")

    def _on_exit(self, pid: int) -> list[PoolEvent]:
        """Handle a child whose sentinel fired: read its last messages first, then reap and forget it."""
        # A recycled child sends its last result and exits at once: read it first or the job looks lost.
        events = self._read(pid)
        with self._lock:
            child = self._children.get(pid)
        if child is None:
            return events
        exitcode = _reap(child.process)
        with self._lock:
            events += self._book.child_exited(pid, exitcode)
            del self._children[pid]
            self._reaped.append(child)
        return events

    def _enforce_limits(self) -> list[PoolEvent]:
        """Signal children whose job passed a time limit: SIGKILL for hard, SIGUSR1 for soft."""
        now = time.monotonic()
        with self._lock:
            lost = self._book.hard_expired(now)
            soft = self._book.soft_expired(now)
        # A child that exited meanwhile is fine to miss: its sentinel tells the rest.
        for event in lost:
            with contextlib.suppress(ProcessLookupError):
                os.kill(event.pid, signal.SIGKILL)
        for passed in soft:
            with contextlib.suppress(ProcessLookupError):
                os.kill(passed.pid, signal.SIGUSR1)
        return [*lost, *soft]

    def _publish(self, events: list[PoolEvent], exited: bool) -> None:
        """Queue events, wake a waiting stop(), and notify the main thread (also for replacements)."""
        if not events and not exited:
            return
        with self._changed:
            self._events.extend(events)
            self._changed.notify_all()
        self._call_notify()


def _reap(process: Any) -> int | None:
    """Wait for an exited child's status, retrying while another thread's waitpid holds it.

    ``Process.start()`` polls every child with waitpid(WNOHANG) from the main thread; if it wins the race
    our waitpid gets ECHILD, and the exit code shows up on the shared Popen object a moment later.
    """
    for _ in range(100):
        process.join(0.05)
        if process.exitcode is not None:
            return int(process.exitcode)
    return None


def _drain(fd: int) -> None:
    with contextlib.suppress(BlockingIOError):
        while os.read(fd, 4096):
            pass
