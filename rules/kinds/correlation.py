"""correlation: an IoT condition corroborated by citizen reports becomes one "observed" incident.

A water-level alarm and two waterlogging reports nearby are one flood, seen by two independent
sources: its incident has ``certainty: observed``, where single-source incidents say ``likely``.
The semantics are a function of the *set* of events, so the result does not depend on arrival
order or batching (within the allowed lateness):

- A **qualifying reading** is a reading of ``iot.metric`` whose ``iot.field`` compares true with
  ``iot.value``. A **qualifying report** is a report whose category is one of ``categories``.
- A qualifying reading at time ``t`` is **corroborated** when at least ``min_reports`` qualifying
  reports lie within ``radius_m`` of it (haversine, inclusive) and in ``[t − within, t + within]``:
  the reports may come before or after the reading.
- The corroborated readings of one sensor in one tumbling ``within`` bucket (aligned to the epoch,
  by reading time) form one incident, keyed (rule, sensor, bucket). It holds those readings and
  the union of their reports. ``value`` is the most extreme corroborated reading (the highest for
  ``>``/``>=``, the lowest for ``<``/``<=``), ``evidence`` lists readings and reports together,
  earliest first (a report's value is 1.0), ``count`` is readings plus reports, and ``lon``/``lat``
  and the zone are those of the sensor's earliest corroborated reading.

The rule's ``match`` must leave ``kind``, ``metric``, ``category`` and ``categories`` unset (``iot``
and ``categories`` choose the two sources), and ``when`` must be empty: a condition on ``value``
would drop every report. State: one entry per (rule, sensor, bucket) with the sensor's first
``READINGS_CAP`` qualifying readings, and one per (rule, grid cell of ``radius_m``) with the
recent qualifying readings and reports there, pruned at ``newest − allowed_lateness − 3·within``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

from pydantic import Field, model_validator

from rules.duration import Duration
from rules.fields import NumericField
from rules.kinds.base import OPS, Kind, PackContext, Scope, build_incident
from rules.kinds.grid import Grid, Near, merge_records
from rules.model import Enriched, Incident
from rules.routes import routing_layer, zone_route
from rules.spec import FieldRef, Op, RuleBase, Strict
from rules.state import EVIDENCE_CAP, Entry, bucket_of

CELL_CAP = 2000
READINGS_CAP = 50
_NO_CELL: dict[str, Any] = {"rd": [], "rp": []}  # what a view gives for an empty cell (shared: never mutated)


class IotCondition(Strict):
    """The sensor side of a correlation, e.g. ``{metric: water_level_cm, op: ">", value: 30}``."""

    metric: str = Field(min_length=1, description="Metric of the readings.")
    field: NumericField = Field(default="value", description="Numeric reading field compared.")
    op: Op = ">"
    value: float


class CorrelationRule(RuleBase):
    """Fires when a reading meeting ``iot`` has ``min_reports`` reports of ``categories`` nearby."""

    kind: Literal["correlation"]
    iot: IotCondition
    categories: list[str] = Field(min_length=1, description="Report categories that corroborate.")
    min_reports: int = Field(default=1, ge=1, description="Reports needed near one reading.")
    radius_m: float = Field(gt=0, le=50_000, description="Greatest report distance from the reading, in metres.")
    within: Duration = Field(description="Greatest time between reading and report, either way; also the bucket.")

    @model_validator(mode="after")
    def _check(self) -> CorrelationRule:
        taken = [
            name
            for name in ("kind", "metric", "category", "categories", "object_type")
            if getattr(self.match, name) is not None
        ]
        if taken:
            raise ValueError(
                f"a correlation rule takes readings and reports: leave match.{taken[0]} unset "
                "(iot.metric and categories choose them)"
            )
        if self.when:
            raise ValueError("a correlation rule cannot have 'when' (it would drop the reports): use iot")
        return self

    def field_refs(self) -> list[FieldRef]:
        return [FieldRef(("iot", "field"), self.iot.field, kinds=("reading",))]


class Correlation(Kind):
    rule: CorrelationRule
    spreading = True
    reads_columns = True

    def __init__(self, rule: CorrelationRule, ctx: PackContext) -> None:
        super().__init__(rule, ctx)
        self.grid = Grid(rule.radius_m)
        self.t_ms = int(rule.within.total_seconds() * 1000)
        self.compare = OPS[rule.iot.op]
        self.higher_is_worse = rule.iot.op not in ("<", "<=")
        self.categories = frozenset(rule.categories)

    def spreads(self, kind: str, disc: str | None) -> bool:
        """Corroborating reports reach every partition; readings stay in their sensor's zone partition.

        A sensor's entries live only in its home partition, so its incident is emitted there alone,
        with every report near it, whichever zone the reports fell in.
        """
        return kind == "report" and disc in self.categories

    def feed(self, items: Sequence[Enriched], ts_ms: Sequence[int], scope: Scope) -> None:
        if not items:
            return
        batch_floor = ts_ms[0]
        affected: set[tuple[str, int]] = set()
        reports: list[list[Any]] = []
        to_cells: dict[tuple[int, int], tuple[list[list[Any]], list[list[Any]]]] = {}
        iot = self.rule.iot
        facts = self.facts(items, iot.field)
        layer = routing_layer(self.ctx.layers)
        routes = self.zones_in(items, layer) if layer else [None] * len(items)
        for (kind, disc), (value, zone, subject, event_id, lon, lat), route, ts in zip(
            self.event_kinds(items), facts, routes, ts_ms, strict=True
        ):
            if kind == "reading" and disc == iot.metric:
                if value is None or not self.compare(value, iot.value):
                    continue
                sensor, bucket = subject, bucket_of(ts, self.t_ms)  # a reading's subject is its sensor
                entry, fresh = scope.load(
                    self.key("s", sensor, bucket), self._sensor_entry(sensor, bucket, route), _copy_sensor
                )
                if fresh:
                    _add(entry["rd"], [[ts, event_id, value, lon, lat, zone]], READINGS_CAP, keep="earliest")
                cell = self.grid.cell(lon, lat)
                to_cells.setdefault(cell, ([], []))[0].append([ts, event_id, sensor, lon, lat])
                affected.add((sensor, bucket))
            elif kind == "report" and disc in self.categories:
                record = [ts, event_id, lon, lat]
                to_cells.setdefault(self.grid.cell(lon, lat), ([], []))[1].append(record)
                reports.append(record)
        for cell, (rd, rp) in to_cells.items():  # each cell once per batch: one sort and one cut
            self._to_cell(scope, cell, rd, rp, batch_floor)
        view = _View(scope, self)
        view.readings.prefetch((r[2], r[3]) for r in reports)
        for report in reports:
            for reading in view.readings.near(report[2], report[3]):
                if abs(int(reading[0]) - int(report[0])) <= self.t_ms:
                    affected.add((str(reading[2]), bucket_of(int(reading[0]), self.t_ms)))
        sensors = {key: scope.peek(self.key("s", *key)) for key in sorted(affected)}
        # a sensor homed in another partition that shares this worker's state: that partition emits it
        sensors = {k: e for k, e in sensors.items() if not e or e.get("route") is None or scope.owned(e["route"])}
        view.reports.prefetch((r[3], r[4]) for found in sensors.values() if found for r in found["rd"])
        for (sensor, bucket), found in sensors.items():
            incident = self._incident(view, sensor, bucket, found)
            if incident is not None:
                scope.emit(incident)

    def _sensor_entry(self, sensor: str, bucket: int, zone: str | None) -> Callable[[], Entry]:
        # a reading can change the incident until the bucket end plus ``within`` (a late report);
        # ``route``: the partition the sensor's readings go to owns its incidents (``Scope.owned``),
        # ``zone`` being the reading's zone of the routing layer
        def make() -> Entry:
            return {
                "rd": [],
                "subj": sensor,
                "start": bucket,
                "end": bucket + 2 * self.t_ms + 1,
                "pos": {},
                "route": zone_route(zone),
            }

        return make

    def _to_cell(
        self, scope: Scope, cell: tuple[int, int], rd: list[list[Any]], rp: list[list[Any]], batch_floor: int
    ) -> None:
        """Add a batch's readings and reports of one cell, then prune the cell once.

        The same cell as adding them one at a time and pruning after each: the cut only grows with
        the newest record, and the cap keeps the latest records of each list.
        """
        entry, fresh = scope.load(self.key("c", *cell), _new_cell, _copy_cell)
        if not fresh:
            return
        _add(entry["rd"], rd, CELL_CAP, keep="latest")
        _add(entry["rp"], rp, CELL_CAP, keep="latest")
        newest = max(int(e[0]) for e in entry["rd"] + entry["rp"])
        cut = min(batch_floor, newest - self.ctx.lateness_ms) - 3 * self.t_ms
        for name in ("rd", "rp"):
            entry[name] = [e for e in entry[name] if e[0] >= cut]
        entry["end"] = newest + 3 * self.t_ms + 1  # Engine.expire drops the cell once nothing in it matters

    def _incident(self, view: _View, sensor: str, bucket: int, entry: Entry | None) -> Incident | None:
        """The incident of one sensor and bucket, from its entry (None when it has none)."""
        if not entry:
            return None
        readings: list[list[Any]] = []
        found: dict[tuple[int, str], list[Any]] = {}
        for reading in entry["rd"]:
            ts, lon, lat = int(reading[0]), reading[3], reading[4]
            near = [r for r in view.reports.near(lon, lat) if abs(int(r[0]) - ts) <= self.t_ms]
            if len(near) >= self.rule.min_reports:
                readings.append(reading)
                found.update(((int(r[0]), str(r[1])), r) for r in near)
        if not readings:
            return None
        members = sorted(
            [[r[0], r[1], float(r[2]), r[3], r[4]] for r in readings]
            + [[r[0], r[1], 1.0, r[2], r[3]] for r in found.values()],
            key=lambda e: (e[0], e[1]),
        )
        values = [float(r[2]) for r in readings]
        value = max(values) if self.higher_is_worse else min(values)
        first = readings[0]
        state = {"n": len(members), "last": members[-1][0], "ev": members[:EVIDENCE_CAP]}
        iot = self.rule.iot
        incident = build_incident(
            self.ctx,
            self.rule,
            subject=sensor,
            start_ms=bucket,
            end_ms=bucket + self.t_ms,
            entry=state,
            value=value,
            threshold=iot.value,
            op=iot.op,
            zone=first[5],
            higher_is_worse=self.higher_is_worse,
            certainty="observed",
            details={
                "metric": iot.metric,
                "readings": len(readings),
                "reports": len(found),
                "report_ids": sorted(str(r[1]) for r in found.values())[:EVIDENCE_CAP],
                "radius_m": self.rule.radius_m,
                "within_ms": self.t_ms,
                "min_reports": self.rule.min_reports,
            },
        )
        return incident.model_copy(update={"lon": float(first[3]), "lat": float(first[4])})


def _new_cell() -> Entry:
    return {"rd": [], "rp": [], "end": 0, "pos": {}}


def _copy_cell(entry: Entry) -> Entry:
    """A cell's private copy: its lists and ``pos`` change in place, its records never do (shared)."""
    return {**entry, "rd": list(entry["rd"]), "rp": list(entry["rp"]), "pos": dict(entry["pos"])}


