"""A real worker process runs tasks and sends their results: values, failures, the request, retries,
countdown/ETA, expiry, ``track_started`` and ``ignore_result``.

Each test talks to ``python -m minicelery -A wtasks worker`` subprocesses on fresh queues (see
``worker_support``); nothing sleeps to synchronise: tests wait on results, log lines or states.
"""

from __future__ import annotations

import re
import socket
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import wtasks
from worker_support import count_runs, wait_for_state, wait_queue_settled

from minicelery import states
from minicelery.exceptions import MaxRetriesExceededError, TaskRevokedError

pytest_plugins = ("worker_support",)  # start_worker, shared_worker, client_app, counter_file
pytestmark = pytest.mark.broker

TIMEOUT = 15


def _send(task, worker, args=(), kwargs=None, **options):
    return task.apply_async(args, kwargs or {}, queue=worker.queue, **options)


# -- results --------------------------------------------------------------------------------------------

def test_success_and_kwargs(shared_worker, client_app):
    result = _send(wtasks.add, shared_worker, (2, 3))
    assert result.get(timeout=TIMEOUT) == 5
    assert result.state == states.SUCCESS and result.successful() and result.traceback is None
    assert _send(wtasks.kw, shared_worker, (1,), {"b": 2, "c": [3, {"d": None}]}).get(timeout=TIMEOUT) \
        == {"a": 1, "b": 2, "c": [3, {"d": None}]}
    shared_worker.wait_for_line(
        rf"INFO/ForkPoolWorker-\d+\] Task wtasks\.add\[{result.id}\] succeeded in [0-9.e-]+s: 5$")
    assert shared_worker.find(rf"INFO/MainProcess\] Task wtasks\.add\[{result.id}\] received$")


def test_children_are_forked_before_the_broker_library_is_loaded(start_worker, client_app):
    worker = start_worker(concurrency=1)
    # In the child: the app and the task module are there, pika (and what it pulls in) never was.
    assert _send(wtasks.loaded, worker, ("wtasks", "minicelery.app", "pika", "ssl", "asyncio")).get(
        timeout=TIMEOUT) == ["minicelery.app", "wtasks"]


def test_failure_reraises_the_original_exception(shared_worker, client_app):
    result = _send(wtasks.fail, shared_worker, ("oops",))
    with pytest.raises(ValueError, match="^oops$") as info:
        result.get(timeout=TIMEOUT)
    assert type(info.value) is ValueError
    assert result.state == states.FAILURE and result.failed()
    assert result.traceback.rstrip().splitlines()[-1] == "ValueError: oops"
    assert "in fail" in result.traceback  # the task's own frame, from the child
    exc = result.get(propagate=False)  # the ready result is kept: asking again returns it
    assert type(exc) is ValueError and exc.args == ("oops",)
    shared_worker.wait_for_line(
        rf"ERROR/ForkPoolWorker-\d+\] Task wtasks\.fail\[{result.id}\] raised unexpected: "
        r"ValueError\('oops'\)")


def test_propagate_false_returns_the_exception(shared_worker, client_app):
    exc = _send(wtasks.fail, shared_worker, ("quiet",)).get(timeout=TIMEOUT, propagate=False)
    assert type(exc) is ValueError and str(exc) == "quiet"


def test_custom_exception_comes_back_as_the_same_class(shared_worker, client_app):
    result = _send(wtasks.custom_fail, shared_worker, ("custom", 42))
    with pytest.raises(wtasks.WtasksError) as info:
        result.get(timeout=TIMEOUT)
    assert type(info.value) is wtasks.WtasksError and info.value.args == ("custom", 42)
    assert result.traceback.rstrip().splitlines()[-1] == "wtasks.WtasksError: ('custom', 42)"


def test_outstanding_results_awaited_in_reverse_order(shared_worker, client_app):
    results = [_send(wtasks.add, shared_worker, (i, i)) for i in range(8)]
    slow = _send(wtasks.sleepy, shared_worker, (0.3,))
    assert slow.get(timeout=TIMEOUT) == 0.3
    assert [r.get(timeout=TIMEOUT) for r in reversed(results)] == [2 * i for i in reversed(range(8))]


def test_bound_task_sees_its_request(start_worker, client_app):
    worker = start_worker(hostname="wreq@%h")
    result = _send(wtasks.whoami, worker, (1, "two"), {"three": 3})
    request = result.get(timeout=TIMEOUT)
    assert request["id"] == result.id
    assert request["args"] == [1, "two"] and request["kwargs"] == {"three": 3}
    assert request["retries"] == 0
    assert request["delivery_info"]["exchange"] == ""
    assert request["delivery_info"]["routing_key"] == worker.queue
    assert request["delivery_info"]["redelivered"] is False
    assert request["hostname"] == f"wreq@{socket.gethostname()}"
    assert request["reply_to"] == client_app.reply_queue
    assert request["correlation_id"] == result.id
    assert request["root_id"] == result.id and request["parent_id"] is None
    assert request["called_directly"] is False and request["is_eager"] is False


