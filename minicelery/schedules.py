"""When a periodic task runs: ``schedule`` (a fixed interval) and ``crontab`` (cron fields).

Both answer the two questions beat asks: ``is_due(last_run_at)`` → ``(due, seconds until the next check)``
and ``remaining_estimate(last_run_at)`` → the time left until the next run, with Celery's numbers for the
same clock (``nowfun=`` fixes the clock, ``app=`` the time zone). A crontab is matched on the wall clock of
the app's time zone (``timezone``, or UTC under ``enable_utc``); every comparison and subtraction is done
in UTC, because Python compares two datetimes of one zone by their wall clocks, which goes wrong around a
DST change. Celery's counterpart is ``celery.schedules``; left out is ``solar``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any, NamedTuple

from ._state import get_current_app
from .crontab_parser import crontab_parser
from .exceptions import ParseException

__all__ = ["ParseException", "schedstate", "schedule", "crontab", "crontab_parser", "maybe_schedule"]

_ONE_DAY = timedelta(days=1)
#: How far the search for a matching day may go: 29 February on a given weekday can be 40 years away.
_MAX_DAYS = 366 * 401
#: The most days each month can have (February: 29), to refuse a crontab that can never run.
_MONTH_DAYS = {1: 31, 2: 29, 3: 31, 4: 30, 5: 31, 6: 30, 7: 31, 8: 31, 9: 30, 10: 31, 11: 30, 12: 31}
_TIME_UNITS = (("day", 86400.0), ("hour", 3600.0), ("minute", 60.0), ("second", 1.0))

CRON_PATTERN_INVALID = "Invalid crontab pattern.  Valid range is {min}-{max}. '{value}' was found."
CRON_INVALID_TYPE = ("Argument cronspec needs to be of any of the following types: int, str, or an "
                     "iterable type. {type!r} was given.")


class schedstate(NamedTuple):  # noqa: N801 - Celery's name
    """What ``is_due`` returns: whether to run now, and in how many seconds to check again."""

    is_due: bool
    next: float


def humanize_seconds(secs: float) -> str:
    """Celery's short form of a duration: ``30.00 seconds``, ``1.00 minute``, ``now`` for zero."""
    secs = float(format(float(secs), ".2f"))
    for unit, divider in _TIME_UNITS:
        if secs >= divider:
            amount = secs / divider
            return f"{amount:.2f} {unit}{'' if amount == 1 else 's'}"
    return "now"


class BaseSchedule:
    """What both schedules share: the clock (``nowfun``, else the app's ``now``) and the app's zone."""

    def __init__(self, nowfun: Callable[[], datetime] | None = None, app: Any = None) -> None:
        self.nowfun = nowfun
        self._app = app

    @property
    def app(self) -> Any:
        """The app whose settings apply (``timezone``, ``beat_cron_starting_deadline``): the current app
        unless one was given."""
        return self._app or get_current_app()

    @app.setter
    def app(self, app: Any) -> None:
        self._app = app

    @property
    def tz(self) -> tzinfo:
        """The time zone the schedule is read in: the app's."""
        return self.app.timezone

    def now(self) -> datetime:
        """The current time, from ``nowfun`` when given."""
        return (self.nowfun or self.app.now)()

    def maybe_make_aware(self, moment: datetime) -> datetime:
        """``moment`` in the schedule's zone; a naive datetime is taken as UTC (as in Celery)."""
        if moment.tzinfo is None or moment.utcoffset() is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.astimezone(self.tz)

    def _utc(self, moment: datetime) -> datetime:
        if moment.tzinfo is None or moment.utcoffset() is None:
            return moment.replace(tzinfo=UTC)
        return moment.astimezone(UTC)

    def __eq__(self, other: Any) -> bool:
        if isinstance(other, BaseSchedule):
            return other.nowfun == self.nowfun
        return NotImplemented


