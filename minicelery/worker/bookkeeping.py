"""The prefork pool's pure state: which child runs which job, when each job must stop, who needs replacing.

Celery counterpart: the state billiard's ``Pool`` spreads over ``_pool``, ``_cache``, the ``TimeoutHandler``
and the ``maxtasksperchild`` counters, plus the wording of ``WorkerLostError`` and of the "exited with"
log line (``billiard.common.human_status``). Left out: everything with a side effect. There are no
processes, pipes, threads or clocks here; every method is told the pid, the job number or the time it needs,
so :class:`Bookkeeping` can be driven by a hypothesis state machine (tests/property/test_pool_bookkeeping.py)
and :mod:`minicelery.worker.pool` only has to perform what it decides.

A child slot is in one of three states: ``idle`` (may be given a job), ``busy`` (has one job) or
``exiting`` (will take no more jobs and is waiting to be reaped: recycled, hard-killed or being stopped).
Jobs go to idle children only, so no job waits behind a long one while another child has nothing to do
(the guarantee Celery's ``-O fair`` gives). A job ends exactly once, as :class:`JobDone` or
:class:`JobLost`; a message about a job that already ended (a "done" that raced a hard kill) is ignored.
"""

from __future__ import annotations

import itertools
import signal
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

from ..exceptions import Terminated, TimeLimitExceeded, WorkerLostError
from .events import ChildExited, JobDone, JobLost, JobStarted, PoolEvent, SoftLimitExceeded

__all__ = ["BUSY", "EXITING", "IDLE", "Bookkeeping", "exit_status"]

IDLE, BUSY, EXITING = "idle", "busy", "exiting"


def exit_status(exitcode: int | None) -> str:
    """Describe a process exit code the way Celery's logs do: ``'exitcode 1'`` or ``'signal 9 (SIGKILL)'``."""
    if exitcode is not None and exitcode < 0:
        try:
            return f"signal {-exitcode} ({signal.Signals(-exitcode).name})"
        except ValueError:
            return f"signal {-exitcode}"
    return f"exitcode {exitcode}"


@dataclass
class _Job:
    """One job handed to a child; deadlines are set once the child says it started (time limits count
    from then, like billiard's ``_time_accepted``)."""

    job_id: Any  # the caller's hashable id
    number: int
    soft_limit: float | None
    time_limit: float | None
    started: bool = False
    soft_deadline: float | None = None
    hard_deadline: float | None = None


@dataclass
class _Slot:
    """One child process as the pool sees it."""

    pid: int
    name: str
    state: str = IDLE
    job: _Job | None = None
    tasks_run: int = 0
    expected_exit: bool = False