# -- retries ---------------------------------------------------------------------------------------------
# Each retry test has its own worker: a child that sent a retry holds a connection of its own.

def test_retry_then_success(start_worker, client_app, counter_file):
    worker = start_worker()
    result = _send(wtasks.retry_once, worker, (counter_file, 1))
    seen = wait_for_state(result, states.SUCCESS, timeout=TIMEOUT)
    assert seen[-2:] == [states.RETRY, states.SUCCESS], seen
    assert result.get(timeout=TIMEOUT) == "done after 1 retries"
    assert count_runs(counter_file) == 2
    worker.wait_for_line(rf"Task wtasks\.retry_once\[{result.id}\] retry: Retry in 1s$")


def test_results_after_a_retry_still_reach_the_client(start_worker, client_app, counter_file):
    """The child that re-sent a task must not consume the client's reply queue: every later result
    must still come back to the client."""
    worker = start_worker()
    assert _send(wtasks.retry_once, worker, (counter_file, 0.2)).get(timeout=TIMEOUT) \
        == "done after 1 retries"
    results = [_send(wtasks.add, worker, (i, 1)) for i in range(10)]
    assert [r.get(timeout=5) for r in results] == [i + 1 for i in range(10)]


def test_max_retries_exceeded(start_worker, client_app):
    worker = start_worker()
    result = _send(wtasks.always_retry, worker, (7,))
    with pytest.raises(MaxRetriesExceededError) as info:
        result.get(timeout=TIMEOUT)
    assert str(info.value) == f"Can't retry wtasks.always_retry[{result.id}] args:(7,) kwargs:{{}}"
    assert result.state == states.FAILURE
    assert len(worker.find(rf"Task wtasks\.always_retry\[{result.id}\] retry: Retry in 0s$")) == 2


def test_retry_with_exc_fails_with_that_exception(start_worker, client_app):
    worker = start_worker()
    result = _send(wtasks.retry_with_exc, worker)
    with pytest.raises(KeyError) as info:
        result.get(timeout=TIMEOUT)
    assert type(info.value) is KeyError and info.value.args == ("k",)
    worker.wait_for_line(rf"Task wtasks\.retry_with_exc\[{result.id}\] retry: Retry in 0s: KeyError\('k'\)")


def test_autoretry_with_exponential_backoff(start_worker, client_app, counter_file):
    worker = start_worker()
    result = _send(wtasks.auto_retry, worker, (counter_file,))
    assert result.get(timeout=TIMEOUT) == "auto done"
    runs = [line.split() for line in Path(counter_file).read_text().splitlines()]
    assert [int(retries) for retries, _ in runs] == [0, 1, 2]
    times = [float(at) for _, at in runs]
    first, second = times[1] - times[0], times[2] - times[1]
    # retry_backoff=1, no jitter: countdowns of 1 s then 2 s.
    assert 0.9 <= first < 1.9 and 1.9 <= second < 3.5, (first, second)
    worker.wait_for_line(rf"Task wtasks\.auto_retry\[{result.id}\] retry: Retry in 1s: KeyError\('auto'\)")
    worker.wait_for_line(rf"Task wtasks\.auto_retry\[{result.id}\] retry: Retry in 2s: KeyError\('auto'\)")


def test_autoretry_exhausted_raises_the_original_exception(start_worker, client_app):
    worker = start_worker()
    with pytest.raises(KeyError, match="always"):
        _send(wtasks.auto_retry_exhausted, worker).get(timeout=TIMEOUT)


# -- countdown, ETA, expiry ------------------------------------------------------------------------------

def test_a_long_task_holds_up_no_task_another_child_could_run(start_worker, client_app, tmp_path):
    """Celery's ``-O fair``: while one child is held by a long task, every other task runs in the other
    child, including the one the worker queued behind the long task (it is stolen back)."""
    worker = start_worker(concurrency=2)
    gate = tmp_path / "gate"
    held = _send(wtasks.hold, worker, (str(gate),))
    shorts = [_send(wtasks.getpid, worker) for _ in range(6)]
    pids = {short.get(timeout=TIMEOUT) for short in shorts}  # all of them, with the gate still closed
    assert not held.ready() and not gate.exists()
    assert len(pids) == 1 and pids <= set(worker.children()), pids
    gate.touch()
    assert held.get(timeout=TIMEOUT) in set(worker.children()) - pids


