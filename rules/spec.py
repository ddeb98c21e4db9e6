"""What every rule has in common: identity, matching, schedule, escalation."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from rules.duration import Duration, format_duration
from rules.fields import NumericField
from rules.model import EVENT_KINDS

RuleId = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,79}$", description="Stable rule id.")]
Severity = Literal["info", "low", "medium", "high", "critical"]
SEVERITIES: tuple[Severity, ...] = ("info", "low", "medium", "high", "critical")
Op = Literal[">", ">=", "<", "<=", "==", "!="]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
#: The longest ``cooldown`` or ``auto_resolve``: a key's chain is kept that long after its last activity.
MAX_COOLDOWN = timedelta(days=7)
_HOURS = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-4]):([0-5]\d)$")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Match(Strict):
    """Which events a rule looks at. Every given field must equal the event's own field."""

    kind: Literal["reading", "report", "track"] | None = None
    metric: str | None = None
    category: str | None = None
    categories: list[str] | None = Field(default=None, description="Any of these report categories.")
    object_type: str | None = None
    zones: list[str] | None = Field(default=None, description="Only events in these zone ids of the rule's layer.")

    def takes(self, kind: str, value: str | None) -> bool:
        """Whether this match could accept an event of this kind with this metric/category/object type.

        ``self.kind`` is not compared here (the selection index groups events by kind first).
        """
        if kind == "reading":
            if self.category is not None or self.categories is not None or self.object_type is not None:
                return False
            return self.metric is None or self.metric == value
        if kind == "report":
            if self.metric is not None or self.object_type is not None:
                return False
            if self.category is not None and self.category != value:
                return False
            return self.categories is None or value in self.categories
        if self.metric is not None or self.category is not None or self.categories is not None:
            return False
        return self.object_type is None or self.object_type == value

    def overlaps(self, other: Match) -> bool:
        """Whether some event could be taken by both matches (by kind and metric/category/object type)."""
        own = {"reading": self.metric, "report": self.category, "track": self.object_type}
        for kind in self.kinds():
            if kind not in other.kinds():
                continue
            values = [own[kind]] if own[kind] is not None else list(self.categories or []) if kind == "report" else []
            if not values:  # any metric (category, object type) of this kind: other takes some of them
                return True
            if any(other.takes(kind, v) for v in values):
                return True
        return False

    def kinds(self) -> tuple[str, ...]:
        """The event kinds this match can take (a metric means readings, a category reports, ...):
        those whose events carrying the match's own metric, category or object type it ``takes``."""
        own = {
            "reading": self.metric,
            "report": self.category or (self.categories[0] if self.categories else None),
            "track": self.object_type,
        }
        return tuple(k for k in EVENT_KINDS if self.kind in (None, k) and self.takes(k, own[k]))


@dataclass(frozen=True)
class FieldRef:
    """An event field a rule reads, and where in the rule it is named (checked by ``rules.pack``)."""

    loc: tuple[str | int, ...]
    name: str
    #: A number compared or aggregated; otherwise any field (a distinct count's).
    numeric: bool = True
    #: False: the rule does without it when an event lacks it, so only an unknown name is wrong.
    needed: bool = True
    #: The event kinds it is read from, when not those the rule's ``match`` takes.
    kinds: tuple[str, ...] | None = None


class Condition(Strict):
    """A comparison of a numeric event field, e.g. ``{field: speed_mps, op: "<", value: 0.5}``."""

    field: NumericField = "value"
    op: Op = ">"
    value: float


class Schedule(Strict):
    """When a rule is active, in the pack's timezone (or ``timezone``). Events outside are ignored."""

    timezone: str | None = None
    hours: list[str] = Field(
        default_factory=list, description="Local time ranges 'HH:MM-HH:MM'; a range may wrap midnight (22:00-06:00)."
    )
    weekdays: list[Weekday] = Field(default_factory=list, description="Active weekdays (empty: every day).")
    holidays: list[date] = Field(default_factory=list, description="Dates on which the rule is not active.")

    @field_validator("hours")
    @classmethod
    def _check_hours(cls, value: list[str]) -> list[str]:
        for item in value:
            if not _HOURS.match(item):
                raise ValueError(f"{item!r} is not a time range like '22:00-06:00'")
            start, end = item.split("-")
            if start == end:
                raise ValueError(f"time range {item!r} is empty")
        return value


class Step(Strict):
    """An escalation step: the severity rises to ``severity`` once every given condition holds."""

    severity: Severity
    value: float | None = Field(default=None, description="The observed value passes this (in the rule's direction).")
    count: int | None = Field(default=None, ge=1, description="At least this many contributing events.")
    after: Duration | None = Field(default=None, description="The incident has lasted this long (event time).")
    within_m: float | None = Field(default=None, gt=0, description="proximity: the nearest feature is this close.")


class RuleBase(Strict):
    id: RuleId
    version: int = Field(default=1, ge=1)
    title: str = Field(min_length=1, max_length=200)
    description: str = ""
    severity: Severity = "medium"
    category: str = Field(min_length=1, max_length=64)
    match: Match = Field(default_factory=Match)
    when: list[Condition] = Field(default_factory=list, description="Extra conditions every event must meet.")
    layer: str | None = Field(default=None, description="Zone layer the rule is scoped to and reports.")
    schedule: Schedule | None = None
    escalate: list[Step] = Field(default_factory=list, description="Severity steps, checked in order.")
    # A timedelta default, as sustained's resolve_after: parse_duration rejects "0s".
    cooldown: Duration = Field(
        default=timedelta(0),
        json_schema_extra={"default": "0s"},
        description="A new firing of the same dedup key less than this after the previous incident was last "
        "active is counted on that incident instead of opening a new one (0s: off). At most 7d.",
    )

    auto_resolve: Duration = Field(
        default=timedelta(0),
        json_schema_extra={"default": "0s"},
        description="An incident no event has updated for this long resolves (0s: off). For incidents that do "
        "not resolve by themselves (threshold, window, cluster, proximity, correlation, geofence crossings); "
        "announced once the incident can no longer change. At most 7d.",
    )

    @property
    def key_shared(self) -> bool:
        """Whether one dedup key gathers the events of several sources (a zone, cell or block of cells).

        Live, such a key's events can reach the worker through several raw partitions, so its firings
        may be judged out of event-time order; with a ``cooldown`` the chains then depend on that order
        (``rules.pack.caveats``). Per-subject keys (a sensor, an object) keep their order.
        """
        return False

    @field_validator("cooldown", "auto_resolve")
    @classmethod
    def _at_most_the_longest(cls, value: timedelta, info: ValidationInfo) -> timedelta:
        if value > MAX_COOLDOWN:
            longest = format_duration(MAX_COOLDOWN)
            raise ValueError(f"{info.field_name} {format_duration(value)} is longer than the longest, {longest}")
        return value

    def field_refs(self) -> list[FieldRef]:
        """The event fields this rule reads; a kind adds its own to its ``when`` conditions'."""
        return [FieldRef(("when", i, "field"), c.field) for i, c in enumerate(self.when)]

    @property
    def needs_zone(self) -> bool:
        """Whether an event must lie in a zone of ``layer`` to count."""
        return self.layer is not None
