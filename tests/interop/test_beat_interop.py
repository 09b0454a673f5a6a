"""Beat across the two implementations: a Celery 5 worker runs what minicelery's beat sends, and a
minicelery worker runs what Celery's beat sends (spec C.4, AC-C1)."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest
from conftest import WorkerProcess, worker_env

BEAT_START_TIMEOUT = 30.0


@pytest.fixture
def beats() -> Iterator[list[WorkerProcess]]:
    """Beat subprocesses started by the test; each is stopped (SIGTERM, then killed) at teardown."""
    started: list[WorkerProcess] = []
    yield started
    for beat in started:
        beat.stop()


def start_beat(beats: list[WorkerProcess], kind: str, queue: str, schedule_file: str) -> WorkerProcess:
    program = ["-m", "celery", "-A", "celery_beat"] if kind == "celery" else ["-m", "minicelery", "-A", "mini_beat"]
    beat = WorkerProcess(f"{kind} beat", [sys.executable, *program, "beat", "-s", schedule_file, "-l", "INFO"],
                         worker_env(queue), queue)
    beats.append(beat)
    return beat


def test_a_celery_worker_runs_what_minicelery_beat_sends(start_worker, beats, tmp_path):
    worker = start_worker("celery")
    beat = start_beat(beats, "minicelery", worker.queue, str(tmp_path / "schedule"))
    assert beat.wait_for_line("Scheduler: Sending due task echo-every-second (interop.echo)",
                              BEAT_START_TIMEOUT), beat.output()
    expected = "succeeded in"
    result = "{'args': [1, 2], 'kwargs': {'from': 'minicelery beat'}}"
    assert worker.wait_for_line(result, 20), worker.output()[-5000:]
    assert any(expected in line and result in line for line in worker.output().splitlines())
    beat.terminate()
    assert beat.process.wait(15) == 0, beat.output()


def test_a_minicelery_worker_runs_what_celery_beat_sends(start_worker, beats, tmp_path):
    worker = start_worker("minicelery")
    beat = start_beat(beats, "celery", worker.queue, str(tmp_path / "celerybeat-schedule"))
    assert beat.wait_for_line("Scheduler: Sending due task echo-every-second (interop.echo)",
                              BEAT_START_TIMEOUT), beat.output()
    result = "{'args': [3, 4], 'kwargs': {'from': 'celery beat'}}"
    assert worker.wait_for_line(result, 20), worker.output()[-5000:]
    assert any("succeeded in" in line and result in line for line in worker.output().splitlines())
