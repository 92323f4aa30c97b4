"""Five-field cron expressions (minute hour day-of-month month day-of-week), pure.

Supports ``*``, numbers, ranges ``a-b``, lists ``a,b`` and steps ``*/n`` or
``a-b/n`` -- what Cloud Scheduler jobs in the topology use. Day-of-week 0 and
7 are Sunday. As in cron, when both day fields are restricted a time matches
if either does.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

_BOUNDS = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))


def _parse_field(text: str, lo: int, hi: int) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        rng, _, step_s = part.partition("/")
        step = int(step_s) if step_s else 1
        if step < 1:
            raise ValueError(f"bad step in {text!r}")
        if rng == "*":
            a, b = lo, hi
        elif "-" in rng:
            a_s, b_s = rng.split("-", 1)
            a, b = int(a_s), int(b_s)
        else:
            a = b = int(rng)
            if step_s:
                b = hi
        if not (lo <= a <= b <= hi):
            raise ValueError(f"{text!r} is out of range {lo}-{hi}")
        values.update(range(a, b + 1, step))
    return frozenset(values)


@dataclass(frozen=True)
class Cron:
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    any_day: bool
    any_weekday: bool

    @classmethod
    def parse(cls, expr: str) -> Cron:
        parts = expr.split()
        if len(parts) != 5:
            raise ValueError(f"cron expression {expr!r} must have 5 fields")
        fields = [_parse_field(p, lo, hi) for p, (lo, hi) in zip(parts, _BOUNDS, strict=True)]
        weekdays = frozenset(0 if d == 7 else d for d in fields[4])
        return cls(fields[0], fields[1], fields[2], fields[3], weekdays, parts[2] == "*", parts[4] == "*")

    def _day_ok(self, t: datetime) -> bool:
        day_ok = t.day in self.days
        weekday_ok = (t.isoweekday() % 7) in self.weekdays
        if self.any_day and self.any_weekday:
            return True
        if self.any_day:
            return weekday_ok
        if self.any_weekday:
            return day_ok
        return day_ok or weekday_ok

    def matches(self, t: datetime) -> bool:
        return t.month in self.months and self._day_ok(t) and t.hour in self.hours and t.minute in self.minutes

    def next_after(self, t: datetime) -> datetime:
        """The first matching minute strictly after ``t``."""
        cand = t.replace(second=0, microsecond=0) + timedelta(minutes=1)
        limit = cand + timedelta(days=366 * 5)
        while cand < limit:
            if cand.month not in self.months or not self._day_ok(cand):
                cand = (cand + timedelta(days=1)).replace(hour=0, minute=0)
            elif cand.hour not in self.hours:
                cand = (cand + timedelta(hours=1)).replace(minute=0)
            elif cand.minute not in self.minutes:
                cand += timedelta(minutes=1)
            else:
                return cand
        raise ValueError("cron expression never matches")
