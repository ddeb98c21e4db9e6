"""window: an aggregate of matching events per group in tumbling or sliding event-time windows.

Aggregates: count, sum, avg, min, max, distinct (count of distinct ``distinct_field`` values).
Groups: zone (of ``layer``), sensor/subject, or H3 cell. Sliding windows are hopping windows of
length ``window`` every ``slide``. Sums use integer micro-units, so they do not depend on order.

Monotone aggregates (count, distinct and max going up, min going down) fire as soon as they cross;
the others (sum, avg, or a falling count) are judged when the window closes: once the watermark
passes the window end plus the allowed lateness. Both give the same result in replay and stream.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any, Literal

import h3
from pydantic import Field, model_validator

from rules.duration import Duration
from rules.fields import AnyField, NumericField
from rules.kinds.base import OPS, Kind, Scope, build_incident
from rules.model import Enriched
from rules.routes import routing_layer
from rules.spec import FieldRef, Op, RuleBase
from rules.state import Entry, admit, copy_entry

DISTINCT_CAP = 10_000
#: Most overlapping windows a sliding window may keep per group (window / slide): every event
#: updates each of them, so a day every second (86,400) would stall a worker. A day every minute,
#: or an hour every 2.5 s, is the limit.
MAX_HOPS = 1440


class WindowRule(RuleBase):
    """Fires when ``aggregate(field) op value`` over a window of one group."""

    kind: Literal["window"]
    aggregate: Literal["count", "sum", "avg", "min", "max", "distinct"] = "count"
    field: NumericField = Field(default="value", description="Numeric field for sum/avg/min/max.")
    distinct_field: AnyField = Field(default="subject", description="For distinct: which field's values are counted.")
    window: Duration = Field(description="Window length; windows are aligned to the UTC epoch.")
    slide: Duration | None = Field(default=None, description="Hop of a sliding window (divides window).")
    group_by: Literal["zone", "sensor", "cell"] = "zone"
    h3_resolution: int = Field(default=8, ge=0, le=15, description="For group_by: cell.")
    min_events: int = Field(default=1, ge=1, description="Windows with fewer events never fire (for avg).")
    op: Op = ">="
    value: float

    @model_validator(mode="after")
    def _check(self) -> WindowRule:
        if self.group_by == "zone" and self.layer is None:
            raise ValueError("a window rule grouped by zone needs a 'layer'")
        if self.aggregate in ("count", "distinct") and self.op in (">", ">=") and self.value < 0:
            raise ValueError(f"a count threshold of {self.value} is always crossed")
        if self.slide is not None:
            w, s = self.window.total_seconds(), self.slide.total_seconds()
            if s > w or (w * 1000) % (s * 1000):
                raise ValueError(f"slide {self.slide} must divide the window {self.window}")
            if w / s > MAX_HOPS:
                raise ValueError(
                    f"a window of {self.window} every {self.slide} keeps {w / s:.0f} overlapping windows per group, "
                    f"each updated by every event; at most {MAX_HOPS}: make the slide at least "
                    f"{timedelta(seconds=w / MAX_HOPS)}"
                )
        return self

    def field_refs(self) -> list[FieldRef]:
        refs = super().field_refs()
        if self.aggregate in ("sum", "avg", "min", "max"):
            refs.append(FieldRef(("field",), self.field))
        elif self.aggregate == "distinct":
            refs.append(FieldRef(("distinct_field",), self.distinct_field, numeric=False))
        return refs

    @property
    def key_shared(self) -> bool:
        return self.group_by != "sensor"

    @property
    def monotone(self) -> bool:
        up = self.op in (">", ">=")
        return (self.aggregate in ("count", "distinct", "max") and up) or (self.aggregate == "min" and not up)


class Window(Kind):
    rule: WindowRule
    reads_columns = True

    def __init__(self, rule: WindowRule, ctx: Any) -> None:
        super().__init__(rule, ctx)
        self.size_ms = int(rule.window.total_seconds() * 1000)
        self.hop_ms = int(rule.slide.total_seconds() * 1000) if rule.slide else self.size_ms
        self.compare = OPS[rule.op]
        self._persistent = self.persistent
        self._closing = self.time_driven
        self._monotone = rule.monotone
        # Groups that are not the routing zone (an H3 cell, a zone of another layer) can hold events
        # of several partitions: such a rule is spread, and only the partition owning a group keeps
        # its windows (so ticks, expiry and emission happen there, once).
        self.spreading = rule.group_by == "cell" or (
            rule.group_by == "zone" and rule.layer != routing_layer(ctx.layers)
        )

    def _group(self, zone: str | None, subject: str, lon: float, lat: float) -> tuple[str, str | None] | None:
        """The group of an event (its zone, sensor or H3 cell) and the zone it keeps, or None."""
        if self.rule.group_by == "zone":
            return (zone, zone) if zone else None
        if self.rule.group_by == "sensor":
            return subject, zone
        cell = h3.latlng_to_cell(lat, lon, self.rule.h3_resolution)
        return str(cell), zone

    def feed(self, items: Sequence[Enriched], ts_ms: Sequence[int], scope: Scope) -> None:
        rule = self.rule
        # A window that fires keeps firing as events are added (a count going up): only its last
        # snapshot of the batch counts (the highest revision), so it is built once, at the end,
        # in the order the windows first fired.
        firing: dict[str, Entry] | None = {} if self._persistent else None
        needs_value = rule.aggregate in ("sum", "avg", "min", "max")
        facts = self.facts(items, rule.field)
        distinct_of_subject = rule.aggregate == "distinct" and rule.distinct_field == "subject"
        distinct_of_other = rule.aggregate == "distinct" and not distinct_of_subject
        by_zone = rule.group_by == "zone"
        spreading = self.spreading
        hop_ms, size_ms = self.hop_ms, self.size_ms
        # A window judged at close is marked closed=False until then, so Engine.expire keeps it.
        closing = self._closing
        prefix = f"{self.state_prefix}|"  # self.key(group, start), without a call per window
        load = scope.load
        for n, (found, zone, subject, event_id, lon, lat) in enumerate(facts):
            if by_zone:
                if not zone:
                    continue
                key_of = zone
            else:
                group = self._group(zone, subject, lon, lat)
                if group is None:
                    continue
                key_of, zone = group
            if spreading and not self.owns_group(scope, key_of):
                continue  # another partition owns this group (and gets this event too)
            if found is None and needs_value:
                continue
            raw = 1.0 if found is None else found  # counts keep the event's value as evidence when it has one
            distinct = None
            if distinct_of_subject:
                distinct = subject
            elif distinct_of_other:  # the event is built only for a field other than the subject
                distinct = str(getattr(items[n].event, rule.distinct_field, subject))
            ts = ts_ms[n]
            last_start = ts - ts % hop_ms  # bucket_of
            for start in range(last_start, last_start - size_ms, -hop_ms):
                if ts >= start + size_ms:
                    continue
                key = f"{prefix}{key_of}|{start}"
                entry, fresh = load(key, _new, copy_entry, (key_of, zone, start, start + size_ms, closing))
                if fresh and _fold(entry, ts, event_id, lon, lat, raw, distinct, zone):
                    scope.put(key, entry)
                if firing is not None:
                    if key not in firing and self._fires(entry):
                        firing[key] = entry
                    continue
                snap = self._evaluate(entry, closing=False)
                if snap is not None:
                    scope.emit(snap)
        for entry in (firing or {}).values():
            scope.emit(self._evaluate(entry, closing=False))

    @property
    def persistent(self) -> bool:
        """Whether a window that fires keeps firing whatever events are added to it."""
        rule = self.rule
        up = rule.op in (">", ">=")
        return (rule.aggregate in ("count", "distinct", "max") and up) or (
            rule.aggregate == "min" and rule.op in ("<", "<=")
        )

    def _fires(self, entry: dict[str, Any]) -> bool:
        """``_evaluate(entry, closing=False) is not None``, without building the incident."""
        if int(entry["n"]) < self.rule.min_events or not entry["ev"]:
            return False
        if not self._monotone and not entry.get("closed"):
            return False
        return self.compare(self.value_of(entry), self.rule.value)

    @property
    def time_driven(self) -> bool:
        return not self.rule.monotone

    def tick(self, scope: Scope, watermark_ms: int, keys: Sequence[str]) -> None:
        for key in keys:
            entry = scope.get(key, copy_entry)
            if entry is None or entry.get("closed") or int(entry["end"]) + self.ctx.lateness_ms > watermark_ms:
                continue
            entry["closed"] = True
            scope.put(key, entry)
            snap = self._evaluate(entry, closing=True)
            if snap is not None:
                scope.emit(snap)

    def value_of(self, entry: dict[str, Any]) -> float:
        agg = self.rule.aggregate
        if agg == "count":
            return float(entry["n"])
        if agg == "distinct":
            return float(len(entry["d"]))
        if agg == "sum":
            return int(entry["sum"]) / 1e6
        if agg == "avg":
            return round(int(entry["sum"]) / 1e6 / max(1, int(entry["n"])), 6)
        return float(entry["min"] if agg == "min" else entry["max"])

    def _evaluate(self, entry: dict[str, Any], *, closing: bool) -> Any:
        rule = self.rule
        if int(entry["n"]) < rule.min_events or not entry["ev"]:
            return None
        if not self._monotone and not (closing or entry.get("closed")):
            return None
        value = self.value_of(entry)
        if not self.compare(value, rule.value):
            return None
        return build_incident(
            self.ctx,
            rule,
            subject=str(entry["subj"]),
            start_ms=int(entry["start"]),
            end_ms=int(entry["end"]),
            entry=entry,
            value=value,
            threshold=rule.value,
            op=rule.op,
            zone=entry.get("zone"),
            higher_is_worse=rule.op in (">", ">="),
            details={"aggregate": rule.aggregate, "group_by": rule.group_by, "window_ms": self.size_ms},
        )


def _new(subject: str, zone: str | None, start: int, end: int, closing: bool) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "n": 0,
        "sum": 0,
        "min": None,
        "max": None,
        "d": [],
        "ev": [],
        "start": start,
        "end": end,
        "subj": subject,
        "zone": zone,
        "last": start,
        "pos": {},
        "x": None,
    }
    if closing:
        entry["closed"] = False
    return entry


def _fold(
    entry: dict[str, Any],
    ts: int,
    event_id: str,
    lon: float,
    lat: float,
    value: float,
    distinct: str | None,
    zone: str | None,
) -> bool:
    if not admit(entry, [ts, event_id, value, lon, lat]):
        return False
    entry["n"] += 1
    entry["sum"] += round(value * 1e6)
    entry["min"] = value if entry["min"] is None else min(entry["min"], value)
    entry["max"] = value if entry["max"] is None else max(entry["max"], value)
    if distinct is not None and distinct not in entry["d"] and len(entry["d"]) < DISTINCT_CAP:
        entry["d"].append(distinct)
        entry["d"].sort()
    entry["last"] = max(int(entry["last"]), ts)
    first = entry["ev"][0]
    if zone is not None and first[0] == ts and first[1] == event_id:
        entry["zone"] = zone
    return True