class schedule(BaseSchedule):  # noqa: N801 - Celery's name
    """Run every ``run_every`` (seconds or a ``timedelta``), counted from the last run.

    Args:
        run_every: the interval.
        relative: round the next run down to the interval's resolution (whole days, hours or minutes).
        nowfun: a function returning the current time (default: the app's ``now``).
        app: the app (default: the current app).
    """

    def __init__(self, run_every: float | timedelta | None = None, relative: bool = False,
                 nowfun: Callable[[], datetime] | None = None, app: Any = None) -> None:
        if run_every is None:
            run_every = timedelta(0)
        self.run_every = run_every if isinstance(run_every, timedelta) else timedelta(seconds=run_every)
        self.relative = relative
        super().__init__(nowfun=nowfun, app=app)

    def remaining_estimate(self, last_run_at: datetime) -> timedelta:
        """Time left until ``last_run_at + run_every`` (negative when overdue), in elapsed time."""
        end = self._utc(last_run_at) + self.run_every
        if self.relative:
            end = _round_down(end.astimezone(self.tz), self.run_every).astimezone(UTC)
        return end - self._utc(self.now())

    def is_due(self, last_run_at: datetime) -> schedstate:
        """``(True, run_every)`` when the interval has passed (the *whole* interval, as in Celery), else
        ``(False, seconds left)``."""
        remaining = max(self.remaining_estimate(last_run_at).total_seconds(), 0)
        if remaining == 0:
            return schedstate(is_due=True, next=self.seconds)
        return schedstate(is_due=False, next=remaining)

    @property
    def seconds(self) -> float:
        """The interval in seconds (never negative)."""
        return max(self.run_every.total_seconds(), 0)

    @property
    def human_seconds(self) -> str:
        """The interval in words: ``30.00 seconds``."""
        return humanize_seconds(self.seconds)

    def __repr__(self) -> str:
        return f"<freq: {self.human_seconds}>"

    def __eq__(self, other: Any) -> bool:
        if isinstance(other, schedule):
            return self.run_every == other.run_every
        return bool(self.run_every == other)

    __hash__ = None  # type: ignore[assignment]  # equal to a timedelta, so not hashable (as in Celery)


def _round_down(moment: datetime, interval: timedelta) -> datetime:
    """``moment`` cut to the interval's resolution: days, hours or minutes (Celery's ``relative``)."""
    seconds = max(interval.total_seconds(), 0)
    if seconds >= 86400:
        return moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if seconds >= 3600:
        return moment.replace(minute=0, second=0, microsecond=0)
    if seconds >= 60:
        return moment.replace(second=0, microsecond=0)
    return moment.replace(microsecond=0)


