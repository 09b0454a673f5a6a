"""The parser of one crontab field: ``'1,13,30-45,50-59/2'`` → ``{1, 13, 30, ..., 58}``.

A field is a comma-separated list of parts; each part is ``*``, ``*/n``, ``a``, ``a-b`` or ``a-b/n``.
A range whose end is below its start wraps around (``fri-mon`` → Friday to Monday). Names are matched by
their first three letters, months before weekdays, as in Celery (so the weekday ``'mar'`` is 3). The
errors are Celery's: :class:`ParseException` (not a ValueError) for a part that cannot be read, and
ValueError for a value out of range or an unknown name. Celery's counterpart is
``celery.schedules.crontab_parser``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from .exceptions import ParseException

__all__ = ["crontab_parser", "ParseException"]

_MONTHS = {name: number for number, name in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1)}
_WEEKDAYS = {name: number for number, name in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}

# Matched at the start of a part, like Celery's patterns: so '1-3-5' reads as 1-3 (lenient, as observed).
_RANGE_STEPS = re.compile(r"(\w+?)-(\w+)/(\w+)?")
_RANGE = re.compile(r"(\w+?)-(\w+)")
_STAR_STEPS = re.compile(r"\*/(\w+)?")
_STAR = re.compile(r"^\*$")


class crontab_parser:  # noqa: N801 - Celery's name
    """Expands one field whose values run from ``min_`` to ``min_ + max_ - 1``.

    ``crontab_parser(60).parse('*/15')`` → ``{0, 15, 30, 45}``; ``crontab_parser(31, 1)`` reads days of
    the month, ``crontab_parser(12, 1)`` months, ``crontab_parser(7)`` weekdays.
    """

    ParseException = ParseException

    def __init__(self, max_: int = 60, min_: int = 0) -> None:
        self.max_ = max_
        self.min_ = min_
        self._patterns: tuple[tuple[re.Pattern[str], Callable[[Sequence[str | None]], list[int]]], ...] = (
            (_RANGE_STEPS, self._range_steps), (_RANGE, self._range),
            (_STAR_STEPS, self._star_steps), (_STAR, lambda groups: self._star()),
        )

    def parse(self, spec: str) -> set[int]:
        """The set of values ``spec`` matches.

        Raises:
            ParseException: an empty part (``''``, ``'1,'``), a step without a number (``'*/'``) or a
                negative number.
            ValueError: a value out of range, a step of zero, or an unknown name.
        """
        values: set[int] = set()
        for part in spec.split(","):
            if not part:
                raise ParseException("empty part")
            values.update(self._part(part))
        return values

    def _part(self, part: str) -> list[int]:
        for pattern, expand in self._patterns:
            found = pattern.match(part)
            if found:
                return expand(found.groups())
        return self._range((part,))

    def _range(self, groups: Sequence[str | None]) -> list[int]:
        start = self._number(groups[0])
        if len(groups) < 2:
            return [start]
        end = self._number(groups[1])
        if end < start:  # wrap around: fri-mon, dec-feb
            return list(range(start, self.min_ + self.max_)) + list(range(self.min_, end + 1))
        return list(range(start, end + 1))

    def _range_steps(self, groups: Sequence[str | None]) -> list[int]:
        if not groups[2]:
            raise ParseException("empty filter")
        return self._stepped(self._range(groups[:2]), groups[2])

    def _star_steps(self, groups: Sequence[str | None]) -> list[int]:
        if not groups[0]:
            raise ParseException("empty filter")
        return self._stepped(self._star(), groups[0])

    @staticmethod
    def _stepped(values: list[int], step: str) -> list[int]:
        count = int(step)
        if count == 0:
            raise ValueError("slice step cannot be zero")
        return values[::count]

    def _star(self) -> list[int]:
        return list(range(self.min_, self.max_ + self.min_))

    def _number(self, text: str | None) -> int:
        text = text or ""
        if text.startswith("-"):
            raise ParseException("negative numbers not supported")
        try:
            value = int(text)
        except ValueError:
            abbreviation = text[:3].lower()
            if abbreviation in _MONTHS:
                value = _MONTHS[abbreviation]
            elif abbreviation in _WEEKDAYS:
                value = _WEEKDAYS[abbreviation]
            else:
                raise ValueError(f"Invalid weekday literal {text!r}.") from None
        highest = self.min_ + self.max_ - 1
        if value > highest:
            raise ValueError(f"Invalid end range: {value} > {highest}.")
        if value < self.min_:
            raise ValueError(f"Invalid beginning range: {value} < {self.min_}.")
        return value
