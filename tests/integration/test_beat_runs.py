"""Beat against a real broker (RabbitMQ, or the embedded one): what it sends, catch-up after a restart, the ``beat`` command, ``-B``.

The first tests drive the scheduler in-process on a fake clock and read what reached the broker with plain
pika; the others run ``python -m minicelery ... beat`` and ``worker -B`` as real subprocesses for a few
seconds (entries every second) and wait on their log lines.
"""

from __future__ import annotations

import json
import re
import signal
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pika
import pytest
from broker_admin import BROKER_URL, ready_count
from cli_support import LOG_LINE, wait_for_count
from worker_support import child_pids

from minicelery import Celery
from minicelery.beat import Scheduler
from minicelery.beat_store import ScheduleFile
from minicelery.schedules import crontab

UTC = UTC
SEND_LINE = r"Scheduler: Sending due task tick-every \(btasks\.tick\)$"


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def make_app(queue: str, other_queue: str) -> Celery:
    app = Celery("proj", broker=BROKER_URL, set_as_current=False)
    app.conf.task_default_queue = queue

    @app.task(name="proj.tick", shared=False)
    def tick(*args, **kwargs):
        return args

    app.conf.beat_schedule = {
        "every-4s": {"task": "proj.tick", "schedule": 4.0, "args": (1, 2)},
        "every-6s": {"task": "proj.tick", "schedule": timedelta(seconds=6), "kwargs": {"k": "v"},
                     "options": {"expires": 30, "priority": 3}},
        "cron": {"task": "proj.tick", "schedule": crontab(minute="*/5")},
        "unregistered": {"task": "some.other.task", "schedule": 5.0, "options": {"queue": other_queue}},
    }
    return app


def waiting(queue: str) -> int:
    """Messages ready in ``queue``; 0 when nothing has declared it yet."""
    try:
        return ready_count(queue)
    except pika.exceptions.ChannelClosedByBroker as exc:
        assert exc.reply_code == 404
        return 0


def get(channel, queue: str):
    method, properties, body = channel.basic_get(queue, auto_ack=True)
    assert method is not None, f"no message in {queue}"
    return method, properties, body


@pytest.fixture
def fake_clock_beat(unique_queue, tmp_path):
    queue, other = unique_queue("beat"), unique_queue("beat-other")
    app = make_app(queue, other)
    clock = Clock(datetime(2026, 12, 6, 11, 33, 24, 400000, tzinfo=UTC))
    scheduler = Scheduler(app, ScheduleFile(tmp_path / "schedule"), nowfun=clock)
    scheduler.setup_schedule()
    yield app, clock, scheduler, queue, other
    app.close()


def test_each_entry_is_sent_on_time_exactly_as_apply_async_plus_the_beat_header(fake_clock_beat, pika_channel):
    app, clock, scheduler, queue, other = fake_clock_beat
    assert scheduler.tick() > 0
    clock.advance(3.99)
    assert scheduler.tick() >= 0 and waiting(queue) == 0  # nothing at start, nothing early
    clock.advance(0.01)
    assert scheduler.tick() == 0.0
    assert wait_for_count(queue, 1) == 1
    _, beat_props, beat_body = get(pika_channel, queue)
    app.tasks["proj.tick"].apply_async([1, 2])
    assert wait_for_count(queue, 1) == 1
    method, direct_props, direct_body = get(pika_channel, queue)
    assert (method.exchange, method.routing_key) == ("", queue)
    beat_headers, direct_headers = dict(beat_props.headers), dict(direct_props.headers)
    assert list(beat_headers)[-1] == "celery_beat_task" and beat_headers.pop("celery_beat_task") is True
    assert beat_headers["argsrepr"] == "[1, 2]" and beat_headers["kwargsrepr"] == "{}"
    for headers in (beat_headers, direct_headers):
        headers.pop("id"), headers.pop("root_id")
    assert list(beat_headers.items()) == list(direct_headers.items())
    assert beat_body == direct_body == b'[[1, 2], {}, {"callbacks": null, "errbacks": null, "chain": null, ' \
                                       b'"chord": null}]'
    for name in ("content_type", "content_encoding", "delivery_mode", "priority", "reply_to", "expiration"):
        assert getattr(beat_props, name) == getattr(direct_props, name), name

    clock.advance(1.0)  # 5 s: the unregistered entry goes by name to its own queue
    assert scheduler.tick() == 0.0
    assert wait_for_count(other, 1) == 1
    _, props, _ = get(pika_channel, other)
    assert props.headers["task"] == "some.other.task" and props.headers["celery_beat_task"] is True

    clock.advance(1.0)  # 6 s: options reach the message
    assert scheduler.tick() == 0.0
    assert wait_for_count(queue, 1) == 1
    _, props, body = get(pika_channel, queue)
    assert (props.priority, props.expiration) == (3, "30000") and props.headers["expires"] is not None
    assert json.loads(body)[:2] == [[], {"k": "v"}] and props.headers["argsrepr"] == "()"


