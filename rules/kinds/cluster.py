"""cluster: at least ``min_events`` matching events within ``radius_m`` metres and ``within`` time.

Zone borders play no part (a pile of illegally dumped rubbish on a district border is one pile).
The semantics are a function of the *set* of matching events, so the result does not depend on
arrival order or batching (within the allowed lateness):

- An event ``e`` at time ``t`` is a **trigger** when at least ``min_events`` matching events,
  ``e`` itself included, lie within ``radius_m`` of it (haversine, inclusive) and in ``[t − within, t]``
  (both ends inclusive). Its **members** are those events.
- A trigger belongs to the incident keyed by (rule, block, bucket): ``block`` is the 2×2 block of
  ``radius_m`` grid cells (``rules.kinds.grid``) holding the trigger, ``bucket`` the tumbling
  ``within`` bucket (aligned to the epoch) of its time. So a dense area gives one incident per block
  and time bucket, however many triggers it has.
- The incident holds the union of its triggers' members: ``value`` and ``evidence.count`` are the
  number of members, the evidence lists the earliest 20 by (time, id), and ``lon``/``lat``, the
  zone and ``first_event_at`` are those of the earliest member. ``window_start``/``window_end`` are
  ``bucket − within`` and ``bucket + within``: every member lies in between.

State is one entry per (rule, grid cell) with the cell's recent events. An event that arrives late
(within the allowed lateness) re-evaluates the events within ``radius_m`` of it that are up to
``within`` later: it may make them triggers, or join their members. Events older than
``newest − allowed_lateness − 2·within`` can no longer change any incident and are pruned; a cell
keeps at most ``CELL_CAP`` events (beyond that the earliest go, and order independence is lost).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

from pydantic import Field

from rules.duration import Duration
from rules.kinds.base import Kind, PackContext, Scope, build_incident
from rules.kinds.grid import Grid, Near, merge_records
from rules.model import Enriched, Incident
from rules.spec import RuleBase
from rules.state import EVIDENCE_CAP, Entry, bucket_of, copy_entry

CELL_CAP = 2000

# A stored event: [ts_ms, id, lon, lat, zone]
Record = list[Any]
_NO_EVENTS: list[Record] = []  # what a view gives for a cell without events (shared: never mutated)


class ClusterRule(RuleBase):
    """Fires when ``min_events`` matching events lie within ``radius_m`` and ``within`` of one another."""

    kind: Literal["cluster"]
    min_events: int = Field(default=3, ge=2, description="Events needed, the trigger itself included.")
    radius_m: float = Field(gt=0, le=50_000, description="Greatest distance from the trigger, in metres.")
    within: Duration = Field(description="Greatest time before the trigger, e.g. '30m'.")

    @property
    def key_shared(self) -> bool:
        return True  # a block of grid cells, whoever reported there


class Cluster(Kind):
    rule: ClusterRule
    spreading = True  # every event it may select: a cell's neighbours may lie in other zones' partitions
    reads_columns = True

    def __init__(self, rule: ClusterRule, ctx: PackContext) -> None:
        super().__init__(rule, ctx)
        self.grid = Grid(rule.radius_m)
        self.t_ms = int(rule.within.total_seconds() * 1000)

    def owner_key(self, krow: int, kcol: int) -> str:
        """The route key of an incident's block: the partition it maps to emits the incident."""
        return f"{self.state_prefix}|block|{krow}|{kcol}"

    def feed(self, items: Sequence[Enriched], ts_ms: Sequence[int], scope: Scope) -> None:
        if not items:
            return
        batch_floor = ts_ms[0]  # sorted: nothing earlier can be evaluated in this batch
        arrived: list[Record] = []  # [ts_ms, id, lon, lat, zone]
        by_cell: dict[tuple[int, int], list[Record]] = {}
        for (_, zone, _, event_id, lon, lat), ts in zip(self.facts(items, "value"), ts_ms, strict=True):
            record: Record = [ts, event_id, lon, lat, zone]
            by_cell.setdefault(self.grid.cell(lon, lat), []).append(record)
            arrived.append(record)
        for cell, records in by_cell.items():  # each cell once per batch: one sort and one cut
            entry, fresh = scope.load(self.key("c", *cell), _new_cell, copy_entry)
            if fresh:
                self._insert(entry, records, batch_floor)
        view = _View(scope, self)
        view.prefetch(arrived)
        affected: set[tuple[int, int, int]] = set()
        for record in arrived:
            affected.add(self._incident_key(record))
            for other in view.near(record):
                if record[0] <= other[0] <= record[0] + self.t_ms:
                    affected.add(self._incident_key(other))
        candidates = {
            key: self._candidates(view, key) for key in sorted(affected) if scope.owned(self.owner_key(key[0], key[1]))
        }
        view.prefetch(cand for found in candidates.values() for cand in found)
        for key, found in candidates.items():
            incident = self._incident(view, key, found)
            if incident is not None:
                scope.emit(incident)

    def _insert(self, entry: dict[str, Any], records: list[Record], batch_floor: int) -> None:
        """Add a batch's records of one cell (each (time, id) once), then prune the cell once.

        The same cell as inserting them one at a time and pruning after each: the cut only grows
        with the newest record, and the cap keeps the latest records.
        """
        events: list[Record] = entry["ev"]
        if not merge_records(events, records):
            return
        newest = int(events[-1][0])
        cut = min(batch_floor, newest - self.ctx.lateness_ms) - 2 * self.t_ms
        keep = [e for e in events if e[0] >= cut][-CELL_CAP:]
        entry["ev"] = keep
        entry["end"] = newest + 2 * self.t_ms + 1  # Engine.expire drops the cell once nothing in it matters

    def _incident_key(self, record: Record) -> tuple[int, int, int]:
        row, col = self.grid.cell(record[2], record[3])
        return row // 2, col // 2, bucket_of(int(record[0]), self.t_ms)

    def _candidates(self, view: _View, key: tuple[int, int, int]) -> list[Record]:
        """The stored events of the incident's block and bucket (its possible triggers), by (time, id)."""
        krow, kcol, bucket = key
        return sorted(
            (
                e
                for row in (2 * krow, 2 * krow + 1)
                for col in (2 * kcol, 2 * kcol + 1)
                for e in view.cell((row, col))
                if bucket_of(int(e[0]), self.t_ms) == bucket
            ),
            key=lambda e: (e[0], e[1]),
        )

    def _incident(self, view: _View, key: tuple[int, int, int], candidates: list[Record]) -> Incident | None:
        krow, kcol, bucket = key
        members: dict[tuple[int, str], Record] = {}
        triggers = 0
        for cand in candidates:
            near = [e for e in view.near(cand) if cand[0] - self.t_ms <= e[0] <= cand[0]]
            if len(near) >= self.rule.min_events:
                triggers += 1
                members.update(((int(e[0]), str(e[1])), e) for e in near)
        if not triggers:
            return None
        ordered = [members[k] for k in sorted(members)]
        first = ordered[0]
        entry = {
            "n": len(ordered),
            "last": ordered[-1][0],
            "ev": [[e[0], e[1], 1.0, e[2], e[3]] for e in ordered[:EVIDENCE_CAP]],
        }
        return build_incident(
            self.ctx,
            self.rule,
            subject=f"cell:{krow}:{kcol}",
            start_ms=bucket - self.t_ms,
            end_ms=bucket + self.t_ms,
            entry=entry,
            value=float(len(ordered)),
            threshold=float(self.rule.min_events),
            op=">=",
            zone=first[4],
            details={
                "triggers": triggers,
                "radius_m": self.rule.radius_m,
                "within_ms": self.t_ms,
                "block": [krow, kcol],
                "bucket_start_ms": bucket,
            },
        )


