"""The prefork pool with real child processes: results, child death, time limits, recycling, shutdown.

Tests synchronise on the pool's own events (``wait_for_events`` blocks in ``Pool.poll``, as the worker
does); sleeps appear only inside job bodies, to simulate work.
"""

from __future__ import annotations

import functools
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from minicelery.exceptions import SoftTimeLimitExceeded, Terminated, TimeLimitExceeded, WorkerLostError
from minicelery.worker.events import (
    ChildExited,
    JobAccepted,
    JobDone,
    JobLost,
    JobReturned,
    JobStarted,
    PoolEvent,
    SoftLimitExceeded,
)
from minicelery.worker.pool import QUEUE_LIMIT, HandlerError, Pickled, Pool

FACTORY_CALLS = 0


# -- handlers (module level, so a spawned child can import them) ----------------------------------------

def make_handler() -> Callable[[Any], Any]:
    global FACTORY_CALLS
    FACTORY_CALLS += 1
    return run_job


def make_tagged_handler(tag: str) -> Callable[[Any], Any]:
    make_handler()
    return functools.partial(tagged_job, tag)


def tagged_job(tag: str, payload: Any) -> Any:
    return tag, run_job(payload), FACTORY_CALLS, multiprocessing.current_process().name


def run_job(payload: tuple[str, Any]) -> Any:
    kind, arg = payload
    if kind == "double":
        return arg * 2
    if kind == "whoami":
        return os.getpid(), multiprocessing.current_process().name, FACTORY_CALLS
    if kind == "span":  # sleep, reporting when the job ran
        began = time.time()
        time.sleep(arg)
        return began, time.time(), os.getpid()
    if kind == "raise":
        raise ValueError(arg)
    if kind == "exit":
        os._exit(arg)
    if kind == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    if kind == "unpicklable":
        return lambda: None
    return run_long_job(kind, arg)


def run_long_job(kind: str, arg: float) -> Any:
    deadline = time.monotonic() + arg  # a bound, so a broken pool cannot leave a job spinning forever
    if kind == "catch_soft":
        try:
            while time.monotonic() < deadline:
                time.sleep(0.01)
        except SoftTimeLimitExceeded:
            return "caught soft"
        return "soft limit never came"
    while time.monotonic() < deadline:  # "spin": ignores nothing, catches nothing
        time.sleep(0.01)
    return "finished spinning"


# -- harness --------------------------------------------------------------------------------------------

class Harness:
    """A started pool plus every event it reported so far."""

    def __init__(self, **options: Any) -> None:
        self.seen: list[PoolEvent] = []
        options.setdefault("handler_factory", make_handler)
        self.pool = Pool(options.pop("concurrency", 1), **options)
        self.pool.start()