def test_a_restarted_beat_sends_each_overdue_entry_exactly_once(fake_clock_beat, tmp_path):
    app, clock, scheduler, queue, other = fake_clock_beat
    for _ in range(60):  # one minute of beat: sends to both queues
        delay = scheduler.tick()
        clock.advance(max(delay, 0.001))
    before = waiting(queue), waiting(other)
    scheduler.close()
    clock.advance(600)  # down for ten minutes
    restarted = Scheduler(app, ScheduleFile(tmp_path / "schedule"), nowfun=clock)
    restarted.setup_schedule()
    sent = 0
    while restarted.tick() == 0.0:
        sent += 1
    assert sent == 4  # every entry once, the crontab included, and then nothing is due
    assert wait_for_count(queue, before[0] + 3) == before[0] + 3
    assert wait_for_count(other, before[1] + 1) == before[1] + 1


# -- the real command -------------------------------------------------------------------------------

def log_time(line: str) -> datetime:
    return datetime.strptime(re.match(r"\[(\S+ \S+): ", line).group(1), "%Y-%m-%d %H:%M:%S,%f")


def beat_process(workers, queue: str, path: Path):
    return workers(["-A", "btasks", "beat", "-s", str(path), "-l", "INFO"],
                   env={"BTASKS_QUEUE": queue, "BTASKS_INTERVAL": "1.0"})


def test_beat_command_sends_every_second_survives_a_restart_and_exits_0_on_sigterm(workers, unique_queue,
                                                                                   tmp_path):
    queue, path = unique_queue("beat-cli"), tmp_path / "schedule"
    beat = beat_process(workers, queue, path)
    started = beat.wait_for_line(LOG_LINE + r"beat: Starting\.\.\.$")
    sends = beat.wait_for_line(LOG_LINE + SEND_LINE, timeout=20, count=3)
    assert "minicelery beat v" in beat.stdout() and f". db -> {path}" in beat.stdout()
    times = [log_time(started[0].string)] + [log_time(m.string) for m in sends]
    gaps = [(b - a).total_seconds() for a, b in zip(times, times[1:], strict=False)]
    assert all(0.99 <= gap < 2.0 for gap in gaps), gaps  # nothing at start; then one per interval
    beat.signal(signal.SIGTERM)
    assert beat.wait() == 0
    assert "beat: Shutting down..." in beat.stderr()
    count = len(beat.wait_for_line(LOG_LINE + SEND_LINE, timeout=1, count=3))
    assert wait_for_count(queue, count) == count
    stored = json.loads(path.read_text())
    assert stored["entries"]["tick-every"]["total_run_count"] == count

    # As in the spec's observation: move the last run an hour back, restart, and it runs once at once.
    last = datetime.fromisoformat(stored["entries"]["tick-every"]["last_run_at"])
    stored["entries"]["tick-every"]["last_run_at"] = (last - timedelta(hours=1)).isoformat()
    path.write_text(json.dumps(stored))
    again = beat_process(workers, queue, path)
    started = log_time(again.wait_for_line(LOG_LINE + r"beat: Starting\.\.\.$")[0].string)
    first, second = again.wait_for_line(LOG_LINE + SEND_LINE, timeout=20, count=2)
    assert (log_time(first.string) - started).total_seconds() < 0.5  # caught up at once, once
    assert (log_time(second.string) - log_time(first.string)).total_seconds() >= 0.99
    again.signal(signal.SIGINT)
    assert again.wait() == 0
    assert json.loads(path.read_text())["entries"]["tick-every"]["total_run_count"] >= count + 2


