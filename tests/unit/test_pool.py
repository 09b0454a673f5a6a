"""The prefork pool with real child processes: results, child death, time limits, recycling, shutdown.

Tests synchronise on the pool's own events (``wait_for_events`` blocks in ``Pool.poll``, as the worker
does) or on ``Pool.fileno()``; sleeps appear only inside job bodies (and forked grandchildren), to
simulate work.
"""

from __future__ import annotations

import functools
import json
import multiprocessing
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from minicelery.exceptions import SoftTimeLimitExceeded, Terminated, TimeLimitExceeded, WorkerLostError
from minicelery.worker.events import ChildExited, JobDone, JobLost, JobStarted, PoolEvent, SoftLimitExceeded
from minicelery.worker.pool import EXIT_GRACE, HandlerError, Pool

FACTORY_CALLS = 0

#: How long a grandchild forked by a job lives unless killed: far longer than any wait in these tests.
GRANDCHILD_LIFETIME = 60.0


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
    if kind == "fork_then":
        return fork_then(*arg)
    return run_long_job(kind, arg)


def fork_then(path: str, then: str) -> int:
    """Fork a grandchild that outlives the job, write its pid to ``path``, then exit, die of SIGKILL or
    return the pid, as ``then`` says. The grandchild holds every descriptor the child has: its pipe to the
    pool and its multiprocessing sentinel among them."""
    grandchild = os.fork()
    if grandchild == 0:
        try:
            time.sleep(GRANDCHILD_LIFETIME)
        finally:
            os._exit(0)  # never return into the child's job loop
    with open(path, "w") as file:
        file.write(str(grandchild))
    if then == "exit":
        os._exit(1)
    if then == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    return grandchild


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


