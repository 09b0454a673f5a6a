"""``minicelery.schedules``: Celery 5.7's observed next-run vectors, crontab parsing and its errors.

The vectors and expansions were observed with ``celery.schedules`` 5.7.0 (``nowfun`` fixed at "now";
next run = now + ``remaining_estimate(last_run_at)``; the last column is ``is_due(last_run_at)``).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from minicelery import Celery
from minicelery.exceptions import ParseException
from minicelery.schedules import crontab, crontab_parser, maybe_schedule, schedstate, schedule

UTC = UTC
BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def utc(*fields: int) -> datetime:
    return datetime(*fields, tzinfo=UTC)


# (id, schedule factory, time zone, deadline, last_run_at, now, expected next run, expected is_due)
VECTORS = [
    (1, lambda: crontab(minute="*/15"), "UTC", None,
     utc(2026, 1, 1, 10, 7, 30), utc(2026, 1, 1, 10, 10), utc(2026, 1, 1, 10, 15), (False, 300.0)),
    (2, lambda: crontab(minute=0, hour=0), "UTC", None,
     utc(2026, 1, 31), utc(2026, 1, 31, 12), utc(2026, 2, 1), (False, 43200.0)),
    (3, lambda: crontab(minute=30, hour=9, day_of_week="mon-fri"), "UTC", None,
     utc(2026, 1, 2, 9, 30), utc(2026, 1, 2, 9, 31), utc(2026, 1, 5, 9, 30), (False, 259140.0)),
    (4, lambda: crontab(minute=0, hour=0, day_of_month="31"), "UTC", None,
     utc(2026, 1, 31), utc(2026, 2, 10), utc(2026, 3, 31), (False, 4233600.0)),
    (5, lambda: crontab(minute=0, hour=12, day_of_month="29", month_of_year="2"), "UTC", None,
     utc(2026, 2, 1), utc(2026, 2, 1, 0, 1), utc(2028, 2, 29, 12), (False, 65534340.0)),
    (6, lambda: crontab(minute=0, hour=0, day_of_week="fri", day_of_month="13"), "UTC", None,
     utc(2026, 1, 1), utc(2026, 1, 1, 0, 1), utc(2026, 2, 13), (False, 3715140.0)),
    (7, lambda: crontab(minute=0, hour="*/3"), "UTC", None,
     utc(2026, 5, 5, 21), utc(2026, 5, 5, 22), utc(2026, 5, 6), (False, 7200.0)),
    (8, lambda: crontab(minute="*/5"), "UTC", None,
     utc(2026, 5, 5, 10), utc(2026, 5, 5, 10, 17, 30), utc(2026, 5, 5, 10, 20), (True, 150.0)),
    (9, lambda: crontab(minute="*/5"), "UTC", None,
     utc(2026, 5, 5, 10, 5), utc(2026, 5, 5, 10, 5), utc(2026, 5, 5, 10, 10), (False, 300.0)),
    (10, lambda: crontab(minute=0, hour=9), "Europe/Berlin", None,
     datetime(2026, 3, 28, 9, tzinfo=BERLIN), utc(2026, 3, 28, 12), datetime(2026, 3, 29, 9, tzinfo=BERLIN),
     (False, 68400.0)),
    (11, lambda: crontab(minute=30, hour=1), "America/New_York", None,
     datetime(2026, 10, 31, 1, 30, tzinfo=NEW_YORK), utc(2026, 11, 1, 4),
     datetime(2026, 11, 1, 1, 30, tzinfo=NEW_YORK), (False, 5400.0)),
    (12, lambda: crontab(minute=0, hour="*/6"), "UTC", None,
     datetime(2026, 7, 1, 5), utc(2026, 7, 1, 5, 30), utc(2026, 7, 1, 6), (False, 1800.0)),
    (13, lambda: crontab(minute=0, hour=0, day_of_month="1", month_of_year="dec-feb"), "UTC", None,
     utc(2026, 2, 1), utc(2026, 2, 1, 0, 1), utc(2026, 12, 1), (False, 26179140.0)),
    (14, lambda: crontab(minute=0, hour=8, day_of_week="fri-mon"), "UTC", None,
     utc(2026, 1, 5, 8), utc(2026, 1, 5, 9), utc(2026, 1, 9, 8), (False, 342000.0)),
    # 15 and 16: the next run is the one after now (the missed one is skipped, or run now).
    (15, lambda: crontab(minute=0, hour=4), "UTC", 3600,
     utc(2026, 1, 1, 4), utc(2026, 1, 3, 10), utc(2026, 1, 4, 4), (False, 64800.0)),
    (16, lambda: crontab(minute=0, hour=4), "UTC", 3600,
     utc(2026, 1, 1, 4), utc(2026, 1, 2, 4, 30), utc(2026, 1, 3, 4), (True, 84600.0)),
    (17, lambda: schedule(timedelta(seconds=30)), "UTC", None,
     utc(2026, 1, 1), utc(2026, 1, 1, 0, 0, 45), utc(2026, 1, 1, 0, 1, 15), (True, 30.0)),
    (18, lambda: schedule(timedelta(seconds=30)), "UTC", None,
     utc(2026, 1, 1), utc(2026, 1, 1, 0, 0, 10), utc(2026, 1, 1, 0, 0, 30), (False, 20.0)),
]


@pytest.mark.parametrize(("number", "factory", "zone", "deadline", "last_run_at", "now", "next_run", "due"),
                         VECTORS, ids=[f"vector-{v[0]}" for v in VECTORS])
def test_next_run_vectors(number, factory, zone, deadline, last_run_at, now, next_run, due):
    app = Celery("vectors", set_as_current=False, timezone=zone, beat_cron_starting_deadline=deadline)
    sched = factory()
    sched.app, sched.nowfun = app, lambda: now
    state = sched.is_due(last_run_at)
    assert state == due
    assert isinstance(state, schedstate) and state.is_due is due[0] and state.next == due[1]
    if number in (8, 15, 16, 17):  # due or stale: the run after the one due now is `next` seconds away
        assert now + timedelta(seconds=state.next) == next_run
        assert sched.remaining_estimate(last_run_at) <= timedelta(0)  # a run was missed
    else:
        # Compared in UTC: PEP 495 makes a time in a repeated hour unequal to any other zone's time.
        assert now + sched.remaining_estimate(last_run_at) == next_run.astimezone(UTC)
    if zone != "UTC":  # the run is reported in the app's zone, on the expected wall clock
        assert sched.next_after(last_run_at).utcoffset() == next_run.utcoffset()


@pytest.mark.parametrize(("field", "spec", "expected"), [
    ("minute", "*/15", {0, 15, 30, 45}),
    ("minute", "1,13,30-45,50-59/2", {1, 13, *range(30, 46), 50, 52, 54, 56, 58}),
    ("hour", "0,8-17/2", {0, 8, 10, 12, 14, 16}),
    ("day_of_week", "mon-fri", {1, 2, 3, 4, 5}),
    ("day_of_week", "*/2", {0, 2, 4, 6}),
    ("day_of_week", "0-6/3", {0, 3, 6}),
    ("day_of_week", "fri-mon", {5, 6, 0, 1}),
    ("day_of_week", "mar", {3}),          # the month table is tried first: March → 3 → Wednesday
    ("day_of_week", "Sunday", {0}),
    ("day_of_month", "*/3", set(range(1, 32, 3))),
    ("day_of_month", "2-30/2", set(range(2, 31, 2))),
    ("month_of_year", "*/3", {1, 4, 7, 10}),
    ("month_of_year", "2-12/2", {2, 4, 6, 8, 10, 12}),
    ("month_of_year", "dec-feb", {12, 1, 2}),
    ("minute", " 5", {5}),
    ("minute", "1-3-5", {1, 2, 3}),
])
def test_field_expansions(field, spec, expected):
    assert getattr(crontab(**{field: spec}), field) == expected


@pytest.mark.parametrize(("field", "spec", "error", "message"), [
    ("minute", "", ParseException, "empty part"),
    ("minute", "*/", ParseException, "empty filter"),
    ("minute", "1-10/", ParseException, "empty filter"),
    ("minute", "-5", ParseException, "negative numbers not supported"),
    ("day_of_week", "5/15", ValueError, "Invalid weekday literal '5/15'."),
    ("minute", "*/0", ValueError, "slice step cannot be zero"),
    ("minute", "60", ValueError, "Invalid end range: 60 > 59."),
    ("hour", "24", ValueError, "Invalid end range: 24 > 23."),
    ("day_of_month", "0", ValueError, "Invalid beginning range: 0 < 1."),
    ("day_of_week", "7", ValueError, "Invalid end range: 7 > 6."),
    ("day_of_week", 7, ValueError, "Valid range is 0-6. '7' was found."),
    ("minute", "bogus", ValueError, "Invalid weekday literal 'bogus'."),
])
def test_field_errors_have_celerys_class_and_text(field, spec, error, message):
    with pytest.raises(error) as info:
        crontab(**{field: spec})
    assert message in str(info.value)
    if error is ParseException:
        assert not isinstance(info.value, ValueError)


def test_a_day_that_never_occurs_in_the_months_is_refused():
    with pytest.raises(ValueError, match=r"day_of_month '30' never occurs in month_of_year '2'"):
        crontab(minute=0, hour=0, day_of_month="30", month_of_year="2")
    crontab(day_of_month="29", month_of_year="2")  # a leap day is fine


def test_a_field_of_another_type_is_a_type_error():
    with pytest.raises(TypeError, match="int, str, or an iterable"):
        crontab(minute=1.5)


def test_from_string_uses_cron_order_and_repr_prints_the_specs():
    cron = crontab.from_string("0 9 * * 1-5")
    assert (cron.minute, cron.hour, cron.day_of_week) == ({0}, {9}, {1, 2, 3, 4, 5})
    assert repr(cron) == "<crontab: 0 9 * * 1-5 (m/h/dM/MY/d)>"
    assert cron == crontab(minute=0, hour=9, day_of_week="mon-fri")
    with pytest.raises(ValueError, match="expected 5 fields"):
        crontab.from_string("0 9 * *")


def test_crontab_parser_is_usable_alone():
    assert crontab_parser(24).parse("*/4") == {0, 4, 8, 12, 16, 20}
    assert crontab_parser(12, 1).parse("*/2") == {1, 3, 5, 7, 9, 11}
    assert crontab_parser.ParseException is ParseException


def test_interval_schedule_repr_equality_and_maybe_schedule():
    assert repr(schedule(30)) == "<freq: 30.00 seconds>"
    assert repr(schedule(timedelta(minutes=1))) == "<freq: 1.00 minute>"
    assert repr(schedule(7200)) == "<freq: 2.00 hours>"
    assert schedule(30) == timedelta(seconds=30) and schedule(30) == schedule(timedelta(seconds=30))
    assert maybe_schedule(4.0) == schedule(4) and maybe_schedule(timedelta(seconds=6)).seconds == 6
    cron = crontab()
    app = Celery("m", set_as_current=False)
    assert maybe_schedule(cron, app=app) is cron and cron.app is app
    with pytest.raises(TypeError, match="a schedule must be"):
        maybe_schedule("every day")


def test_relative_interval_rounds_down_to_its_resolution():
    now = utc(2026, 1, 1, 10, 0, 0)
    sched = schedule(timedelta(hours=1), relative=True, nowfun=lambda: now,
                     app=Celery("r", set_as_current=False))
    # 09:20:10 + 1 h = 10:20:10, rounded down to the hour: 10:00, which is now → due.
    assert sched.is_due(utc(2026, 1, 1, 9, 20, 10)) == (True, 3600.0)


def test_default_clock_and_zone_come_from_the_app():
    app = Celery("z", set_as_current=False, timezone="Europe/Berlin")
    cron = crontab(minute=0, hour=9, app=app)
    assert cron.tz == BERLIN
    assert cron.next_after(datetime(2026, 6, 1, 7, 30, tzinfo=UTC)) == datetime(2026, 6, 2, 9, tzinfo=BERLIN)
    before = datetime.now(UTC)
    assert before - timedelta(seconds=1) <= cron.now() <= datetime.now(UTC) + timedelta(seconds=1)
