"""Properties of ``minicelery.schedules`` against a brute-force search over minutes.

For random crontabs and times: the next run is strictly after the last one, matches every field on the
zone's wall clock, and no matching minute lies between the two (checked minute by minute on every day the
day fields allow). Interval schedules count elapsed time, so the next run never moves backwards.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from minicelery import Celery
from minicelery.schedules import crontab, schedule

UTC = UTC
ZONES = ["UTC", "Asia/Kolkata"]  # zones without DST: every wall-clock minute exists exactly once
DST_ZONES = ["Europe/Berlin", "America/New_York"]

fields = st.fixed_dictionaries({
    "minute": st.sets(st.integers(0, 59), min_size=1, max_size=6),
    "hour": st.sets(st.integers(0, 23), min_size=1, max_size=6),
    "day_of_week": st.one_of(st.just("*"), st.sets(st.integers(0, 6), min_size=1, max_size=7)),
    "day_of_month": st.one_of(st.just("*"), st.sets(st.integers(1, 31), min_size=1, max_size=5)),
    "month_of_year": st.one_of(st.just("*"), st.sets(st.integers(1, 12), min_size=1, max_size=5)),
})
moments = st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2040, 12, 31),
                       timezones=st.just(UTC))


def make_crontab(spec: dict, zone: str) -> crontab:
    try:
        cron = crontab(**spec)
    except ValueError:  # days that never occur in the months: refused, as tested elsewhere
        assume(False)
    cron.app = Celery("props", set_as_current=False, timezone=zone)
    return cron


def wall_matches(cron: crontab, moment: datetime) -> bool:
    return (moment.minute in cron.minute and moment.hour in cron.hour and moment.day in cron.day_of_month
            and moment.month in cron.month_of_year and moment.isoweekday() % 7 in cron.day_of_week)


def brute_force_matches(cron: crontab, after: datetime, before: datetime) -> list[datetime]:
    """Every matching wall-clock minute strictly between two instants, found minute by minute."""
    tz = cron.tz
    start, end = after.astimezone(tz).replace(tzinfo=None), before.astimezone(tz).replace(tzinfo=None)
    found = []
    day = start.replace(hour=0, minute=0, second=0, microsecond=0)
    while day <= end:
        if day.month in cron.month_of_year and day.day in cron.day_of_month \
                and day.isoweekday() % 7 in cron.day_of_week:
            for offset in range(24 * 60):
                minute = day + timedelta(minutes=offset)
                if start < minute < end and wall_matches(cron, minute):
                    found.append(minute)
        day += timedelta(days=1)
    return found


@settings(max_examples=150, deadline=None)
@given(spec=fields, last=moments, zone=st.sampled_from(ZONES))
def test_next_run_is_the_first_matching_minute_after_the_last_run(spec, last, zone):
    cron = make_crontab(spec, zone)
    following = cron.next_after(last)
    assert following.astimezone(UTC) > last
    local = following.astimezone(cron.tz)
    assert local.second == 0 and local.microsecond == 0
    assert wall_matches(cron, local)
    assert brute_force_matches(cron, last, following) == []


@settings(max_examples=150, deadline=None)
@given(spec=fields, moment=moments, zone=st.sampled_from(ZONES))
def test_last_run_at_or_before_is_the_latest_match(spec, moment, zone):
    cron = make_crontab(spec, zone)
    previous = cron.last_at_or_before(moment)
    assert previous.astimezone(UTC) <= moment
    assert wall_matches(cron, previous.astimezone(cron.tz))
    assert cron.next_after(previous).astimezone(UTC) > moment


@settings(max_examples=150, deadline=None)
@given(spec=fields, last=moments, ahead=st.integers(0, 3 * 366 * 86400), zone=st.sampled_from(ZONES))
def test_is_due_agrees_with_the_next_run(spec, last, ahead, zone):
    cron = make_crontab(spec, zone)
    now = last + timedelta(seconds=ahead)
    cron.nowfun = lambda: now
    due, next_check = cron.is_due(last)
    assert due is (cron.next_after(last) <= now)
    expected = cron.next_after(now if due else last)
    assert next_check == (expected - now).total_seconds() > 0


@settings(max_examples=100, deadline=None)
@given(spec=fields, zone=st.sampled_from(DST_ZONES),
       last=st.datetimes(min_value=datetime(2026, 3, 1), max_value=datetime(2026, 11, 30), timezones=st.just(UTC)))
def test_next_run_is_strictly_later_across_dst_changes(spec, zone, last):
    """A run stamped in a repeated or skipped hour never makes the next run come at or before it (a beat
    that compared wall clocks would send such an entry in a loop)."""
    cron = make_crontab(spec, zone)
    following = cron.next_after(last)
    assert following.astimezone(UTC) > last
    assert cron.next_after(following).astimezone(UTC) > following.astimezone(UTC)


@settings(max_examples=200, deadline=None)
@given(seconds=st.floats(0.5, 86400 * 3), start=moments,
       latencies=st.lists(st.floats(0, 5), min_size=1, max_size=20), zone=st.sampled_from(ZONES + DST_ZONES))
def test_interval_runs_never_drift_backwards(seconds, start, latencies, zone):
    """Beat's loop: wait until due, send `latency` seconds late, stamp the send time; repeat."""
    clock = [start]
    sched = schedule(timedelta(seconds=seconds), nowfun=lambda: clock[0],
                     app=Celery("i", set_as_current=False, timezone=zone))
    last, previous_due = start, None
    for latency in latencies:
        due_at = clock[0] + sched.remaining_estimate(last)
        assert due_at == last + timedelta(seconds=seconds)  # elapsed time, whatever the zone
        assert previous_due is None or due_at > previous_due
        clock[0] = due_at - timedelta(microseconds=1)
        assert sched.is_due(last).is_due is False
        clock[0] = due_at + timedelta(seconds=latency)
        assert sched.is_due(last) == (True, sched.seconds)
        last, previous_due = clock[0], due_at