def test_countdown_task_does_not_block_the_only_child_nor_the_prefetch_window(start_worker, client_app):
    # -c 1 with a prefetch window of 1: were the held message counted against it, or did it hold the child,
    # the immediate task could not run before the countdown ends.
    worker = start_worker(concurrency=1, extra_args=("--prefetch-multiplier", "1"))
    sent = time.time()
    held = _send(wtasks.stamp, worker, countdown=2)
    worker.wait_for_line(rf"Task wtasks\.stamp\[{held.id}\] received")
    immediate = _send(wtasks.stamp, worker)
    ran_immediate = immediate.get(timeout=1.5)
    assert not held.ready()
    ran_held = held.get(timeout=TIMEOUT)
    assert ran_immediate < ran_held
    assert ran_immediate - sent < 1.5
    assert ran_held >= sent + 2 - 0.05  # small slack: ETA is computed from the client's clock
    wait_queue_settled(worker.queue)


def test_eta_task_runs_after_its_time(start_worker, client_app):
    worker = start_worker(concurrency=1)
    eta = datetime.now(UTC) + timedelta(seconds=1.5)
    result = _send(wtasks.stamp, worker, eta=eta)
    assert result.get(timeout=TIMEOUT) >= eta.timestamp()


@pytest.mark.parametrize("expires", [-1, "datetime"], ids=["expires=-1", "expired-datetime"])
def test_expired_task_is_revoked_and_never_runs(shared_worker, client_app, counter_file, expires):
    if expires == "datetime":
        expires = datetime.now(UTC) - timedelta(seconds=30)
    result = _send(wtasks.counter, shared_worker, (counter_file,), expires=expires)
    with pytest.raises(TaskRevokedError, match="expired"):
        result.get(timeout=TIMEOUT)
    assert result.state == states.REVOKED
    shared_worker.wait_for_line(rf"INFO/MainProcess\] Discarding revoked task: wtasks\.counter\[{result.id}\]")
    # The worker is still serving, and by now it would have run the expired task if it ever did.
    assert _send(wtasks.add, shared_worker, (1, 1)).get(timeout=TIMEOUT) == 2
    assert count_runs(counter_file) == 0
    assert not shared_worker.find(rf"wtasks\.counter\[{result.id}\] succeeded")


def test_expiry_is_checked_again_when_the_eta_arrives(shared_worker, client_app, counter_file):
    result = _send(wtasks.counter, shared_worker, (counter_file,), countdown=1, expires=0.5)
    shared_worker.wait_for_line(rf"Task wtasks\.counter\[{result.id}\] received")
    assert result.state == states.PENDING  # held: not yet discarded
    with pytest.raises(TaskRevokedError, match="expired"):
        result.get(timeout=TIMEOUT)
    assert result.state == states.REVOKED
    shared_worker.wait_for_line(rf"Discarding revoked task: wtasks\.counter\[{result.id}\]")
    assert count_runs(counter_file) == 0


# -- track_started, ignore_result ------------------------------------------------------------------------

def test_track_started_reports_started_before_success(shared_worker, client_app):
    result = _send(wtasks.tracked, shared_worker, (1.0,))
    seen = wait_for_state(result, states.STARTED, timeout=TIMEOUT)
    assert seen[-1] == states.STARTED
    info = result.info  # the STARTED meta: the child's pid and the worker's node name
    assert info["hostname"] == shared_worker.hostname.replace("%h", socket.gethostname())
    assert info["pid"] in shared_worker.children()
    seen += wait_for_state(result, states.SUCCESS, timeout=TIMEOUT)
    assert seen.index(states.STARTED) < seen.index(states.SUCCESS)
    assert result.get(timeout=TIMEOUT) == "tracked done"
    # A task without track_started goes straight from PENDING to SUCCESS.
    plain = _send(wtasks.sleepy, shared_worker, (0.5,))
    assert states.STARTED not in wait_for_state(plain, states.SUCCESS, timeout=TIMEOUT)


def test_ignore_result_returns_none_at_once_and_still_runs(shared_worker, client_app, counter_file):
    result = _send(wtasks.ignored, shared_worker, (counter_file,))
    started = time.monotonic()
    assert result.get(timeout=TIMEOUT) is None
    assert time.monotonic() - started < 0.5
    shared_worker.wait_for_line(rf"Task wtasks\.ignored\[{result.id}\] succeeded in [0-9.e-]+s: 1$")
    assert count_runs(counter_file) == 1


def test_log_lines_name_the_task_and_its_id(shared_worker, client_app):
    result = _send(wtasks.add, shared_worker, (20, 22))
    assert result.get(timeout=TIMEOUT) == 42
    line = shared_worker.wait_for_line(rf"Task wtasks\.add\[{result.id}\] succeeded")[0].string
    assert re.match(r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}: INFO/ForkPoolWorker-\d+\] ", line), line