def _copy_sensor(entry: Entry) -> Entry:
    """A sensor bucket's private copy: ``rd`` and ``pos`` change in place, the records never do."""
    return {**entry, "rd": list(entry["rd"]), "pos": dict(entry["pos"])}


def _add(records: list[list[Any]], new: list[list[Any]], cap: int, *, keep: str) -> None:
    """Insert records (each (time, id) once) into a list kept sorted by (time, id) and capped."""
    if merge_records(records, new) and len(records) > cap:
        if keep == "earliest":
            del records[cap:]
        else:
            del records[: len(records) - cap]


class _View:
    """Read-only, cached access to one rule's grid cells during one batch (after its inserts).

    ``readings.near(lon, lat)`` and ``reports.near(lon, lat)`` are the stored readings (``rd``) and
    reports (``rp``) within ``radius_m`` of a point, in the order of ``Grid.cells_near`` then of
    each cell, memoised per point (``Near``).
    """

    def __init__(self, scope: Scope, kind: Correlation) -> None:
        self.scope = scope
        self.kind = kind
        self.cache: dict[tuple[int, int], dict[str, Any]] = {}
        self.prefix = f"{kind.key('c')}|"  # + "row|col": kind.key("c", row, col), built faster
        # closures, not methods: a view -> Near -> bound method -> view cycle would keep every
        # batch's scope alive until the cyclic GC ran
        cache, prefix = self.cache, self.prefix

        def cell(at: tuple[int, int]) -> dict[str, Any]:
            """A cell's entry (``rd`` and ``rp`` lists): read only, never mutate what this returns."""
            found = cache.get(at)
            if found is None:
                found = cache[at] = scope.peek(f"{prefix}{at[0]}|{at[1]}") or _NO_CELL
            return found

        self.cell = cell
        self.readings = Near(kind.grid, lambda at: cell(at)["rd"], -2, -1)
        self.reports = Near(kind.grid, lambda at: cell(at)["rp"], -2, -1)