def test_beat_refuses_a_foreign_schedule_file_with_exit_code_78(workers, unique_queue, tmp_path):
    path = tmp_path / "celerybeat-schedule"
    path.write_bytes(b"\x00\x06\x15\x61 not json")
    beat = beat_process(workers, unique_queue("beat-bad"), path)
    assert beat.wait() == 78
    assert f"The beat schedule file '{path}' is not a minicelery schedule" in beat.stderr()
    assert path.read_bytes() == b"\x00\x06\x15\x61 not json"


def test_worker_dash_b_runs_beat_in_a_child_process_stopped_with_the_worker(workers, unique_queue, tmp_path):
    queue = unique_queue("beat-worker")
    worker = workers(["-A", "btasks", "worker", "-B", "-l", "INFO", "-c", "1", "-Q", queue,
                      "-n", f"b-{uuid.uuid4().hex[:8]}@%h", "-s", str(tmp_path / "schedule")],
                     env={"BTASKS_QUEUE": queue, "BTASKS_INTERVAL": "1.0", "BTASKS_DIR": str(tmp_path)})
    worker.wait_for_line(LOG_LINE.replace("(?P<process>[A-Za-z]+(-\\d+)?)", "Beat") + r"beat: Starting\.\.\.$")
    worker.ready()
    worker.wait_for_line(r"Task btasks\.tick\[[0-9a-f-]+\] succeeded in .*: 3$", timeout=20, count=2)
    beats = [pid for pid in child_pids(worker.pid)
             if b"beat" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")]
    assert len(beats) == 1
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0
    assert "INFO/Beat] beat: Shutting down..." in worker.stderr()
    assert "The embedded beat" not in worker.stderr() and "Fatal Python error" not in worker.stderr()
    assert not Path(f"/proc/{beats[0]}").exists() or "Z" in Path(f"/proc/{beats[0]}/stat").read_text()
    assert json.loads((tmp_path / "schedule").read_text())["entries"]["tick-every"]["total_run_count"] >= 2
    assert len((tmp_path / "runs").read_text().split()) >= 2


def test_an_embedded_beat_stops_itself_when_its_worker_is_killed(workers, unique_queue, tmp_path):
    queue = unique_queue("beat-orphan")
    worker = workers(["-A", "btasks", "worker", "-B", "-l", "INFO", "-c", "1", "-Q", queue,
                      "-n", f"b-{uuid.uuid4().hex[:8]}@%h", "-s", str(tmp_path / "schedule")],
                     env={"BTASKS_QUEUE": queue, "BTASKS_INTERVAL": "1.0"})
    worker.ready()
    worker.wait_for_line(r"INFO/Beat\] " + SEND_LINE)
    beat = next(pid for pid in child_pids(worker.pid)
                if b"beat" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0"))
    worker.signal(signal.SIGKILL)  # the worker's main process only: it cannot stop beat itself
    worker.wait()
    worker.wait_for_line(r"INFO/Beat\] beat: Shutting down\.\.\.$", timeout=20)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{beat}").exists() and "Z" not in Path(f"/proc/{beat}/stat").read_text().split()[2]:
        assert time.monotonic() < deadline, "the orphaned beat did not exit"
        time.sleep(0.05)  # polling interval of a deadline-bounded wait
