"""Beat's scheduler and schedule file, on a fake clock, without a broker (spec C.2, C.3).

The scheduler's sending seam (``Scheduler.send``) is replaced by a recorder here; what beat really puts on
the wire is checked against RabbitMQ in ``tests/integration/test_beat.py``.
"""

from __future__ import annotations

import dbm.dumb
import json
import logging
import os
import shelve
from datetime import UTC, datetime, timedelta

import pytest

from minicelery import Celery
from minicelery.beat import DEFAULT_MAX_INTERVAL, ScheduleEntry, Scheduler
from minicelery.beat_store import FORMAT, ScheduleFile, StoredEntry, StoredState
from minicelery.exceptions import ScheduleFileError, SchedulingError
from minicelery.schedules import crontab, schedule

UTC = UTC
START = datetime(2026, 12, 6, 11, 33, 24, 400000, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime = START) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class Recording(Scheduler):
    """A scheduler whose sends are recorded instead of published."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.sent: list[tuple[str, datetime]] = []
        self.fail: set[str] = set()

    def send(self, entry: ScheduleEntry):
        if entry.name in self.fail:
            raise ConnectionError("broker away")
        self.sent.append((entry.name, entry.last_run_at))


def make_app(beat_schedule, **settings) -> Celery:
    app = Celery("proj", set_as_current=False, **settings)

    @app.task(name="proj.tick", shared=False)
    def tick(*args, **kwargs):
        return args

    app.conf.beat_schedule = beat_schedule
    return app


def start(app, clock, path=None, **kwargs) -> Recording:
    scheduler = Recording(app, ScheduleFile(path) if path else None, nowfun=clock, **kwargs)
    scheduler.setup_schedule()
    return scheduler


def run_until(scheduler: Recording, clock: Clock, seconds: float, step: float = 0.25) -> None:
    """Tick like beat's loop, moving the fake clock by at most ``step`` per sleep."""
    end = clock.now + timedelta(seconds=seconds)
    while clock.now < end:
        delay = scheduler.tick()
        # Time passes even when beat does not sleep: 1 ms per tick, else the sleep (at most `step`).
        clock.advance(max(min(delay, step, (end - clock.now).total_seconds()), 0.001))


def test_nothing_runs_at_start_and_an_interval_fires_one_interval_later():
    clock = Clock()
    scheduler = start(make_app({"every-4s": {"task": "proj.tick", "schedule": 4.0, "args": (1, 2)}}), clock)
    assert scheduler.tick() == pytest.approx(4.0 - 0.010)
    assert scheduler.sent == []
    clock.advance(3.9)
    assert scheduler.tick() == pytest.approx(0.1 - 0.010) and scheduler.sent == []
    clock.advance(0.099)
    assert scheduler.tick() == 0.0 and scheduler.sent == []  # 1 ms early: tick again at once, send nothing
    clock.advance(0.001)
    assert scheduler.tick() == 0.0
    assert scheduler.sent == [("every-4s", START + timedelta(seconds=4))]
    entry = scheduler.entries["every-4s"]
    assert (entry.total_run_count, entry.last_run_at) == (1, clock.now)


def test_interval_entries_drift_by_the_send_latency_and_crontabs_do_not():
    clock = Clock(datetime(2026, 12, 6, 11, 59, 30, tzinfo=UTC))
    scheduler = start(make_app({
        "every-4s": {"task": "proj.tick", "schedule": timedelta(seconds=4)},
        "cron": {"task": "proj.tick", "schedule": crontab(minute="*")}}), clock)
    run_until(scheduler, clock, 130, step=0.3)  # the loop oversleeps up to 0.3 s: the send latency
    interval_sends = [when for name, when in scheduler.sent if name == "every-4s"]
    gaps = [(b - a).total_seconds() for a, b in zip(interval_sends, interval_sends[1:], strict=False)]
    assert all(4.0 <= gap < 4.3 for gap in gaps) and len(interval_sends) >= 29
    cron_sends = [when for name, when in scheduler.sent if name == "cron"]
    assert [when.replace(second=0, microsecond=0) for when in cron_sends] == [
        datetime(2026, 12, 6, 12, 0, tzinfo=UTC), datetime(2026, 12, 6, 12, 1, tzinfo=UTC)]
    assert all(when.second == 0 and when.microsecond < 300000 for when in cron_sends)


def test_sleep_is_capped_by_max_interval_setting_and_argument():
    app = make_app({"daily": {"task": "proj.tick", "schedule": crontab(minute=0, hour=0)}})
    assert start(app, Clock()).tick() == DEFAULT_MAX_INTERVAL
    app.conf.beat_max_loop_interval = 20
    assert start(app, Clock()).tick() == 20
    assert start(app, Clock(), max_interval=5).tick() == 5
    assert start(make_app({}), Clock()).tick() == DEFAULT_MAX_INTERVAL


