"""A hypothesis state machine over the pool's pure bookkeeping, checked against a plain model.

The machine plays both the pool (starting replacements, giving jobs to idle children, reading child
messages, enforcing limits, refusing what it cannot run, stopping warm or cold) and the world (children
dying with any exit code, stale messages racing a kill).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from minicelery.exceptions import Terminated, TimeLimitExceeded, WorkerLostError
from minicelery.worker.bookkeeping import BUSY, EXITING, IDLE, Bookkeeping, exit_status
from minicelery.worker.events import ChildExited, JobDone, JobLost, JobStarted, SoftLimitExceeded

LIMITS = st.one_of(st.none(), st.sampled_from([0.5, 1.0, 2.5]))


@dataclass
class ModelJob:
    pid: int
    number: int
    soft: float | None
    hard: float | None
    started_at: float | None = None
    soft_sent: bool = False


@dataclass
class ModelChild:
    state: str = IDLE
    tasks_run: int = 0
    expected_exit: bool = False


class PoolBookkeeping(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.pids = itertools.count(1000)
        self.job_ids = itertools.count()
        self.job_numbers = itertools.count()  # billiard-style numbers, as "... Job: N." messages show them
        self.now = 0.0
        self.running: dict[int, ModelJob] = {}
        self.ended: dict[int, str] = {}
        self.children: dict[int, ModelChild] = {}
        self.stale: list[tuple[int, int]] = []  # (pid, number) of jobs that ended without a result
        self.accepting = True
        self.closed = False  # close_all() ran (a cold stop, or the end of a warm one)

    @initialize(concurrency=st.integers(1, 3), max_tasks=st.one_of(st.none(), st.integers(1, 3)))
    def setup(self, concurrency: int, max_tasks: int | None) -> None:
        self.book = Bookkeeping(concurrency, max_tasks)
        self.max_tasks = max_tasks
        self.maintain()

    # -- what the pool does -------------------------------------------------------------------------------

    @rule()
    def maintain(self) -> None:
        for _ in range(self.book.missing()):
            pid = next(self.pids)
            self.book.add_child(pid, self.book.new_name())
            self.children[pid] = ModelChild()

    @precondition(lambda self: self.accepting and any(c.state == IDLE for c in self.children.values()))
    @rule(soft=LIMITS, hard=LIMITS)
    def submit(self, soft: float | None, hard: float | None) -> None:
        job_id = next(self.job_ids)
        pid, number = self.book.assign(job_id, soft, hard)
        assert self.children[pid].state == IDLE, "a job went to a child that was not idle"
        assert number == next(self.job_numbers)
        self.children[pid].state = BUSY
        self.running[job_id] = ModelJob(pid, number, soft, hard)

    @precondition(lambda self: not (self.accepting and any(c.state == IDLE for c in self.children.values())))
    @rule(soft=LIMITS, hard=LIMITS)
    def submit_without_an_idle_child(self, soft: float | None, hard: float | None) -> None:
        """Refused (no idle child, or stopping); the invariants and the next job's number show that
        nothing changed."""
        job_id = next(self.job_ids)
        with pytest.raises(RuntimeError):
            self.book.assign(job_id, soft, hard)

    @precondition(lambda self: self.accepting and self.running)
    @rule(data=st.data())
    def submit_a_running_id_again(self, data: st.DataObject) -> None:
        job_id = data.draw(st.sampled_from(sorted(self.running)))
        with pytest.raises(ValueError, match="already running"):
            self.book.assign(job_id)

    @precondition(lambda self: any(job.started_at is None for job in self.running.values()))
    @rule(data=st.data())
    def child_starts(self, data: st.DataObject) -> None:
        waiting = sorted(j for j, job in self.running.items() if job.started_at is None)
        job_id = data.draw(st.sampled_from(waiting))
        job = self.running[job_id]
        events = self.book.started(job.pid, job.number, 1234.5, self.now)
        assert events == [JobStarted(job_id, job.pid, 1234.5)]
        job.started_at = self.now

    @precondition(lambda self: any(job.started_at is not None for job in self.running.values()))
    @rule(data=st.data())
    def started_repeats(self, data: st.DataObject) -> None:
        job = data.draw(st.sampled_from([job for job in self.running.values() if job.started_at is not None]))
        assert self.book.started(job.pid, job.number, 0.0, self.now + 100) == []  # deadlines stay put

    @precondition(lambda self: self.running)
    @rule(data=st.data())
    def child_finishes(self, data: st.DataObject) -> None:
        job_id = data.draw(st.sampled_from(sorted(self.running)))
        job = self.running[job_id]
        child = self.children[job.pid]
        events = self.book.finished(job.pid, job.number, ("result", job_id), 0.1)
        expected: list[object] = [JobDone(job_id, job.pid, ("result", job_id), 0.1)]
        self.end(job_id, "done")
        child.tasks_run += 1
        if self.max_tasks is not None and child.tasks_run >= self.max_tasks:
            child.state, child.expected_exit = EXITING, True  # recycled: it exits by itself
        else:
            child.state = IDLE  # while stopping too, though it is given no job (idle_count() stays 0)
        assert events == expected

    @precondition(lambda self: self.stale)
    @rule(data=st.data())
    def stale_result_arrives(self, data: st.DataObject) -> None:
        pid, number = data.draw(st.sampled_from(self.stale))
        assert self.book.finished(pid, number, "late", 0.1) == []
        assert self.book.started(pid, number, 0.0, self.now) == []

    @precondition(lambda self: self.children)
    @rule(data=st.data(), exitcode=st.sampled_from([0, 1, -9, -15]))
    def child_exits(self, data: st.DataObject, exitcode: int) -> None:
        pid = data.draw(st.sampled_from(sorted(self.children)))
        child = self.children.pop(pid)
        events = self.book.child_exited(pid, exitcode)
        exited = [e for e in events if isinstance(e, ChildExited)]
        lost = [e for e in events if isinstance(e, JobLost)]
        assert len(exited) == (0 if child.expected_exit or exitcode == 0 else 1)
        assert all(e.pid == pid and e.reason == exit_status(exitcode) for e in exited)
        jobs_here = sorted(j for j, job in self.running.items() if job.pid == pid)
        assert len(jobs_here) <= 1
        assert sorted(e.job_id for e in lost) == jobs_here, "a dead child's job must be reported lost, once"
        for event in lost:
            number = self.running[event.job_id].number
            assert isinstance(event.error, WorkerLostError)
            reason = exit_status(exitcode)
            assert str(event.error) == f"Worker exited prematurely: {reason} Job: {number}."
            self.end(event.job_id, "lost")

    @rule(dt=st.sampled_from([0.1, 0.5, 1.0, 3.0]))
    def time_passes(self, dt: float) -> None:
        self.now += dt
        lost = self.book.hard_expired(self.now)
        expected_hard = {j for j, job in self.running.items() if job.started_at is not None
                         and job.hard is not None and self.now >= job.started_at + job.hard}
        assert {e.job_id for e in lost} == expected_hard
        for event in lost:
            assert isinstance(event.error, TimeLimitExceeded)
            assert event.error.args == (self.running[event.job_id].hard,)
            self.children[event.pid].state = EXITING  # the pool SIGKILLs it
            self.end(event.job_id, "lost")
        soft = self.book.soft_expired(self.now)
        expected_soft = {j for j, job in self.running.items() if job.started_at is not None
                         and job.soft is not None and not job.soft_sent
                         and self.now >= job.started_at + job.soft}
        assert {e.job_id for e in soft} == expected_soft
        for passed in soft:
            assert isinstance(passed, SoftLimitExceeded)
            assert passed.limit == self.running[passed.job_id].soft
            self.running[passed.job_id].soft_sent = True

    @precondition(lambda self: self.accepting)
    @rule()
    def warm_stop_begins(self) -> None:
        """What a warm stop does first; running jobs go on and may still end any way."""
        self.book.stop_accepting()
        self.accepting = False

    @precondition(lambda self: not self.closed)
    @rule()
    def cold_stop(self) -> None:
        lost = self.book.close_all()
        assert {e.job_id for e in lost} == set(self.running)
        assert all(isinstance(e.error, Terminated) for e in lost)
        for event in lost:
            self.end(event.job_id, "lost")
        for child in self.children.values():
            child.state, child.expected_exit = EXITING, True
        self.accepting, self.closed = False, True

    def end(self, job_id: int, how: str) -> None:
        assert job_id not in self.ended, f"job {job_id} ended twice"
        job = self.running.pop(job_id)
        self.ended[job_id] = how
        if how == "lost":
            self.stale.append((job.pid, job.number))

    # -- invariants -----------------------------------------------------------------------------------

    @invariant()
    def jobs_are_running_or_ended_never_both(self) -> None:
        if not hasattr(self, "book"):
            return
        assert not set(self.running) & set(self.ended)
        assert self.book.active() == {j: job.pid for j, job in self.running.items()}
        assert self.book.has_jobs() == bool(self.running)

    @invariant()
    def a_child_holds_at_most_one_job(self) -> None:
        if not hasattr(self, "book"):
            return
        pids = [job.pid for job in self.running.values()]
        assert len(pids) == len(set(pids))
        assert all(self.children[pid].state == BUSY for pid in pids)

    @invariant()
    def every_child_is_idle_busy_or_exiting(self) -> None:
        if not hasattr(self, "book"):
            return
        counts = {state: self.book.count(state) for state in (IDLE, BUSY, EXITING)}
        assert sum(counts.values()) == len(self.book.pids()) == len(self.children)
        assert counts[BUSY] == len(self.running)
        assert self.book.idle_count() == (counts[IDLE] if self.accepting else 0)
        model = {state: sum(1 for c in self.children.values() if c.state == state)
                 for state in (IDLE, BUSY, EXITING)}
        assert counts == model

    @invariant()
    def replacements_restore_concurrency(self) -> None:
        if not hasattr(self, "book"):
            return
        if self.accepting:
            assert len(self.book.pids()) + self.book.missing() == self.book.concurrency
        else:
            assert self.book.missing() == 0 and self.book.idle_count() == 0

    @invariant()
    def next_deadline_is_the_earliest_pending_limit(self) -> None:
        if not hasattr(self, "book"):
            return
        pending = [job.started_at + limit for job in self.running.values()
                   if job.started_at is not None
                   for limit, live in ((job.soft, not job.soft_sent), (job.hard, True))
                   if limit is not None and live]
        assert self.book.next_deadline() == min(pending, default=None)


PoolBookkeeping.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
TestPoolBookkeeping = PoolBookkeeping.TestCase


def test_exit_status_matches_celerys_wording() -> None:
    assert exit_status(1) == "exitcode 1"
    assert exit_status(0) == "exitcode 0"
    assert exit_status(-9) == "signal 9 (SIGKILL)"
    assert exit_status(-15) == "signal 15 (SIGTERM)"


def test_children_are_named_in_order_and_never_reuse_a_number() -> None:
    book = Bookkeeping(2)
    names = [book.new_name() for _ in range(3)]
    assert names == ["ForkPoolWorker-1", "ForkPoolWorker-2", "ForkPoolWorker-3"]