def wait_for_events(h: Harness, predicate: Callable[[list[PoolEvent]], bool],
                    timeout: float = 10.0) -> list[PoolEvent]:
    """Poll the pool until ``predicate(all events so far)`` holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        h.seen += h.pool.events()
        if predicate(h.seen):
            return h.seen
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"timed out waiting; events so far: {h.seen}")
        h.pool.poll(remaining)


def ended(*job_ids: Any) -> Callable[[list[PoolEvent]], bool]:
    wanted = set(job_ids)
    return lambda events: wanted <= {e.job_id for e in events if isinstance(e, (JobDone, JobLost))}


def started(job_id: Any) -> Callable[[list[PoolEvent]], bool]:
    return lambda events: any(isinstance(e, JobStarted) and e.job_id == job_id for e in events)


def outcome(events: list[PoolEvent], job_id: Any) -> JobDone | JobLost:
    (found,) = [e for e in events if isinstance(e, (JobDone, JobLost)) and e.job_id == job_id]
    return found


def run_one(h: Harness, job_id: Any, payload: Any, **limits: float) -> JobDone | JobLost:
    wait_for_events(h, lambda _: h.pool.idle_count() > 0)
    h.pool.submit(job_id, payload, **limits)
    return outcome(wait_for_events(h, ended(job_id)), job_id)


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.fixture
def harness() -> Iterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def make(**options: Any) -> Harness:
        made.append(Harness(**options))
        return made[-1]

    yield make
    for h in made:
        h.pool.stop(cold=True)


# -- tests ----------------------------------------------------------------------------------------------

def test_children_are_separate_named_processes_that_run_jobs_concurrently(harness):
    h = harness(concurrency=2)
    assert sorted(h.pool.children().values()) == ["ForkPoolWorker-1", "ForkPoolWorker-2"]
    for pid in h.pool.pids():
        with open(f"/proc/{pid}/stat") as stat:
            assert int(stat.read().rsplit(")", 1)[1].split()[1]) == os.getpid()  # ppid: we are the parent
    assert h.pool.idle_count() == 2
    assert h.pool.submit("a", ("span", 0.4), report_start=True) is True  # taken at once
    assert h.pool.submit("b", ("span", 0.4), report_start=True) is True
    assert h.pool.idle_count() == 0 and set(h.pool.active()) == {"a", "b"}
    pids = set(h.pool.active().values())
    events = wait_for_events(h, ended("a", "b"))
    a, b = outcome(events, "a").result, outcome(events, "b").result
    assert {a[2], b[2]} == pids and len(pids) == 2
    assert a[0] < b[1] and b[0] < a[1], "the two jobs did not overlap in time"
    assert [e.job_id for e in events if isinstance(e, JobStarted)].count("a") == 1
    assert h.pool.active() == {} and h.pool.idle_count() == 2


def test_results_come_back_and_the_handler_is_built_once_per_child(harness):
    h = harness()
    assert [run_one(h, n, ("double", n)).result for n in range(3)] == [0, 2, 4]
    done = run_one(h, "who", ("whoami", None))
    assert isinstance(done, JobDone) and done.runtime >= 0
    assert done.result == (h.pool.pids()[0], "ForkPoolWorker-1", 1)


def test_an_exception_in_the_handler_is_a_result_and_the_child_survives(harness):
    h = harness()
    failed = run_one(h, "boom", ("raise", "bad thing"))
    assert isinstance(failed, JobDone) and isinstance(failed.result, HandlerError)
    assert failed.result.exc_type == "ValueError"
    assert failed.result.exc_repr == "ValueError('bad thing')"
    assert "ValueError: bad thing" in failed.result.traceback
    unpicklable = run_one(h, "lambda", ("unpicklable", None))
    assert isinstance(unpicklable.result, HandlerError)
    assert run_one(h, "after", ("whoami", None)).pid == failed.pid == unpicklable.pid


@pytest.mark.parametrize(("payload", "reason"), [
    (("sigkill", None), "signal 9 (SIGKILL)"),
    (("exit", 1), "exitcode 1"),
])
def test_a_child_dying_mid_job_loses_the_job_and_is_replaced(harness, payload, reason):
    h = harness(concurrency=2)
    names = h.pool.children()
    lost = run_one(h, "doomed", payload)
    assert isinstance(lost, JobLost) and isinstance(lost.error, WorkerLostError)
    assert str(lost.error) == f"Worker exited prematurely: {reason} Job: 0."
    exits = [e for e in h.seen if isinstance(e, ChildExited)]
    assert exits == [ChildExited(lost.pid, names[lost.pid], reason)]
    wait_for_events(h, lambda _: len(h.pool.pids()) == 2)
    assert gone(lost.pid)
    assert sorted(h.pool.children().values()) == sorted(
        [n for p, n in names.items() if p != lost.pid] + ["ForkPoolWorker-3"])
    assert run_one(h, "next", ("double", 4)).result == 8


def test_the_hard_time_limit_kills_the_child_and_replaces_it(harness):
    h = harness()
    began = time.monotonic()
    lost = run_one(h, "hard", ("spin", 20), time_limit=0.5)
    assert time.monotonic() - began >= 0.5
    assert isinstance(lost, JobLost) and isinstance(lost.error, TimeLimitExceeded)
    assert str(lost.error) == "TimeLimitExceeded(0.5,)"
    wait_for_events(h, lambda events: any(isinstance(e, ChildExited) for e in events))
    assert [e.reason for e in h.seen if isinstance(e, ChildExited)] == ["signal 9 (SIGKILL)"]
    assert run_one(h, "next", ("whoami", None)).result[1] == "ForkPoolWorker-2"


def test_the_soft_time_limit_raises_inside_the_job_which_may_catch_it(harness):
    h = harness()
    done = run_one(h, "soft", ("catch_soft", 20), soft_time_limit=0.3, time_limit=15)
    assert isinstance(done, JobDone) and done.result == "caught soft"
    soft = [e for e in h.seen if isinstance(e, SoftLimitExceeded)]
    assert soft == [SoftLimitExceeded("soft", done.pid, 0.3)]
    assert run_one(h, "again", ("whoami", None)).pid == done.pid  # the child lives on


def test_an_uncaught_soft_time_limit_fails_the_job_not_the_child(harness):
    h = harness()
    done = run_one(h, "soft", ("spin", 20), soft_time_limit=0.2)
    assert isinstance(done.result, HandlerError) and done.result.exc_type == "SoftTimeLimitExceeded"
    assert not any(isinstance(e, ChildExited) for e in h.seen)


def test_max_tasks_per_child_recycles_children(harness):
    h = harness(max_tasks_per_child=2)
    ran = [run_one(h, n, ("whoami", None)).result for n in range(6)]
    pids = [pid for pid, _, _ in ran]
    assert pids[0] == pids[1] != pids[2] == pids[3] != pids[4] == pids[5] != pids[0]
    assert [name[-1] for _, name, _ in ran] == ["1", "1", "2", "2", "3", "3"]
    assert not any(isinstance(e, (ChildExited, JobLost)) for e in h.seen)  # recycling is not an error
    wait_for_events(h, lambda _: list(h.pool.children().values()) == ["ForkPoolWorker-4"])
    assert all(gone(pid) for pid in set(pids))


def test_the_spawn_start_method_builds_the_handler_in_the_child(harness):
    h = harness(handler_factory=functools.partial(make_tagged_handler, "spawned"), start_method="spawn")
    done = run_one(h, "s", ("double", 21), time_limit=30)
    assert done.result == ("spawned", 42, 1, "ForkPoolWorker-1")


def test_children_ignore_sigint_and_exit_on_sigterm(harness):
    h = harness()
    (pid,) = h.pool.pids()
    os.kill(pid, signal.SIGINT)  # at once: the child may not even have set up its handlers yet
    survived = run_one(h, "after-int", ("whoami", None))
    assert isinstance(survived, JobDone) and survived.pid == pid
    os.kill(pid, signal.SIGTERM)
    wait_for_events(h, lambda events: any(isinstance(e, ChildExited) for e in events))
    assert [e for e in h.seen if isinstance(e, ChildExited)] == [ChildExited(pid, "ForkPoolWorker-1",
                                                                             "signal 15 (SIGTERM)")]
    assert run_one(h, "after-term", ("whoami", None)).result[1] == "ForkPoolWorker-2"


def test_submit_refuses_what_it_cannot_run(harness):
    h = harness(concurrency=2)
    with pytest.raises(TypeError):
        h.pool.submit("bad", threading.Lock())  # not picklable: nothing changes
    assert h.pool.idle_count() == 2 and h.pool.active() == {}
    h.pool.submit("a", ("span", 0.3))
    with pytest.raises(ValueError, match="already running"):
        h.pool.submit("a", ("double", 1))
    h.pool.submit("b", ("span", 0.3))
    with pytest.raises(RuntimeError, match="no idle child"):
        h.pool.submit("c", ("double", 1))
    wait_for_events(h, ended("a", "b"))
    h.pool.stop()
    assert h.pool.idle_count() == 0
    with pytest.raises(RuntimeError):
        h.pool.submit("d", ("double", 1))


def test_a_warm_stop_waits_for_the_running_job(harness):
    h = harness(concurrency=2)
    pids = h.pool.pids()
    h.pool.submit("slow", ("span", 0.5), report_start=True)
    wait_for_events(h, started("slow"))
    h.pool.stop()
    done = outcome(wait_for_events(h, ended("slow")), "slow")
    assert isinstance(done, JobDone) and done.runtime >= 0.45
    assert all(gone(pid) for pid in pids) and h.pool.pids() == []
    assert h.pool.poll(None) is False  # a stopped pool never waits


def test_a_cold_stop_terminates_running_jobs_and_leaves_no_process(harness):
    h = harness(concurrency=2)
    pids = h.pool.pids()
    h.pool.submit("forever", ("spin", 30), report_start=True)
    wait_for_events(h, started("forever"))
    began = time.monotonic()
    h.pool.stop(cold=True)
    assert time.monotonic() - began < 3
    lost = outcome(h.pool.events(), "forever")
    assert isinstance(lost, JobLost) and isinstance(lost.error, Terminated)
    assert all(gone(pid) for pid in pids) and h.pool.pids() == []


def test_a_warm_stop_that_times_out_goes_cold(harness):
    h = harness()
    h.pool.submit("forever", ("spin", 30), report_start=True)
    wait_for_events(h, started("forever"))
    h.pool.stop(timeout=0.3)
    lost = outcome(h.pool.events(), "forever")
    assert isinstance(lost.error, Terminated)
    assert h.pool.pids() == []


def test_poll_also_wakes_for_the_watched_descriptor(harness):
    h = harness()
    read_end, write_end = os.pipe()
    try:
        h.pool.watch(read_end)
        assert h.pool.poll(0) is False
        os.write(write_end, b"x")
        assert h.pool.poll(10) is True  # returns at once: the descriptor is readable
        h.pool.watch(None)
        assert h.pool.poll(0) is False  # no longer watched, though still readable
        h.pool.watch(read_end)
        assert h.pool.poll(0) is True
        assert run_one(h, "n", ("double", 1)).result == 2  # children are still served beside it
    finally:
        os.close(read_end)
        os.close(write_end)


def test_a_closed_watched_descriptor_whose_number_is_reused_does_not_break_the_pool(harness):
    h = harness(concurrency=2)
    read_end, write_end = os.pipe()
    h.pool.watch(read_end)
    os.close(read_end)  # as pika closes a broken socket before the worker hears of it
    os.close(write_end)
    (pid, _) = h.pool.pids()
    os.kill(pid, signal.SIGKILL)  # its replacement's pipe may well get the closed descriptor's number
    wait_for_events(h, lambda _: len(h.pool.pids()) == 2 and pid not in h.pool.pids())
    assert run_one(h, "a", ("double", 2)).result == 4
    h.pool.watch(None)
    assert run_one(h, "b", ("double", 3)).result == 6


def test_only_the_fork_and_spawn_start_methods_are_accepted():
    with pytest.raises(ValueError, match="forkserver"):
        Pool(1, make_handler, start_method="forkserver")


ORPHAN_SCRIPT = """
import functools, operator, os, signal, sys
from minicelery.worker.pool import Pool
pool = Pool(2, functools.partial(operator.itemgetter, 0))
pool.start()
print(*pool.pids(), flush=True)
os.kill(os.getpid(), signal.SIGKILL)  # die without any chance to stop the pool
"""


# Runs ORPHAN_SCRIPT as its child after becoming the "subreaper" of its descendants
# (PR_SET_CHILD_SUBREAPER), so that the pool children the script leaves behind are reparented to it and
# waited for here, instead of to this container's init, which may never reap them (zombies).
SUBREAPER = """
import ctypes, json, os, subprocess, sys, time
assert ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
script = subprocess.Popen([sys.executable, "-c", sys.argv[1]], stdout=subprocess.PIPE, text=True)
pids = [int(pid) for pid in script.stdout.readline().split()]
code = script.wait(30)
exited, deadline = {}, time.monotonic() + 10
while len(exited) < len(pids) and time.monotonic() < deadline:
    pid, status = os.waitpid(-1, os.WNOHANG)
    if pid:
        exited[pid] = os.waitstatus_to_exitcode(status)
    else:
        time.sleep(0.01)  # polling interval of a wait with a deadline
