"""What every rule kind is given, and what it gives back.

A kind receives the events that match its rule, sorted by (event time, id), together with a
``Scope``: the rule state of this batch. It folds the events into state entries and emits the
latest snapshot of every incident it touched. Time-driven kinds also get ``tick`` calls with the
event-time watermark.
"""

from __future__ import annotations

import hashlib
import math
import operator
from abc import ABC, abstractmethod
from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from rules.columns import DISCRIMINATOR, KINDS, NUMERIC, Rows
from rules.geo import Layer
from rules.model import Enriched, Evidence, Incident, event_value
from rules.schedule import ScheduleCheck
from rules.spec import SEVERITIES, Condition, RuleBase, Severity, Step
from rules.state import Entry, already_applied, from_ms, mark_applied

OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}
EARTH_M = 6_371_008.8
#: What a kind reads of one event (``Kind.facts``): a numeric field's value (None when the event has
#: none), the zone of the rule's layer, the subject, the event id, longitude and latitude.
Fact = tuple[float | None, str | None, str, str, float, float]


def incident_id(pack: str, rule_id: str, subject: str, start_ms: int) -> str:
    """Deterministic incident id: the same rule, subject and window always give the same id."""
    return hashlib.sha256(f"{pack}|{rule_id}|{subject}|{start_ms}".encode()).hexdigest()[:24]


_ABSENT = object()


def field_value(event: Any, name: str) -> float | None:
    """``event_value``, without pydantic's slow lookup of an attribute the event does not have.

    A field of the event is read from its ``__dict__``; a name the event's class does not define
    either (a ``value`` of a report) is None, as ``event_value`` would find.
    """
    raw = event.__dict__.get(name, _ABSENT)
    if raw is _ABSENT:
        return event_value(event, name) if _defines(type(event), name) else None
    if type(raw) is float:
        return raw if math.isfinite(raw) else None
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        return None
    value = float(raw)
    return value if math.isfinite(value) else None


_DEFINES: dict[tuple[type, str], bool] = {}


def _defines(cls: type, name: str) -> bool:
    """``hasattr(cls, name)``, remembered: a pydantic model class answers a name it lacks slowly."""
    key = (cls, name)
    found = _DEFINES.get(key)
    if found is None:
        found = _DEFINES[key] = hasattr(cls, name)
    return found