def test_a_missed_entry_runs_once_after_a_restart_and_the_interval_restarts_from_the_send(tmp_path):
    path = tmp_path / "schedule"
    beat_schedule = {"every-2s": {"task": "proj.tick", "schedule": 2.0},
                     "cron": {"task": "proj.tick", "schedule": crontab(minute="*")}}
    clock = Clock()
    first = start(make_app(beat_schedule), clock, path)
    run_until(first, clock, 61)
    counts = {name: entry.total_run_count for name, entry in first.entries.items()}
    first.close()
    clock.advance(3600)  # beat is down for an hour: 1,800 interval runs and 60 crontab runs are missed
    second = start(make_app(beat_schedule), clock, path)
    assert second.tick() == 0.0 and second.tick() == 0.0
    assert sorted(name for name, _ in second.sent) == ["cron", "every-2s"]
    assert second.tick() > 0  # nothing else is due: no burst
    assert {name: entry.total_run_count for name, entry in second.entries.items()} == {
        name: count + 1 for name, count in counts.items()}
    clock.advance(2.0)
    second.tick()
    assert [name for name, _ in second.sent] .count("every-2s") == 2


def test_the_file_is_written_after_every_send_so_a_crash_loses_nothing(tmp_path):
    path = tmp_path / "schedule"
    clock = Clock()
    scheduler = start(make_app({"t": {"task": "proj.tick", "schedule": 1.0}}), clock, path)
    clock.advance(1)
    scheduler.tick()
    stored = ScheduleFile(path).read()
    assert stored.entries["t"] == StoredEntry(clock.now, 1)  # no close(): as if beat were killed now
    assert stored.tz is None and stored.utc_enabled is True
    assert [p.name for p in tmp_path.iterdir()] == ["schedule"]  # no temporary file left behind


def test_changing_the_time_zone_resets_every_entry(tmp_path, caplog):
    path = tmp_path / "schedule"
    clock = Clock()
    first = start(make_app({"t": {"task": "proj.tick", "schedule": 1.0}}, timezone="UTC"), clock, path)
    clock.advance(1)
    first.tick()
    first.close()
    clock.advance(60)
    with caplog.at_level(logging.WARNING):
        second = start(make_app({"t": {"task": "proj.tick", "schedule": 1.0}}, timezone="Europe/Berlin"),
                       clock, path)
    assert "Reset: Timezone changed from 'UTC' to 'Europe/Berlin'" in caplog.text
    entry = second.entries["t"]
    assert (entry.total_run_count, entry.last_run_at) == (0, clock.now)
    assert second.tick() > 0 and second.sent == []  # afresh: nothing due at start
    assert ScheduleFile(path).read().tz == "Europe/Berlin"
    assert ScheduleFile(path).read().entries["t"].last_run_at.utcoffset() == timedelta(hours=1)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        start(make_app({"t": {"task": "proj.tick", "schedule": 1.0}}, timezone="Europe/Berlin",
                       enable_utc=False), clock, path)
    assert "Reset: UTC changed from enabled to disabled" in caplog.text


def test_merge_keeps_last_runs_of_kept_entries_and_forgets_removed_ones(tmp_path):
    path = tmp_path / "schedule"
    clock = Clock()
    first = start(make_app({"keep": {"task": "proj.tick", "schedule": 1.0},
                            "drop": {"task": "proj.tick", "schedule": 1.0}}), clock, path)
    run_until(first, clock, 3)
    kept = first.entries["keep"].last_run_at, first.entries["keep"].total_run_count
    second = start(make_app({"keep": {"task": "proj.tick", "schedule": 100.0, "args": [9]},
                             "new": {"task": "proj.tick", "schedule": 1.0}}), clock, path)
    assert (second.entries["keep"].last_run_at, second.entries["keep"].total_run_count) == kept
    assert second.entries["keep"].schedule == schedule(100) and second.entries["keep"].args == (9,)
    assert set(ScheduleFile(path).read().entries) == {"keep", "new"}


@pytest.mark.parametrize(("spec", "message"), [
    ({"schedule": 1.0}, "'task' must be a task name"),
    ({"task": "proj.tick"}, "it has no 'schedule'"),
    ({"task": "proj.tick", "schedule": "often"}, "a schedule must be seconds"),
    ({"task": "proj.tick", "schedule": 1.0, "arguments": [1]}, "unknown key(s) ['arguments']"),
    ({"task": "proj.tick", "schedule": 1.0, "args": "12"}, "'args' must be a list or tuple"),
    ({"task": "proj.tick", "schedule": 1.0, "kwargs": [1]}, "'kwargs' and 'options' must be dicts"),
    ("proj.tick every second", "it must be a dict"),
])
def test_a_bad_entry_is_named_left_out_and_the_others_run(spec, message, caplog):
    with pytest.raises(SchedulingError, match="beat_schedule entry 'bad' is invalid"):
        ScheduleEntry.from_setting("bad", spec, make_app({}))
    clock = Clock()
    with caplog.at_level(logging.ERROR):
        scheduler = start(make_app({"bad": spec, "good": {"task": "proj.tick", "schedule": 1.0}}), clock)
    assert "beat_schedule entry 'bad' is invalid" in caplog.text and message in caplog.text
    assert list(scheduler.entries) == ["good"]
    clock.advance(1)
    scheduler.tick()
    assert [name for name, _ in scheduler.sent] == ["good"]