class Bookkeeping:
    """Children slots, the idle queue, the job table, deadlines and recycling counters of one pool."""

    def __init__(self, concurrency: int, max_tasks_per_child: int | None = None,
                 name_prefix: str = "ForkPoolWorker") -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, not {concurrency!r}")
        if max_tasks_per_child is not None and max_tasks_per_child < 1:
            raise ValueError(f"max_tasks_per_child must be at least 1 or None, not {max_tasks_per_child!r}")
        self.concurrency = concurrency
        self.max_tasks_per_child = max_tasks_per_child
        self.name_prefix = name_prefix
        self.accepting = True
        self._slots: dict[int, _Slot] = {}
        self._idle: dict[int, None] = {}  # an ordered set: the child idle longest comes first
        self._jobs: dict[Hashable, int] = {}
        self._child_numbers = itertools.count(1)
        # Job numbers start at 0 like billiard's job counter; they appear in "... Job: N." messages.
        self._job_numbers = itertools.count()

    # -- children ---------------------------------------------------------------------------------------

    def new_name(self) -> str:
        """Reserve the next child name: ``ForkPoolWorker-1``, ``-2``, ... (never reused, like Celery)."""
        return f"{self.name_prefix}-{next(self._child_numbers)}"

    def add_child(self, pid: int, name: str) -> None:
        """Record a freshly started child; it is idle and can take a job at once."""
        if pid in self._slots:
            raise ValueError(f"child pid {pid} is already known")
        self._slots[pid] = _Slot(pid, name)
        self._idle[pid] = None

    def missing(self) -> int:
        """Say how many children must be started to get back to ``concurrency`` (0 once stopping)."""
        return max(0, self.concurrency - len(self._slots)) if self.accepting else 0

    def child_exited(self, pid: int, exitcode: int | None) -> list[PoolEvent]:
        """Forget a reaped child; report its exit if unexpected and its job, if any, as lost."""
        slot = self._slots.pop(pid, None)
        if slot is None:
            return []
        self._idle.pop(pid, None)
        status = exit_status(exitcode)
        events: list[PoolEvent] = []
        # Like billiard, a clean exit (or one the pool asked for) is not worth an error line.
        if not slot.expected_exit and exitcode != 0:
            events.append(ChildExited(pid, slot.name, status))
        job = self._end_job(slot)
        if job is not None:
            error = WorkerLostError(f"Worker exited prematurely: {status} Job: {job.number}.")
            events.append(JobLost(job.job_id, pid, error))
        return events

    # -- jobs -------------------------------------------------------------------------------------------

    def assign(self, job_id: Hashable, soft_limit: float | None = None,
               time_limit: float | None = None) -> tuple[int, int]:
        """Give a job to the child idle longest and return ``(pid, job number)``.

        Raises:
            RuntimeError: the pool is stopping, or no child is idle.
            ValueError: a job with this id is still running.
        """
        self._check_new(job_id)
        if not self._idle:
            raise RuntimeError("no idle child: submit only while idle_count() > 0")
        pid = next(iter(self._idle))
        del self._idle[pid]
        slot = self._slots[pid]
        slot.state = BUSY
        slot.job = _Job(job_id, next(self._job_numbers), soft_limit, time_limit)
        self._jobs[job_id] = pid
        return pid, slot.job.number

    def started(self, pid: int, number: int, started_at: float, now: float) -> list[PoolEvent]:
        """Note that a child began job ``number`` at monotonic time ``now``; its deadlines start here."""
        job = self._current_job(pid, number)
        if job is None or job.started:
            return []
        job.started = True
        if job.soft_limit is not None:
            job.soft_deadline = now + job.soft_limit
        if job.time_limit is not None:
            job.hard_deadline = now + job.time_limit
        return [JobStarted(job.job_id, pid, started_at)]

    def finished(self, pid: int, number: int, result: Any, runtime: float) -> list[PoolEvent]:
        """Record a job's result; the child becomes idle again, or exiting once it ran its last job."""
        job = self._current_job(pid, number)
        if job is None:
            return []  # the job already ended (hard limit or cold stop raced the child's answer)
        slot = self._slots[pid]
        self._end_job(slot)
        slot.tasks_run += 1
        events: list[PoolEvent] = [JobDone(job.job_id, pid, result, runtime)]
        limit = self.max_tasks_per_child
        if limit is not None and slot.tasks_run >= limit:
            # The child counts too and exits by itself after this job (billiard's maxtasksperchild).
            slot.state, slot.expected_exit = EXITING, True
        else:
            slot.state = IDLE
            if self.accepting:  # while stopping it waits to be asked to exit, like the children already idle
                self._idle[pid] = None
        return events

    def hard_expired(self, now: float) -> list[JobLost]:
        """End every job past its hard limit; the pool must SIGKILL the returned pids."""
        lost: list[JobLost] = []
        for slot in self._slots.values():
            job = slot.job
            if job is None or job.hard_deadline is None or now < job.hard_deadline:
                continue
            self._end_job(slot)
            slot.state = EXITING
            lost.append(JobLost(job.job_id, slot.pid, TimeLimitExceeded(job.time_limit)))
        return lost

    def soft_expired(self, now: float) -> list[SoftLimitExceeded]:
        """Mark every job newly past its soft limit; the pool must signal the returned pids once each."""
        passed: list[SoftLimitExceeded] = []
        for slot in self._slots.values():
            job = slot.job
            if job is None or job.soft_deadline is None or now < job.soft_deadline:
                continue
            job.soft_deadline = None  # signal a job once only
            passed.append(SoftLimitExceeded(job.job_id, slot.pid, job.soft_limit or 0.0))
        return passed

    def next_deadline(self) -> float | None:
        """Return the earliest pending soft or hard deadline, or None if no running job has one."""
        deadlines = [d for slot in self._slots.values() if slot.job is not None
                     for d in (slot.job.soft_deadline, slot.job.hard_deadline) if d is not None]
        return min(deadlines, default=None)

    def stop_accepting(self) -> None:
        """Refuse new jobs and stop replacing children (the first step of any shutdown)."""
        self.accepting = False
        self._idle.clear()

    def close_all(self) -> list[JobLost]:
        """Mark every child as asked to exit; jobs still running end as lost with ``Terminated``."""
        self.stop_accepting()
        lost: list[JobLost] = []
        for slot in self._slots.values():
            job = self._end_job(slot)
            if job is not None:
                error = Terminated(f"Terminated by a cold shutdown Job: {job.number}.")
                lost.append(JobLost(job.job_id, slot.pid, error))
            slot.state, slot.expected_exit = EXITING, True
        return lost

    # -- queries ----------------------------------------------------------------------------------------

    def idle_count(self) -> int:
        """Return how many children can take a job right now."""
        return len(self._idle)

    def count(self, state: str) -> int:
        """Return how many children are in ``state`` (``IDLE``, ``BUSY`` or ``EXITING``)."""
        return sum(1 for slot in self._slots.values() if slot.state == state)

    def active(self) -> dict[Hashable, int]:
        """Return the jobs given to a child and not ended, as ``{job_id: pid}``."""
        return dict(self._jobs)

    def has_jobs(self) -> bool:
        """Say whether any job is still running."""
        return bool(self._jobs)

    def pids(self) -> list[int]:
        """Return the pids of the children not yet reaped, oldest first."""
        return list(self._slots)

    def names(self) -> dict[int, str]:
        """Return ``{pid: name}`` for the children not yet reaped."""
        return {pid: slot.name for pid, slot in self._slots.items()}

    def _current_job(self, pid: int, number: int) -> _Job | None:
        slot = self._slots.get(pid)
        if slot is None or slot.job is None or slot.job.number != number:
            return None
        return slot.job

    def _check_new(self, job_id: Hashable) -> None:
        """Refuse a job while stopping, or one whose id is still given to a child."""
        if not self.accepting:
            raise RuntimeError("the pool is stopping and accepts no more jobs")
        if job_id in self._jobs:
            raise ValueError(f"job {job_id!r} is already running in child {self._jobs[job_id]}")

    def _end_job(self, slot: _Slot) -> _Job | None:
        job, slot.job = slot.job, None
        if job is not None:
            del self._jobs[job.job_id]
        return job
