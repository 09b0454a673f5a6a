"""A real worker survives what goes wrong in its children: time limits, a child that exits or is killed,
and it recycles and starts children as told (``--max-tasks-per-child``, ``-c``, ``--start-method``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import wtasks
from worker_support import child_pids, count_runs, wait_queue_settled

from minicelery import states
from minicelery.exceptions import TimeLimitExceeded, WorkerLostError

pytest_plugins = ("worker_support",)  # start_worker, shared_worker, client_app, counter_file
pytestmark = pytest.mark.broker

TIMEOUT = 15


def _send(task, worker, args=(), kwargs=None, **options):
    return task.apply_async(args, kwargs or {}, queue=worker.queue, **options)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


# -- time limits -----------------------------------------------------------------------------------------

def test_soft_time_limit_is_raised_inside_the_task(start_worker, client_app):
    worker = start_worker()
    result = _send(wtasks.soft_limit, worker)
    assert result.get(timeout=TIMEOUT) == "caught soft"
    worker.wait_for_line(
        rf"WARNING/MainProcess\] Soft time limit \(1(\.0)?s\) exceeded for wtasks\.soft_limit\[{result.id}\]")
    worker.wait_for_line(rf"Task wtasks\.soft_limit\[{result.id}\] succeeded in 1\.\d+s: 'caught soft'")


def test_hard_time_limit_kills_and_replaces_the_child(start_worker, client_app):
    worker = start_worker(concurrency=1)
    before = _send(wtasks.getpid, worker).get(timeout=TIMEOUT)
    assert worker.children() == [before]
    result = _send(wtasks.hard_limit, worker)
    with pytest.raises(TimeLimitExceeded) as info:
        result.get(timeout=TIMEOUT)
    assert info.value.args == (1,)
    assert result.state == states.FAILURE
    worker.wait_for_line(rf"ERROR/MainProcess\] Hard time limit \(1(\.0)?s\) exceeded for "
                         rf"wtasks\.hard_limit\[{result.id}\]")
    worker.wait_for_line(r"Task handler raised error: TimeLimitExceeded\(1(\.0)?\)")
    after = _send(wtasks.getpid, worker).get(timeout=TIMEOUT)
    assert after != before and not _alive(before)
    assert worker.children() == [after]
    wait_queue_settled(worker.queue)  # acked early: nothing goes back to the queue


# -- a child that dies -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("task", "status"), [
    (wtasks.exit_child, "exitcode 1"),
    (wtasks.kill_self, r"signal 9 \(SIGKILL\)"),
], ids=["os._exit(1)", "SIGKILL"])
def test_child_death_fails_the_task_with_worker_lost_error(start_worker, client_app, task, status):
    worker = start_worker(concurrency=1)
    before = _send(wtasks.getpid, worker).get(timeout=TIMEOUT)
    result = _send(task, worker)
    with pytest.raises(WorkerLostError) as info:
        result.get(timeout=TIMEOUT)
    assert type(info.value) is WorkerLostError
    assert _fullmatch(rf"Worker exited prematurely: {status} Job: \d+\.", str(info.value))
    assert result.state == states.FAILURE
    worker.wait_for_line(rf"ERROR/MainProcess\] Process 'ForkPoolWorker-1' pid:{before} exited with '{status}'")
    worker.wait_for_line(r"ERROR/MainProcess\] Task handler raised error: WorkerLostError\('Worker exited "
                         rf"prematurely: {status} Job: \d+\.'\)")
    # The worker keeps serving, from a new child.
    assert _send(wtasks.add, worker, (2, 2)).get(timeout=TIMEOUT) == 4
    after = _send(wtasks.getpid, worker).get(timeout=TIMEOUT)
    assert after != before and worker.children() == [after]
    wait_queue_settled(worker.queue)


def test_the_task_queued_behind_a_dying_one_runs_in_the_replacement_child(start_worker, client_app, tmp_path):
    worker = start_worker(concurrency=1)
    (dying_child,) = worker.children()
    gate = tmp_path / "gate"
    doomed = _send(wtasks.kill_at_gate, worker, (str(gate),))
    behind = _send(wtasks.getpid, worker)
    worker.wait_for_line(rf"Task wtasks\.getpid\[{behind.id}\] received")  # queued behind the doomed one
    gate.touch()
    with pytest.raises(WorkerLostError, match=r"signal 9 \(SIGKILL\)"):
        doomed.get(timeout=TIMEOUT)
    ran_in = behind.get(timeout=TIMEOUT)  # it never ran in the dead child: it was taken back, not lost
    assert ran_in != dying_child and worker.children() == [ran_in]
    assert len(worker.find(rf"Task wtasks\.getpid\[{behind.id}\] succeeded")) == 1
    wait_queue_settled(worker.queue)


def test_reject_on_worker_lost_requeues_the_message(start_worker, client_app, counter_file):
    # kill_first_delivery has acks_late=True, reject_on_worker_lost=True: its child dies on the first
    # delivery, the message goes back to the queue, and the redelivered message succeeds.
    worker = start_worker(concurrency=1)
    result = _send(wtasks.kill_first_delivery, worker, (counter_file,))
    assert result.get(timeout=TIMEOUT) == "survived redelivery"
    assert Path(counter_file).read_text().splitlines() == ["redelivered=False", "redelivered=True"]
    assert len(worker.find(rf"Task wtasks\.kill_first_delivery\[{result.id}\] received")) == 2
    worker.wait_for_line(r"exited with 'signal 9 \(SIGKILL\)'")
    wait_queue_settled(worker.queue)  # acked after the second run


def test_acks_late_without_reject_on_worker_lost_fails_and_is_not_requeued(start_worker, client_app,
                                                                           counter_file):
    worker = start_worker(concurrency=1)
    result = _send(wtasks.kill_late, worker, (counter_file,))
    with pytest.raises(WorkerLostError, match=r"signal 9 \(SIGKILL\)"):
        result.get(timeout=TIMEOUT)
    assert _send(wtasks.add, worker, (1, 2)).get(timeout=TIMEOUT) == 3
    assert count_runs(counter_file) == 1
    assert len(worker.find(rf"Task wtasks\.kill_late\[{result.id}\] received")) == 1
    wait_queue_settled(worker.queue)


# -- the pool's shape ------------------------------------------------------------------------------------

def test_max_tasks_per_child_recycles_children(start_worker, client_app):
    worker = start_worker(concurrency=1, extra_args=("--max-tasks-per-child", "2"))
    pids = [_send(wtasks.getpid, worker).get(timeout=TIMEOUT) for _ in range(6)]
    a, b, c = pids[0], pids[2], pids[4]
    assert pids == [a, a, b, b, c, c], pids
    assert len({a, b, c}) == 3


def test_concurrency_two_starts_two_children(start_worker, client_app):
    worker = start_worker(concurrency=2)
    children = worker.children()
    assert len(children) == 2, children
    for pid in children:
        assert Path(f"/proc/{pid}/comm").exists()
    # Two sleeping tasks run at the same time, one in each child.
    results = [_send(wtasks.sleepy, worker, (0.5,)) for _ in range(2)]
    pids = {_send(wtasks.getpid, worker).get(timeout=TIMEOUT) for _ in range(4)}
    assert [r.get(timeout=TIMEOUT) for r in results] == [0.5, 0.5]
    assert pids <= set(children)
    assert len(worker.find(r"Task wtasks\.sleepy\[.*\] succeeded")) == 2
    assert worker.children() == children  # nobody died


def test_spawn_start_method(start_worker, client_app):
    worker = start_worker(concurrency=1, extra_args=("--start-method", "spawn"))
    assert _send(wtasks.add, worker, (40, 2)).get(timeout=TIMEOUT) == 42
    pid = _send(wtasks.getpid, worker).get(timeout=TIMEOUT)
    assert pid in child_pids(worker.pid)
    # A spawned child is a fresh interpreter started by multiprocessing, not a fork of the worker.
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert any(b"spawn_main" in part for part in cmdline) or b"--multiprocessing-fork" in cmdline, cmdline
    with pytest.raises(ValueError, match="boom"):
        _send(wtasks.fail, worker).get(timeout=TIMEOUT)
    assert os.getpid() != pid


def _fullmatch(pattern: str, text: str) -> bool:
    import re

    return re.fullmatch(pattern, text) is not None