def test_an_unregistered_task_is_named_in_a_warning_and_still_sent(caplog):
    clock = Clock()
    with caplog.at_level(logging.WARNING):
        scheduler = start(make_app({"other": {"task": "some.other.task", "schedule": 1.0}}), clock)
    assert "beat_schedule entry 'other': task 'some.other.task' is not registered" in caplog.text
    clock.advance(1)
    scheduler.tick()
    assert [name for name, _ in scheduler.sent] == ["other"]


def test_a_failing_send_or_schedule_never_stops_beat(caplog):
    class Broken:
        nowfun = None

        def now(self):
            return START

        def is_due(self, last_run_at):
            raise ZeroDivisionError("bad schedule")

    clock = Clock()
    scheduler = start(make_app({"broken": {"task": "proj.tick", "schedule": Broken()},
                                "failing": {"task": "proj.tick", "schedule": 1.0},
                                "good": {"task": "proj.tick", "schedule": 1.0}}), clock)
    scheduler.fail.add("failing")
    clock.advance(1)
    with caplog.at_level(logging.ERROR):
        run_until(scheduler, clock, 0.5)
    assert "beat_schedule entry 'broken' cannot be evaluated" in caplog.text
    assert "Couldn't apply scheduled task failing: broker away" in caplog.text
    assert list(scheduler.entries) == ["failing", "good"]
    assert scheduler.entries["failing"].total_run_count == 1  # stamped: not retried in a tight loop
    assert [name for name, _ in scheduler.sent] == ["good"]


def test_the_send_log_line_is_celerys(caplog):
    clock = Clock()
    scheduler = start(make_app({"every-4s": {"task": "proj.tick", "schedule": 4.0}}), clock)
    clock.advance(4)
    with caplog.at_level(logging.INFO, logger="minicelery.beat"):
        scheduler.tick()
    assert "Scheduler: Sending due task every-4s (proj.tick)" in caplog.messages


# -- the schedule file ------------------------------------------------------------------------------


def test_celerys_shelve_file_is_refused_by_name_and_kept(tmp_path):
    for name, opener in (("dumb", dbm.dumb.open), ("default", None)):
        path = str(tmp_path / f"celerybeat-schedule-{name}")
        with shelve.Shelf(opener(path, "c")) if opener else shelve.open(path) as store:
            store["entries"] = {}
            store["__version__"] = "5.7.0"
        before = sorted(os.listdir(tmp_path))
        with pytest.raises(ScheduleFileError, match=r"shelve database .* Celery's beat") as info:
            ScheduleFile(path).read()
        assert repr(path) in str(info.value) and "-s/--schedule" in str(info.value)
        assert sorted(os.listdir(tmp_path)) == before  # nothing deleted


@pytest.mark.parametrize(("content", "message"), [
    (b"\x00\x01garbage", "not JSON"),
    (b"", "not JSON"),
    (b'{"entries": {}}', "JSON but not a minicelery schedule"),
    (json.dumps({"format": FORMAT, "version": 99}).encode(), "has version 99"),
    (json.dumps({"format": FORMAT, "version": 1, "entries": {"t": {"last_run_at": "yesterday",
                                                                     "total_run_count": 1}}}).encode(),
     "corrupt: entry 't'"),
])
def test_a_corrupt_or_foreign_file_is_refused_by_name(tmp_path, content, message):
    path = tmp_path / "schedule"
    path.write_bytes(content)
    with pytest.raises(ScheduleFileError, match=message) as info:
        start(make_app({"t": {"task": "proj.tick", "schedule": 1.0}}), Clock(), path)
    assert str(path) in str(info.value)
    assert path.read_bytes() == content


def test_an_unwritable_file_is_an_error_at_start(tmp_path):
    with pytest.raises(ScheduleFileError, match="Cannot write the beat schedule file"):
        start(make_app({}), Clock(), tmp_path / "missing-dir" / "schedule")


def test_the_file_round_trips(tmp_path):
    state = StoredState("Europe/Berlin", True, {"a": StoredEntry(START, 3)})
    store = ScheduleFile(tmp_path / "s")
    store.write(state)
    assert store.read() == state
    assert json.loads((tmp_path / "s").read_text())["format"] == FORMAT
