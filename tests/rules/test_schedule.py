"""Schedules: local time ranges that may wrap midnight, weekdays and holidays, in the city's timezone."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from rulekit import T0, fire, make_pack, reading

from rules.schedule import ScheduleCheck
from rules.spec import WEEKDAYS, Schedule

SHANGHAI = ZoneInfo("Asia/Shanghai")


def _local(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=SHANGHAI)


def _active(schedule: Schedule, text: str, tz: str = "Asia/Shanghai") -> bool:
    return ScheduleCheck(schedule, tz).active(_local(text).astimezone(UTC))


NIGHT = Schedule(hours=["22:00-06:00"])


@pytest.mark.parametrize(
    ("local", "active"),
    [
        ("2026-07-01T21:59:59", False),
        ("2026-07-01T22:00:00", True),  # the start is included
        ("2026-07-01T23:59:59", True),
        ("2026-07-02T00:00:00", True),  # across midnight
        ("2026-07-02T05:59:59", True),
        ("2026-07-02T06:00:00", False),  # the end is excluded
        ("2026-07-02T12:00:00", False),
    ],
)
def test_a_night_range_wraps_midnight_in_shanghai_time(local: str, active: bool) -> None:
    assert _active(NIGHT, local) is active


def test_utc_instants_are_judged_in_the_pack_timezone() -> None:
    check = ScheduleCheck(NIGHT, "Asia/Shanghai")
    assert check.active(datetime(2026, 7, 1, 14, 0, tzinfo=UTC))  # 22:00 in Wuhan
    assert not check.active(datetime(2026, 7, 1, 13, 59, tzinfo=UTC))
    utc_night = ScheduleCheck(Schedule(hours=["22:00-06:00"], timezone="UTC"), "Asia/Shanghai")
    assert utc_night.active(datetime(2026, 7, 1, 23, 0, tzinfo=UTC))  # the schedule's own timezone wins
    assert not utc_night.active(datetime(2026, 7, 1, 14, 0, tzinfo=UTC))


def test_weekdays_are_judged_by_the_local_date_of_the_event() -> None:
    weeknights = Schedule(hours=["22:00-06:00"], weekdays=["mon", "tue", "wed", "thu", "fri"])
    assert _active(weeknights, "2026-07-03T23:00:00")  # Friday night
    assert not _active(weeknights, "2026-07-04T01:00:00")  # ... after midnight it is Saturday
    assert not _active(weeknights, "2026-07-05T23:00:00")  # Sunday
    assert _active(weeknights, "2026-07-06T01:00:00")  # Monday morning
    assert _active(Schedule(weekdays=["sat"]), "2026-07-04T12:00:00")  # no hours: all day


def test_holidays_switch_the_rule_off_for_their_whole_local_date() -> None:
    national_day = Schedule(hours=["22:00-06:00"], holidays=[date(2026, 10, 1)])
    assert _active(national_day, "2026-09-30T23:00:00")
    assert not _active(national_day, "2026-10-01T01:00:00")
    assert not _active(national_day, "2026-10-01T23:00:00")
    assert _active(national_day, "2026-10-02T01:00:00")


def test_a_range_may_end_at_24_00_and_several_ranges_combine() -> None:
    evening = Schedule(hours=["07:00-09:00", "18:00-24:00"])
    assert _active(evening, "2026-07-01T23:59:00")
    assert not _active(evening, "2026-07-02T00:00:00")
    assert _active(evening, "2026-07-02T08:30:00")
    assert not _active(evening, "2026-07-02T12:00:00")


@pytest.mark.parametrize("hours", ["25:00-06:00", "22:00", "22:00-22:00", "9:00-10:00"])
def test_bad_time_ranges_are_rejected(hours: str) -> None:
    with pytest.raises(ValidationError):
        Schedule(hours=[hours])


def _minutes(text: str) -> int:
    h, m = text.split(":")
    return int(h) * 60 + int(m)


@given(
    start=st.integers(0, 24 * 60 - 1),
    end=st.integers(1, 24 * 60),
    at=st.integers(0, 14 * 24 * 60 - 1),
    days=st.sets(st.sampled_from(WEEKDAYS)),
)
@settings(max_examples=300, deadline=None)
def test_the_schedule_agrees_with_minute_arithmetic(start: int, end: int, at: int, days: set[str]) -> None:
    if start == end:
        return
    text = f"{start // 60:02d}:{start % 60:02d}-{end // 60:02d}:{end % 60:02d}"
    schedule = Schedule(hours=[text], weekdays=sorted(days, key=WEEKDAYS.index))  # type: ignore[arg-type]
    when = _local("2026-07-06T00:00:00") + timedelta(minutes=at)  # a Monday, local time
    minute = at % (24 * 60)
    inside = start <= minute < end if start < end else (minute >= start or minute < end)
    weekday_ok = not days or WEEKDAYS[(at // (24 * 60)) % 7] in days
    assert ScheduleCheck(schedule, "Asia/Shanghai").active(when.astimezone(UTC)) is (inside and weekday_ok)
    assert _minutes(text.split("-")[0]) == start


def test_a_scheduled_rule_ignores_events_outside_its_hours() -> None:
    pack = make_pack(
        """
- id: night.noise
  kind: threshold
  title: Night noise
  category: noise
  match: {kind: reading, metric: m}
  schedule: {hours: ["22:00-06:00"]}
  value: 55
"""
    )
    at = {"day": timedelta(hours=6), "night": timedelta(hours=15)}  # 14:00 and 23:00 in Wuhan (T0 is 08:00)
    assert fire(pack, [reading("d", at["day"], 70)]) == []
    [incident] = fire(pack, [reading("n", at["night"], 70)])
    assert incident.first_event_at == T0 + at["night"]