class crontab(BaseSchedule):  # noqa: N801 - Celery's name
    """Run at the minutes that match all five fields, like a line of a crontab.

    Each field is an int, a string in cron syntax (``'*/15'``, ``'1-5'``, ``'mon-fri'``, ``'0,30'``), or
    an iterable of ints. Sunday is 0 (7 is refused). Unlike Vixie cron, ``day_of_month`` and
    ``day_of_week`` must *both* match when both are restricted, as in Celery.

    Raises:
        ParseException: a string field cannot be parsed (``''``, ``'*/'``, ``'-5'``).
        ValueError: a value is out of range, a name is unknown, or the days never occur in the months.
        TypeError: a field is neither an int, a string nor an iterable.
    """

    def __init__(self, minute: Any = "*", hour: Any = "*", day_of_week: Any = "*",
                 day_of_month: Any = "*", month_of_year: Any = "*", **kwargs: Any) -> None:
        self._orig = tuple("*" if spec is None else spec
                           for spec in (minute, hour, day_of_month, month_of_year, day_of_week))
        self._orig_minute, self._orig_hour, self._orig_day_of_month, self._orig_month_of_year, \
            self._orig_day_of_week = self._orig
        self.minute = _expand(self._orig_minute, 60, 0)
        self.hour = _expand(self._orig_hour, 24, 0)
        self.day_of_week = _expand(self._orig_day_of_week, 7, 0)
        self.day_of_month = _expand(self._orig_day_of_month, 31, 1)
        self.month_of_year = _expand(self._orig_month_of_year, 12, 1)
        if not any(day <= _MONTH_DAYS[month] for month in self.month_of_year for day in self.day_of_month):
            raise ValueError(f"Invalid crontab: day_of_month '{self._orig_day_of_month}' never occurs in "
                             f"month_of_year '{self._orig_month_of_year}'")
        self._times = sorted((h, m) for h in self.hour for m in self.minute)
        super().__init__(**kwargs)

    @classmethod
    def from_string(cls, text: str) -> crontab:
        """Build a crontab from a cron line's five fields, in cron's order: ``'m h dom mon dow'``."""
        fields = text.split()
        if len(fields) != 5:
            raise ValueError(f"Invalid crontab string {text!r}: expected 5 fields "
                             f"'minute hour day_of_month month_of_year day_of_week', got {len(fields)}")
        minute, hour, day_of_month, month_of_year, day_of_week = fields
        return cls(minute, hour, day_of_week, day_of_month, month_of_year)

    def __repr__(self) -> str:
        return "<crontab: {} {} {} {} {} (m/h/dM/MY/d)>".format(*self._orig)

    def __eq__(self, other: Any) -> bool:
        if isinstance(other, crontab):
            return (other.month_of_year == self.month_of_year and other.day_of_month == self.day_of_month
                    and other.day_of_week == self.day_of_week and other.hour == self.hour
                    and other.minute == self.minute and super().__eq__(other))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def _day_matches(self, day: date) -> bool:
        return (day.month in self.month_of_year and day.day in self.day_of_month
                and day.isoweekday() % 7 in self.day_of_week)

    def next_after(self, moment: datetime) -> datetime:
        """The first matching instant strictly after ``moment``, in the schedule's zone.

        The fields are matched on the zone's wall clock. A wall-clock time that occurs twice (when the
        clocks go back) counts at its first occurrence unless that is not after ``moment``.
        """
        tz, after = self.tz, self._utc(moment)
        local = after.astimezone(tz)
        today, now_hm = local.date(), (local.hour, local.minute)
        day = today
        for _ in range(_MAX_DAYS):
            if self._day_matches(day):
                for hm in self._times:
                    if day == today and hm <= now_hm:
                        continue
                    wall = datetime.combine(day, time(*hm))
                    for fold in (0, 1):
                        instant = wall.replace(tzinfo=tz, fold=fold)
                        if instant.astimezone(UTC) > after:
                            return instant
            day += _ONE_DAY
        raise RuntimeError(f"{self!r} matches no time within 400 years")

    def last_at_or_before(self, moment: datetime) -> datetime:
        """The last matching instant at or before ``moment`` (used for ``beat_cron_starting_deadline``)."""
        tz, until = self.tz, self._utc(moment)
        local = until.astimezone(tz)
        today, now_hm = local.date(), (local.hour, local.minute)
        day = today
        for _ in range(_MAX_DAYS):
            if self._day_matches(day):
                for hm in reversed(self._times):
                    if day == today and hm > now_hm:
                        continue
                    wall = datetime.combine(day, time(*hm))
                    for fold in (1, 0):
                        instant = wall.replace(tzinfo=tz, fold=fold)
                        if instant.astimezone(UTC) <= until:
                            return instant
            day -= _ONE_DAY
        raise RuntimeError(f"{self!r} matched no time in the last 400 years")

    def remaining_estimate(self, last_run_at: datetime) -> timedelta:
        """Time from now until the first match after ``last_run_at`` (negative when overdue)."""
        return self._utc(self.next_after(last_run_at)) - self._utc(self.now())

    def is_due(self, last_run_at: datetime) -> schedstate:
        """``(True, seconds to the next match after now)`` when a match after ``last_run_at`` has passed,
        else ``(False, seconds to that match)``.

        With ``beat_cron_starting_deadline = D``, a passed match that is more than D seconds old does not
        run: the result is ``(False, seconds to the next match after now)``.
        """
        now = self._utc(self.now())
        remaining = (self._utc(self.next_after(last_run_at)) - now).total_seconds()
        due = remaining <= 0
        deadline = self.app.conf.get("beat_cron_starting_deadline")
        if due and deadline is not None:
            missed_by = (now - self._utc(self.last_at_or_before(now))).total_seconds()
            due = missed_by <= deadline
            remaining = 0  # passed: look from now on, as for a due run
        if remaining <= 0:
            remaining = (self._utc(self.next_after(now)) - now).total_seconds()
        return schedstate(is_due=due, next=max(remaining, 0))


def _expand(spec: Any, max_: int, min_: int) -> set[int]:
    """One crontab field as the set of values it matches, checked against ``min_..min_+max_-1``."""
    if isinstance(spec, int):
        result = {spec}
    elif isinstance(spec, str):
        result = crontab_parser(max_, min_).parse(spec)
    elif isinstance(spec, Iterable):
        result = set(spec)
    else:
        raise TypeError(CRON_INVALID_TYPE.format(type=type(spec)))
    for number in result:
        if not isinstance(number, int) or number >= max_ + min_ or number < min_:
            raise ValueError(CRON_PATTERN_INVALID.format(min=min_, max=max_ - 1 + min_, value=number))
    if not result:
        raise ValueError(f"Invalid crontab pattern: {spec!r} matches no value")
    return result


def maybe_schedule(value: Any, relative: bool = False, app: Any = None) -> Any:
    """A schedule for ``value``: seconds and timedeltas become ``schedule``; a schedule gets ``app``."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = timedelta(seconds=value)
    if isinstance(value, timedelta):
        return schedule(value, relative, app=app)
    if not hasattr(value, "is_due"):
        raise TypeError(f"a schedule must be seconds, a timedelta, a schedule or a crontab, not {value!r}")
    if app is not None:
        value.app = app
    return value