@pytest.fixture
def grandchildren() -> Iterator[list[int]]:
    """Pids of processes forked by jobs; killed at teardown (their own lifetime bounds any leak)."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


# -- tests ----------------------------------------------------------------------------------------------

def test_children_are_separate_named_processes_that_run_jobs_concurrently(harness):
    h = harness(concurrency=2)
    assert sorted(h.pool.children().values()) == ["ForkPoolWorker-1", "ForkPoolWorker-2"]
    for pid in h.pool.pids():
        with open(f"/proc/{pid}/stat") as stat:
            assert int(stat.read().rsplit(")", 1)[1].split()[1]) == os.getpid()  # ppid: we are the parent
    assert h.pool.idle_count() == 2
    h.pool.submit("a", ("span", 0.4), report_start=True)
    h.pool.submit("b", ("span", 0.4), report_start=True)
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
    assert h.pool.poll(None) is None  # a stopped pool never waits (this would hang otherwise)


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


def test_a_large_payload_and_result_travel_through_the_pipe(harness):
    h = harness(concurrency=1)
    big = b"x" * (4 << 20)  # far beyond a pipe's buffer: both sides must read while the other writes
    assert run_one(h, "big", ("double", big)).result == big * 2


def test_many_short_jobs_each_end_once(harness):
    """Jobs too short to hide a race, submitted the way the worker does: only while a child is idle."""
    h = harness(concurrency=2)
    waiting = list(range(3000))
    results: dict[int, int] = {}
    deadline = time.monotonic() + 60
    while len(results) < 3000:
        assert time.monotonic() < deadline, f"stuck after {len(results)} results: {h.pool.active()}"
        while waiting and h.pool.idle_count():
            h.pool.submit(waiting[0], ("double", waiting.pop(0)))
        h.pool.poll(1.0)
        for event in h.pool.events():
            assert isinstance(event, JobDone), event
            assert event.job_id not in results, f"job {event.job_id} ended twice"
            results[event.job_id] = event.result
    assert results == {n: 2 * n for n in range(3000)}


def test_submit_without_an_idle_child_raises_and_leaves_the_pool_usable(harness):
    h = harness(concurrency=1)
    (pid,) = h.pool.pids()
    h.pool.submit("busy", ("span", 0.3))
    assert h.pool.idle_count() == 0
    with pytest.raises(RuntimeError, match="no idle child"):
        h.pool.submit("refused", ("double", 3))
    assert h.pool.active() == {"busy": pid}  # the refused job was not given out, not even reserved
    events = wait_for_events(h, ended("busy"))
    assert isinstance(outcome(events, "busy"), JobDone)
    assert "refused" not in {getattr(e, "job_id", None) for e in events}
    assert run_one(h, "refused", ("double", 3)).result == 6  # its id is free; the same child runs it
    assert h.pool.pids() == [pid] and h.pool.idle_count() == 1


def test_fileno_turns_readable_when_a_child_has_something_to_report(harness):
    h = harness(concurrency=2)
    fd = h.pool.fileno()
    assert select.select([fd], [], [], 0)[0] == []  # idle children: nothing to read
    h.pool.submit("job", ("span", 0.1))
    assert select.select([fd], [], [], 10)[0] == [fd], "no wake-up when the child finished its job"
    h.pool.poll(0)
    (done,) = h.pool.events()
    assert isinstance(done, JobDone) and done.job_id == "job"
    assert select.select([fd], [], [], 0)[0] == []  # everything was read: quiet again
    pid = done.pid
    os.kill(pid, signal.SIGKILL)
    assert select.select([fd], [], [], 10)[0] == [fd], "no wake-up when a child died"
    wait_for_events(h, lambda events: any(isinstance(e, ChildExited) for e in events))
    assert pid not in h.pool.pids() and len(h.pool.pids()) == 2


@pytest.mark.parametrize(("then", "reason"), [("exit", "exitcode 1"), ("sigkill", "signal 9 (SIGKILL)")])
def test_a_child_that_dies_after_forking_is_reported_lost_while_the_grandchild_lives_on(
        harness, grandchildren, tmp_path, then, reason):
    h = harness(concurrency=1)
    (pid,) = h.pool.pids()
    path = tmp_path / "grandchild"
    h.pool.submit("forks", ("fork_then", (str(path), then)))
    # A few seconds, far less than the grandchild's lifetime: the loss must not wait for it to exit.
    events = wait_for_events(h, ended("forks"), timeout=5)
    grandchildren.append(int(path.read_text()))  # written before the child died
    lost = outcome(events, "forks")
    assert isinstance(lost, JobLost) and isinstance(lost.error, WorkerLostError)
    assert str(lost.error) == f"Worker exited prematurely: {reason} Job: 0."
    assert not gone(grandchildren[0]), "the grandchild, holding the child's pipe, was still running"
    assert [e for e in events if isinstance(e, ChildExited)] == [ChildExited(pid, "ForkPoolWorker-1", reason)]
    assert gone(pid)  # reaped
    done = run_one(h, "next", ("whoami", None))
    assert done.result[1] == "ForkPoolWorker-2" and done.pid != pid


def test_a_warm_stop_does_not_wait_for_a_grandchild_that_a_job_left_running(harness, grandchildren, tmp_path):
    h = harness(concurrency=2)
    pids = h.pool.pids()
    path = tmp_path / "grandchild"
    done = run_one(h, "forks", ("fork_then", (str(path), "return")))
    grandchildren.append(int(path.read_text()))
    assert done.result == grandchildren[0]
    began = time.monotonic()
    h.pool.stop()
    # Asked to exit, each child does so at once; waiting on the grandchild (or on EXIT_GRACE and a
    # SIGKILL, if the exit went unnoticed) would take far longer.
    assert time.monotonic() - began < EXIT_GRACE
    assert all(gone(pid) for pid in pids) and h.pool.pids() == []
    assert not gone(grandchildren[0])  # still running: the stop did not wait for it
    assert not any(isinstance(e, (ChildExited, JobLost)) for e in h.seen + h.pool.events())
