"""When a rule is active: local time-of-day ranges, weekdays and holidays (``Schedule`` in a pack).

The check is made on each event's own time, converted to the rule's timezone (the schedule's
``timezone``, else the pack's). Weekdays and holidays are judged by the event's **local date**:
the 00:00-06:00 part of a ``22:00-06:00`` night belongs to the next date, so on a holiday
``2026-10-01`` a night rule is off from 00:00 to 24:00 local time on that date.
"""

from __future__ import annotations

from datetime import datetime, time
from zoneinfo import ZoneInfo

from rules.spec import WEEKDAYS, Schedule


class ScheduleCheck:
    """A compiled schedule: ``active(ts)`` for an aware datetime."""

    def __init__(self, schedule: Schedule, default_tz: str) -> None:
        self.tz = ZoneInfo(schedule.timezone or default_tz)
        self.ranges: list[tuple[time, time]] = []
        for text in schedule.hours:
            a, b = text.split("-")
            self.ranges.append((time.fromisoformat(a), time.fromisoformat(b) if b != "24:00" else time.max))
        self.days = {WEEKDAYS.index(d) for d in schedule.weekdays}
        self.holidays = set(schedule.holidays)

    def active(self, ts: datetime) -> bool:
        """Whether the rule is active at ``ts``: start of a range included, its end excluded."""
        local = ts.astimezone(self.tz)
        if local.date() in self.holidays:
            return False
        if self.days and local.weekday() not in self.days:
            return False
        if not self.ranges:
            return True
        now = local.time()
        return any((a <= now < b) if a < b else (now >= a or now < b) for a, b in self.ranges)
