"""A real minicelery worker follows the canvas: chains, groups, link/link_error, chords on file://.

The client is ``wtasks.app`` (rpc://) or, for chords, a second app on a shared ``file://`` directory;
the worker is ``python -m minicelery -A wtasks worker`` on a fresh queue. Nothing sleeps: tests wait on
results, on files the tasks write, or on log lines.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import wtasks
from broker_admin import BROKER_URL
from worker_support import count_runs

from minicelery import Celery, chain, chord, group, signature, states

pytest_plugins = ("worker_support",)  # start_worker, shared_worker, client_app, counter_file
pytestmark = pytest.mark.broker

TIMEOUT = 15


def _wait_lines(path: str, count: int, timeout: float = TIMEOUT) -> list[str]:
    deadline = time.monotonic() + timeout
    while count_runs(path) < count:
        assert time.monotonic() < deadline, f"{path} has {count_runs(path)} lines, wanted {count}"
        time.sleep(0.05)
    return Path(path).read_text().splitlines()


def test_chain_of_three_returns_the_last_value_with_parents(shared_worker, client_app):
    result = chain(wtasks.add.s(1, 2), wtasks.mul.s(3), wtasks.add.s(4)).apply_async(queue=shared_worker.queue)
    assert result.get(timeout=TIMEOUT) == 13
    assert result.parent.get(timeout=TIMEOUT) == 9
    assert result.parent.parent.get(timeout=TIMEOUT) == 3
    assert result.parent.parent.parent is None
    assert [child.id for child in result.parent.children] == [result.id]
    assert result.children == []


def test_immutable_step_ignores_the_previous_result(shared_worker, client_app):
    result = (wtasks.add.s(1, 2) | wtasks.add.si(100, 1) | wtasks.mul.s(2)).apply_async(
        queue=shared_worker.queue)
    assert result.get(timeout=TIMEOUT) == 202


def test_failing_middle_step_stops_the_chain_and_fails_the_last_id(shared_worker, client_app, counter_file):
    result = chain(wtasks.add.s(1, 2), wtasks.boom.s(), wtasks.note.s(counter_file, "after")).apply_async(
        queue=shared_worker.queue)
    with pytest.raises(ValueError, match="boom"):
        result.get(timeout=TIMEOUT)
    assert result.state == states.FAILURE
    assert result.parent.get(timeout=TIMEOUT, propagate=False).args == ("boom", 3)
    assert count_runs(counter_file) == 0  # the step after the failure never ran


def test_group_of_ten_returns_values_in_group_order(shared_worker, client_app):
    result = group(wtasks.add.s(i, i) for i in range(10)).apply_async(queue=shared_worker.queue)
    assert result.get(timeout=TIMEOUT) == [2 * i for i in range(10)]
    assert result.ready() and result.successful() and not result.failed()
    assert result.completed_count() == 10


def test_chain_ending_in_a_group(shared_worker, client_app):
    result = chain(wtasks.add.s(1, 1), group(wtasks.add.s(10), wtasks.mul.s(10))).apply_async(
        queue=shared_worker.queue)
    assert result.get(timeout=TIMEOUT) == [12, 20]
    assert result.parent.get(timeout=TIMEOUT) == 2


def test_link_callback_runs_with_the_result_and_its_result_comes_back(shared_worker, client_app,
                                                                      counter_file):
    result = wtasks.add.apply_async((1, 2), link=wtasks.note.s(counter_file, "cb"), queue=shared_worker.queue)
    assert result.get(timeout=TIMEOUT) == 3
    assert _wait_lines(counter_file, 1) == ["cb 3"]
    (child,) = result.children
    assert child.get(timeout=TIMEOUT) == 3  # unlike Celery, the callback replies to the client


def test_link_error_new_style_runs_in_the_failing_process(shared_worker, client_app, counter_file):
    result = wtasks.boom.apply_async((7,), link_error=wtasks.on_err.s(counter_file), queue=shared_worker.queue)
    with pytest.raises(ValueError):
        result.get(timeout=TIMEOUT)
    (line,) = _wait_lines(counter_file, 1)
    assert line.startswith(f"new {result.id} ValueError('boom', 7)") and line.endswith("ValueError: ('boom', 7)")


def test_link_error_old_style_and_bound_errbacks(shared_worker, client_app, counter_file):
    result = wtasks.boom.apply_async((1,), link_error=[wtasks.on_err_old.s(counter_file),
                                                       wtasks.on_err_bound.s(counter_file)],
                                     queue=shared_worker.queue)
    with pytest.raises(ValueError):
        result.get(timeout=TIMEOUT)
    assert sorted(_wait_lines(counter_file, 2)) == [f"bound {result.id} ValueError('boom', 1)",
                                                    f"old {result.id}"]


def test_callback_runs_once_after_retries(shared_worker, client_app, counter_file, tmp_path):
    runs = str(tmp_path / "retry-runs")
    result = wtasks.retry_once.apply_async((runs,), {"countdown": 0.1},
                                           link=wtasks.note.s(counter_file, "done"), queue=shared_worker.queue)
    result.get(timeout=TIMEOUT)
    assert len(_wait_lines(counter_file, 1)) == 1
    assert count_runs(runs) == 2


def test_malformed_chain_embed_fails_the_task_and_the_worker_lives(shared_worker, client_app):
    bad = {"task": "wtasks.add", "args": [1]}  # no kwargs, no options
    result = wtasks.add.apply_async((1, 2), chain=[bad], queue=shared_worker.queue)
    with pytest.raises(Exception, match="options|kwargs"):
        result.get(timeout=TIMEOUT)
    assert wtasks.add.apply_async((2, 2), queue=shared_worker.queue).get(timeout=TIMEOUT) == 4


def test_nested_canvas(shared_worker, client_app):
    inner = chain(wtasks.add.s(1, 1), wtasks.mul.s(5))
    result = group(inner, chain(wtasks.add.s(2, 2), group(wtasks.add.s(1), wtasks.add.s(2)))).apply_async(
        queue=shared_worker.queue)
    assert result.get(timeout=TIMEOUT) == [10, [5, 6]]


@pytest.fixture
def file_worker(start_worker, tmp_path):
    directory = tmp_path / "results"
    directory.mkdir()
    url = f"file://{directory}"
    worker = start_worker(concurrency=2, env={"WTASKS_BACKEND": url})
    client = Celery("wtasks", broker=BROKER_URL, backend=url)
    client.conf.task_default_queue = worker.queue
    try:
        yield worker, client, directory
    finally:
        client.close()


def test_chord_on_the_filesystem_backend(file_worker):
    worker, client, directory = file_worker
    header = [signature("wtasks.add", (i, i), app=client) for i in range(4)]
    result = chord(header, signature("wtasks.tsum", app=client)).apply_async()
    assert result.get(timeout=TIMEOUT) == 12
    assert result.parent.get(timeout=TIMEOUT) == [0, 2, 4, 6]
    assert (directory / f"celery-task-meta-{result.id}").read_bytes().startswith(b'{"status": "SUCCESS", "result": 12')


def test_chord_with_a_failing_header_fails_the_body_with_chord_error(file_worker):
    worker, client, directory = file_worker
    header = [signature("wtasks.add", (1, 1), app=client), signature("wtasks.boom", (2,), app=client)]
    result = chord(header, signature("wtasks.tsum", app=client)).apply_async()
    with pytest.raises(Exception) as info:
        result.get(timeout=TIMEOUT)
    assert type(info.value).__name__ == "ChordError" and "ValueError('boom', 2)" in str(info.value)


def test_chain_through_a_chord_on_the_filesystem_backend(file_worker):
    worker, client, directory = file_worker
    add = lambda *a: signature("wtasks.add", a, app=client)  # noqa: E731
    result = chain(add(1, 1), group(add(1), add(2)), signature("wtasks.tsum", app=client)).apply_async()
    assert result.get(timeout=TIMEOUT) == 7


def test_failure_before_a_group_fails_the_group_at_once(shared_worker, client_app):
    result = chain(wtasks.boom.s(1), group(wtasks.add.s(1), wtasks.mul.s(2))).apply_async(queue=shared_worker.queue)
    started = time.monotonic()
    with pytest.raises(ValueError, match="boom"):
        result.get(timeout=TIMEOUT)
    assert time.monotonic() - started < TIMEOUT / 2