def metres_between(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    """Great-circle distance in metres (haversine)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_M * math.asin(min(1.0, math.sqrt(a)))


def metres_between_arrays(
    lon1: NDArray[np.float64], lat1: NDArray[np.float64], lon2: NDArray[np.float64], lat2: NDArray[np.float64]
) -> NDArray[np.float64]:
    """``metres_between`` for arrays, element by element."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    a = np.sin((p2 - p1) / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(np.radians(lon2 - lon1) / 2) ** 2
    out: NDArray[np.float64] = 2 * EARTH_M * np.arcsin(np.minimum(1.0, np.sqrt(a)))
    return out


#: How close (relative to the radius) a distance from ``metres_between_arrays`` must come to the
#: radius for ``within_metres`` to recompute it with ``metres_between``. numpy's sin, cos and arcsin
#: may differ from libm's in the last bit (distances then differ by about 3e-16 relative), so only
#: a distance this close to the radius could be decided differently by the two.
RECHECK_MARGIN = 1e-9


def within_metres(
    lon1: NDArray[np.float64],
    lat1: NDArray[np.float64],
    lon2: NDArray[np.float64],
    lat2: NDArray[np.float64],
    radius_m: float,
) -> NDArray[np.bool_]:
    """``metres_between(lon1[i], lat1[i], lon2[i], lat2[i]) <= radius_m`` for every ``i``, exactly.

    Distances are computed with numpy (``metres_between_arrays``); any that is not clearly inside
    or outside the radius (within ``RECHECK_MARGIN`` of it, or NaN) is recomputed with the scalar
    ``metres_between``, so every decision is the scalar's, a point exactly at the radius included.
    """
    dist = metres_between_arrays(lon1, lat1, lon2, lat2)
    margin = abs(radius_m) * RECHECK_MARGIN
    inside: NDArray[np.bool_] = dist <= radius_m - margin
    unsure = ~(inside | (dist > radius_m + margin))
    for i in np.flatnonzero(unsure).tolist():
        inside[i] = metres_between(float(lon1[i]), float(lat1[i]), float(lon2[i]), float(lat2[i])) <= radius_m
    return inside


def metres_to_degrees(metres: float, lat: float) -> float:
    """A conservative (larger) degree distance covering ``metres`` in any direction at ``lat``."""
    return metres / (111_320.0 * max(0.1, math.cos(math.radians(lat))))


@dataclass(frozen=True)
class PackContext:
    """What kinds may know about their pack."""

    pack: str
    version: str
    timezone: str
    lateness_ms: int
    layers: dict[str, Layer]


@dataclass
class Scope:
    """Rule state for one batch: copy-on-touch entries, idempotent per source position."""

    state: MutableMapping[str, Any]
    position: tuple[int, int] | None
    home: int | None = None
    #: With several events partitions: whether this partition owns a spread rule's incident key
    #: (``Kind.spreads``); None (replay, one partition) owns every key.
    owns: Callable[[str], bool] | None = None
    incidents: dict[str, Incident] = field(default_factory=dict)
    #: What every emitted snapshot goes through first (the rule's ``rules.cooldown.Cooldown``); a
    #: snapshot it turns into None is not sent.
    through: Callable[[Scope, Incident], Incident | None] | None = None
    touched: dict[str, Entry] = field(default_factory=dict)
    replayed: set[str] = field(default_factory=set)
    deleted: set[str] = field(default_factory=set)

    def owned(self, key: str) -> bool:
        """Whether this partition emits the incidents of ``key`` (see ``Kind.spreads``)."""
        return self.owns is None or self.owns(key)

    def peek(self, key: str) -> Entry | None:
        """The current entry without copying it: read only, never mutate what this returns."""
        if key in self.touched:
            return self.touched[key]
        if key in self.deleted:
            return None
        return self.state.get(key) or None

    def get(self, key: str, copy: Callable[[Entry], Entry] | None = None) -> Entry | None:
        """The current entry (a private copy, made by ``copy`` when the kind knows a cheaper one), or None."""
        if key in self.touched:
            return self.touched[key]
        stored = self.state.get(key)
        return (copy or _copy)(stored) if stored else None

    def load(
        self,
        key: str,
        factory: Callable[..., Entry],
        copy: Callable[[Entry], Entry] | None = None,
        args: tuple[Any, ...] = (),
    ) -> tuple[Entry, bool]:
        """The entry to update and whether this batch may change it.

        False means the source message was applied to this entry before (a re-delivery): the
        kind must not change it, only re-emit its snapshot. ``copy`` replaces the generic copy
        for a kind whose entries it knows (it must copy every container the kind changes in place).
        A new entry is ``factory(*args)`` (arguments rather than a closure per call: hot loops).
        """
        touched = self.touched.get(key)  # entries are never None
        if touched is not None:
            return touched, True
        if key in self.replayed:
            entry = self.get(key, copy)
            return (entry if entry is not None else factory(*args)), False
        stored = self.state.get(key)
        entry = (copy or _copy)(stored) if stored else factory(*args)
        if already_applied(entry, self.position):
            self.replayed.add(key)
            return entry, False
        self.touched[key] = entry
        return entry, True

    def put(self, key: str, entry: Entry) -> None:
        """Mark an entry changed (time-driven updates that did not come through ``load``)."""
        self.touched[key] = entry

    def delete(self, key: str) -> None:
        self.touched.pop(key, None)
        self.deleted.add(key)

    def emit(self, incident: Incident) -> None:
        if self.through is not None:
            passed = self.through(self, incident)
            if passed is None:
                return
            incident = passed
        prev = self.incidents.get(incident.id)
        if prev is None or incident.revision >= prev.revision:
            self.incidents[incident.id] = incident

    def commit(self) -> None:
        for key, entry in self.touched.items():
            mark_applied(entry, self.position)
            if self.home is not None:
                entry["home"] = self.home
            self.state[key] = entry
        for key in self.deleted:
            if key in self.state:
                del self.state[key]


def _copy(entry: Entry) -> Entry:
    out = dict(entry)
    for k, v in entry.items():
        if isinstance(v, list):
            out[k] = [list(x) if isinstance(x, list) else x for x in v]
        elif isinstance(v, dict):
            out[k] = {kk: (list(vv) if isinstance(vv, list) else vv) for kk, vv in v.items()}
    return out


def escalate(
    rule: RuleBase,
    steps: Sequence[Step],
    *,
    value: float | None,
    count: int,
    duration_ms: int,
    distance_m: float | None = None,
    higher_is_worse: bool = True,
) -> Severity:
    """Severity after escalation: the highest step whose every condition holds (never below the rule's)."""
    level = SEVERITIES.index(rule.severity)
    for step in steps:
        if step.value is not None and (
            value is None or (value < step.value if higher_is_worse else value > step.value)
        ):
            continue
        if step.count is not None and count < step.count:
            continue
        if step.after is not None and duration_ms < step.after.total_seconds() * 1000:
            continue
        if step.within_m is not None and (distance_m is None or distance_m > step.within_m):
            continue
        level = max(level, SEVERITIES.index(step.severity))
    return SEVERITIES[level]


def build_incident(
    ctx: PackContext,
    rule: RuleBase,
    *,
    subject: str,
    start_ms: int,
    end_ms: int,
    entry: Entry,
    value: float,
    threshold: float,
    op: str,
    zone: str | None = None,
    layer: str | None = None,
    status: str = "open",
    resolved_ms: int | None = None,
    distance_m: float | None = None,
    higher_is_worse: bool = True,
    certainty: str = "likely",
    details: dict[str, Any] | None = None,
    id_subject: str | None = None,
) -> Incident:
    """An incident snapshot from a state entry holding ``n``, ``last`` and ``ev`` (evidence)."""
    evidence = entry["ev"]
    first = evidence[0]
    count = int(entry["n"])
    layer = layer if layer is not None else rule.layer
    zone_layer = ctx.layers.get(layer) if layer else None
    severity = escalate(
        rule,
        rule.escalate,
        value=value,
        count=count,
        duration_ms=int(entry["last"]) - int(first[0]),
        distance_m=distance_m,
        higher_is_worse=higher_is_worse,
    )
    return Incident(
        id=incident_id(ctx.pack, rule.id, id_subject or subject, start_ms),
        revision=count + (1 if status == "resolved" else 0),
        pack=ctx.pack,
        pack_version=ctx.version,
        rule_id=rule.id,
        rule_version=rule.version,
        kind=getattr(rule, "kind", "unknown"),
        title=rule.title,
        severity=severity,
        category=rule.category,
        status="resolved" if status == "resolved" else "open",
        subject=subject,
        layer=layer,
        zone_id=zone,
        zone_name=zone_layer.name_of(zone) if (zone_layer is not None and zone is not None) else None,
        window_start=from_ms(start_ms),
        window_end=from_ms(end_ms),
        first_event_at=from_ms(int(first[0])),
        last_event_at=from_ms(int(entry["last"])),
        resolved_at=from_ms(resolved_ms) if resolved_ms is not None else None,
        lon=float(first[3]),
        lat=float(first[4]),
        value=float(value),
        threshold=float(threshold),
        op=op,
        certainty=certainty,  # type: ignore[arg-type]
        details=details or {},
        evidence=Evidence(event_ids=[str(e[1]) for e in evidence], values=[float(e[2]) for e in evidence], count=count),
    )


class Kind(ABC):
    """A rule kind's evaluator for one rule."""

    rule: RuleBase
    #: Sequence kinds (sustained, geofence) set this: the engine then hands them the events that fail
    #: ``when`` or the schedule too, and the kind calls ``gate`` itself. A failing event breaks a
    #: sequence (a pending condition, a dwell) instead of leaving a silent gap in it.
    gates_itself: ClassVar[bool] = False
    #: A kind that sets this may be fed a ``rules.columns.Rows`` (each event built when first
    #: asked for), so it can judge rows from the batch's columns without building their events.
    reads_columns: ClassVar[bool] = False

    def __init__(self, rule: RuleBase, ctx: PackContext) -> None:
        self.rule = rule
        self.ctx = ctx
        self.schedule = ScheduleCheck(rule.schedule, ctx.timezone) if rule.schedule else None

    def gate(self, item: Enriched) -> bool:
        """Whether an event meets the rule's ``when`` conditions and schedule (what the engine checks)."""
        for cond in self.rule.when:
            value = event_value(item.event, cond.field)
            if value is None or not OPS[cond.op](value, cond.value):
                return False
        return self.schedule is None or self.schedule.active(item.event.ts)

    def conditions(self) -> Sequence[Condition]:
        """Conditions besides ``when`` that an event must meet for ``feed`` to do anything with it.

        The engine drops events that fail them before building anything for ``feed`` (a kind that
        gates itself is never asked). Only declare what ``feed`` would skip without a trace.
        """
        return ()

    #: Kinds that send a snapshot of an old episode again when a subject's event comes out of
    #: order (sustained, geofence): ``rules.cooldown`` keeps their keys' pointers for good.
    resends_episodes: ClassVar[bool] = False

    def open_ended(self, incident: Incident) -> bool:
        """Whether the incident can still change at any later time: an open episode of a subject,
        which changes until it resolves. A bucket's or window's incident changes only while events
        fall in it (within the allowed lateness)."""
        return False

    def dedup_key(self, incident: Incident) -> str:
        """What an incident of this rule is about, besides time (``rules.cooldown``): its subject."""
        return incident.subject

    #: Whether ``spreads`` can say yes for this rule (the engine feeds copies only to such rules).
    spreading: bool = False

    def spreads(self, kind: str, disc: str | None) -> bool:
        """Whether events of this kind and metric/category must reach every events partition.

        Events are partitioned by zone (tracks by object). A rule whose state groups events from
        several zones (a grid cell of ``radius_m`` on a district border) would see only part of
        them in each partition. So ingest sends the events such a rule may select to every
        partition (as ``cells`` of the envelope, fed only to spreading rules), and a rule whose
        incidents are keyed by such a group emits only those its partition owns
        (``Scope.owned``). A conservative answer (too many events) only costs time. By default
        a spreading rule spreads what its ``match`` may take.
        """
        match = self.rule.match
        return self.spreading and match.kind in (None, kind) and match.takes(kind, disc)

    def owns_group(self, scope: Scope, group: str) -> bool:
        """Whether this partition keeps the state of ``group`` of a spreading rule (always, unspread)."""
        return not self.spreading or scope.owned(f"{self.state_prefix}|group|{group}")

    @abstractmethod
    def feed(self, items: Sequence[Enriched], ts_ms: Sequence[int], scope: Scope) -> None:
        """Fold matching events (sorted by time, then id) into state, emitting incident snapshots."""

    def tick(self, scope: Scope, watermark_ms: int, keys: Sequence[str]) -> None:  # noqa: B027 - optional hook
        """Advance time-driven state to ``watermark_ms``; ``keys`` are this rule's state keys."""

    @property
    def time_driven(self) -> bool:
        return type(self).tick is not Kind.tick

    @cached_property
    def state_prefix(self) -> str:
        """State keys start with ``rule@version``: a new rule version starts with fresh state."""
        return f"{self.rule.id}@{self.rule.version}"

    def key(self, *parts: object) -> str:
        if len(parts) == 1:  # the common cases (a subject or group, and its bucket): one format, no join
            return f"{self.state_prefix}|{parts[0]}"
        if len(parts) == 2:
            return f"{self.state_prefix}|{parts[0]}|{parts[1]}"
        return "|".join([self.state_prefix, *map(str, parts)])

    def zone_of(self, item: Enriched) -> str | None:
        return item.primary_zone(self.rule.layer) if self.rule.layer else None

    def event_kinds(self, items: Sequence[Enriched]) -> list[tuple[str, str | None]]:
        """``(kind, metric/category/object type)`` of every item (``rules.columns.DISCRIMINATOR``),
        read from the batch's columns when fed its rows (``reads_columns``)."""
        if isinstance(items, Rows):
            columns = items.columns
            codes, disc = columns.kind, columns.disc
            return [(KINDS[code], disc[r]) for code, r in zip(codes[items.rows].tolist(), items.rows, strict=True)]
        out: list[tuple[str, str | None]] = []
        for item in items:
            kind = item.event.kind
            out.append((kind, getattr(item.event, DISCRIMINATOR[kind], None)))
        return out

    def zones_in(self, items: Sequence[Enriched], layer: str) -> list[str | None]:
        """The primary zone of ``layer`` of every item (None: in none of its zones), read from the
        batch's columns when fed its rows and the batch holds that layer."""
        if isinstance(items, Rows) and layer in items.columns.zones:
            ids = items.columns.zones[layer].primary_ids
            return [ids[r] for r in items.rows]
        return [item.primary_zone(layer) for item in items]

    def facts(self, items: Sequence[Enriched], name: str) -> list[Fact]:
        """``(field_value(event, name), zone_of(item), subject, id, lon, lat)`` of every item.

        Fed a batch's rows (``rules.columns.Rows``, see ``reads_columns``), they are read from its
        columns, and no event is built, when ``name`` is a numeric column and the batch holds the
        zones of the rule's layer; otherwise from each item.
        """
        layer = self.rule.layer
        if isinstance(items, Rows) and name in NUMERIC and (layer is None or layer in items.columns.zones):
            columns, rows = items.columns, items.rows
            values, lons, lats = columns.cells(name), columns.cells("lon"), columns.cells("lat")
            ids_of, subjects = columns.ids, columns.subjects
            zones: list[str | None] | None = columns.zones[layer].primary_ids if layer is not None else None
            out: list[Fact] = []
            for r in rows:
                v = values[r]
                subject = subjects[r] if subjects is not None else None
                out.append(
                    (
                        v if v == v else None,  # NaN: no value (as field_value)
                        zones[r] if zones is not None else None,
                        subject if subject is not None else columns.subject(r),
                        ids_of[r],
                        lons[r],
                        lats[r],
                    )
                )
            return out
        return [
            (field_value(e.event, name), self.zone_of(e), e.event.subject, e.event.id, e.event.lon, e.event.lat)
            for e in items
        ]