def _cell_reader(
    scope: Scope, cache: dict[tuple[int, int], list[Record]], prefix: str
) -> Callable[[tuple[int, int]], list[Record]]:
    """The stored events of a cell, by (time, id): read only, never mutate what this returns.

    A closure over what it needs, not a method of the view: the view holds its ``Near`` and the
    ``Near`` holds this, and a reference cycle would keep every batch's scope and state copies
    alive until the cyclic GC ran (most of replay's GC time).
    """

    def cell(at: tuple[int, int]) -> list[Record]:
        found = cache.get(at)
        if found is None:
            entry = scope.peek(f"{prefix}{at[0]}|{at[1]}")
            found = cache[at] = entry["ev"] if entry else _NO_EVENTS
        return found

    return cell


class _View:
    """Read-only, cached access to the cells of one rule during one batch (after its inserts)."""

    def __init__(self, scope: Scope, kind: Cluster) -> None:
        self.scope = scope
        self.kind = kind
        self.cache: dict[tuple[int, int], list[Record]] = {}
        self.prefix = f"{kind.key('c')}|"  # + "row|col": kind.key("c", row, col), built faster
        self.cell = _cell_reader(scope, self.cache, self.prefix)
        self.search = Near(kind.grid, self.cell, 2, 3)

    def near(self, record: Record) -> list[Record]:
        """Stored events within ``radius_m`` of a record (itself included when stored).

        In the order of ``Grid.cells_near``, then of each cell; memoised per point (``Near``).
        """
        return self.search.near(record[2], record[3])

    def prefetch(self, records: Iterable[Record]) -> None:
        """Compute ``near`` of many records in one numpy pass."""
        self.search.prefetch((r[2], r[3]) for r in records)


def _new_cell() -> Entry:
    return {"ev": [], "end": 0, "pos": {}}