for pid in set(pids) - set(exited):  # still running after 10 s: the test fails; leave nothing behind
    os.kill(pid, 9)
    os.waitpid(pid, 0)
print(json.dumps({"script": code, "children": pids, "exited": list(exited)}))
"""


def test_children_exit_when_the_main_process_dies():
    done = subprocess.run([sys.executable, "-c", SUBREAPER, ORPHAN_SCRIPT], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["script"] == -signal.SIGKILL and len(report["children"]) == 2, report
    assert sorted(report["exited"]) == sorted(report["children"]), f"orphaned children still ran: {report}"


def test_a_start_is_reported_only_when_asked_or_timed(harness):
    h = harness(concurrency=1)
    h.pool.submit("quiet", ("span", 0.01))
    events = wait_for_events(h, ended("quiet"))
    assert not any(isinstance(e, JobStarted) for e in events)
    h.pool.submit("timed", ("span", 0.01), time_limit=30)
    assert any(isinstance(e, JobStarted) for e in wait_for_events(h, ended("timed")))


# -- the one-job queue behind a busy child ----------------------------------------------------------------

def kinds(events: list[PoolEvent], job_id: Any) -> list[str]:
    return [type(e).__name__ for e in events if getattr(e, "job_id", None) == job_id]


def test_a_queued_job_runs_next_in_the_same_child_and_is_accepted_when_it_starts(harness):
    h = harness(concurrency=1)
    assert h.pool.submit("first", ("span", 0.3)) is True
    assert h.pool.can_take(Pickled.of(("whoami", None)))
    assert h.pool.submit("second", ("whoami", None), queue=True) is False  # waits in the child's queue
    assert h.pool.active() == {"first": h.pool.pids()[0], "second": h.pool.pids()[0]}
    assert not h.pool.can_take(Pickled.of(("whoami", None)))  # one queued job per child
    with pytest.raises(RuntimeError):
        h.pool.submit("third", ("whoami", None), queue=True)
    events = wait_for_events(h, ended("first", "second"))
    order = [(type(e).__name__, e.job_id) for e in events if isinstance(e, (JobDone, JobAccepted))]
    assert order == [("JobDone", "first"), ("JobAccepted", "second"), ("JobDone", "second")]
    assert outcome(events, "second").result[0] == outcome(events, "first").pid


def test_a_job_queued_behind_a_long_one_is_stolen_back_for_an_idle_child(harness):
    h = harness(concurrency=2)
    h.pool.submit("long", ("span", 5), report_start=True)
    h.pool.submit("short", ("span", 0.05))
    assert h.pool.submit("waiting", ("whoami", None), queue=True) is False
    long_pid = h.pool.active()["long"]
    assert h.pool.active()["waiting"] == long_pid  # queued behind the long job, the only one that can take it
    wait_for_events(h, ended("short"))
    assert h.pool.idle_count() == 1
    assert h.pool.recall(1) == 1  # what the worker does when a child is idle and nothing else waits
    events = wait_for_events(h, lambda events: "JobReturned" in kinds(events, "waiting"))
    assert kinds(events, "waiting") == ["JobReturned"] and "waiting" not in h.pool.active()
    h.pool.submit("waiting", ("whoami", None))  # the caller submits it again: the idle child takes it
    done = outcome(wait_for_events(h, ended("waiting")), "waiting")
    assert done.result[0] != long_pid and "long" in h.pool.active()  # it did not wait for the long job


def test_a_child_that_dies_returns_its_queued_job_unrun(harness):
    h = harness(concurrency=1)
    h.pool.submit("doomed", ("span", 0.2), report_start=True)
    h.pool.submit("behind", ("whoami", None), queue=True)
    (pid,) = h.pool.pids()
    wait_for_events(h, started("doomed"))
    os.kill(pid, signal.SIGKILL)
    events = wait_for_events(h, lambda events: ended("doomed")(events) and bool(kinds(events, "behind")))
    assert isinstance(outcome(events, "doomed").error, WorkerLostError)
    assert kinds(events, "behind") == ["JobReturned"]  # it never ran: the caller may run it elsewhere
    assert h.pool.active() == {}


def test_stopping_returns_queued_jobs_and_ends_running_ones(harness):
    for cold in (False, True):
        h = harness(concurrency=1)
        h.pool.submit("running", ("span", 0.3), report_start=True)
        h.pool.submit("queued", ("whoami", None), queue=True)
        wait_for_events(h, started("running"))
        h.pool.stop(cold=cold)
        events = h.seen + h.pool.events()
        assert kinds(events, "queued") == ["JobReturned"]
        assert isinstance(outcome(events, "running"), JobLost if cold else JobDone)


def test_a_payload_too_big_for_the_queue_waits_for_an_idle_child(harness):
    h = harness(concurrency=1)
    h.pool.submit("busy", ("span", 0.2))
    big = Pickled.of(("double", b"x" * QUEUE_LIMIT))
    assert not h.pool.can_take(big)
    with pytest.raises(RuntimeError, match="no idle child"):
        h.pool.submit("big", big, queue=True)
    assert h.pool.can_take(Pickled.of(("double", b"x" * (QUEUE_LIMIT - 100))))
    assert not h.pool.can_take(("double", 1))  # not pickled yet: its size is unknown
    wait_for_events(h, ended("busy"))
    assert h.pool.can_take(big)
    assert run_one(h, "big", big).result == b"x" * QUEUE_LIMIT * 2


def test_a_queued_jobs_time_limit_counts_from_its_own_start(harness):
    h = harness(concurrency=1)
    h.pool.submit("first", ("span", 0.6))
    h.pool.submit("limited", ("spin", 20), time_limit=0.4, queue=True)
    events = wait_for_events(h, ended("first", "limited"))
    first, limited = outcome(events, "first"), outcome(events, "limited")
    assert isinstance(first, JobDone)  # the limit did not count while the first job ran
    assert isinstance(limited, JobLost) and isinstance(limited.error, TimeLimitExceeded)
    assert kinds(events, "limited") == ["JobAccepted", "JobStarted", "JobLost"]


def test_many_short_jobs_through_the_queues_each_end_once(harness):
    """Children that finish before their next job is queued, steals racing a child taking its job: every
    path of the queue, driven the way the worker drives it, with jobs too short to hide a race."""
    h = harness(concurrency=2)
    waiting = list(range(3000))
    results: dict[int, int] = {}
    deadline = time.monotonic() + 60
    while len(results) < 3000:
        assert time.monotonic() < deadline, f"stuck after {len(results)} results: {h.pool.active()}"
        h.pool.poll(1.0)
        for event in h.pool.events():
            if isinstance(event, JobDone):
                assert event.job_id not in results, f"job {event.job_id} ended twice"
                results[event.job_id] = event.result
            elif isinstance(event, JobReturned):
                waiting.insert(0, event.job_id)
            else:
                assert isinstance(event, JobAccepted), event
        while waiting and h.pool.can_take(payload := Pickled.of(("double", waiting[0]))):
            h.pool.submit(waiting.pop(0), payload, queue=True)
        if h.pool.idle_count() and not waiting:
            h.pool.recall(h.pool.idle_count())
    assert results == {n: 2 * n for n in range(3000)}
