"""The rule engine: enrich a batch of events with zones, fold it into state, emit incidents.

Pure and synchronous. The same class serves the live worker (state in a Faust table), replay
and backtests (state in a dict). Time is event time: windows, ``for`` durations and silence
timers advance with the event-time watermark (the newest event time seen), so the same events
give the same incidents in every mode.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rules.kinds import Kind, PackContext, evaluator
from rules.kinds.base import OPS, Scope, incident_id
from rules.model import Enriched, Incident, Reading, Report, Track, event_value
from rules.pack import LoadedPack
from rules.schedule import ScheduleCheck as _ScheduleCheck
from rules.spec import RuleBase
from rules.state import from_ms, to_ms

logger = logging.getLogger(__name__)

AnyEvent = Reading | Report | Track

__all__ = ["AnyEvent", "Engine", "Outcome", "incident_id", "run"]


@dataclass
class Outcome:
    """What one batch produced: the latest snapshot of every incident it touched, and late events."""

    incidents: list[Incident] = field(default_factory=list)
    late: list[tuple[Enriched, str]] = field(default_factory=list)


@dataclass
class _Compiled:
    rule: RuleBase
    kind: Kind
    schedule: _ScheduleCheck | None


class Engine:
    """Evaluates one loaded pack. Holds no rule state itself except the event-time watermark."""

    def __init__(self, pack: LoadedPack) -> None:
        self.pack = pack
        spec = pack.spec
        self.lateness_ms = int(spec.allowed_lateness.total_seconds() * 1000)
        self.ctx = PackContext(spec.pack, spec.version, spec.timezone, self.lateness_ms, pack.layers)
        self.watermark_ms: int | None = None
        self.compiled = [
            _Compiled(r, evaluator(r, self.ctx), _ScheduleCheck(r.schedule, spec.timezone) if r.schedule else None)
            for r in spec.rules
        ]
        self._by_kind: dict[str, list[_Compiled]] = {"reading": [], "report": [], "track": []}
        self._index: dict[tuple[str, str | None], list[_Compiled]] = {}
        for c in self.compiled:
            for k in [c.rule.match.kind] if c.rule.match.kind else list(self._by_kind):
                self._by_kind[k].append(c)

    # -- enrichment -------------------------------------------------------------------------
    def enrich(self, events: Sequence[AnyEvent]) -> list[Enriched]:
        """Attach the zones of every layer to each event: one STRtree query per layer per batch."""
        if not events:
            return []
        lon = np.fromiter((e.lon for e in events), dtype=np.float64, count=len(events))
        lat = np.fromiter((e.lat for e in events), dtype=np.float64, count=len(events))
        per_layer = {name: layer.locate(lon, lat) for name, layer in self.pack.layers.items()}
        return [
            Enriched.model_construct(event=e, zones={name: zones[i] for name, zones in per_layer.items() if zones[i]})
            for i, e in enumerate(events)
        ]

    # -- evaluation -------------------------------------------------------------------------
    def _candidates(self, event: AnyEvent) -> list[_Compiled]:
        """Rules that can match this event's kind and metric/category/object type (an index, cached)."""
        kind = event.kind
        value = getattr(event, _DISCRIMINATOR[kind], None)
        key = (kind, value)
        found = self._index.get(key)
        if found is None:
            found = [c for c in self._by_kind[kind] if _accepts(c.rule.match, kind, value)]
            if len(self._index) < 100_000:
                self._index[key] = found
        return found

    @staticmethod
    def _matches(c: _Compiled, item: Enriched) -> bool:
        # Each filter compares the event's own field of that name, so a category filter never
        # matches a reading whose metric happens to have the same name.
        rule, match, event = c.rule, c.rule.match, item.event
        if match.metric is not None and getattr(event, "metric", None) != match.metric:
            return False
        if match.category is not None and getattr(event, "category", None) != match.category:
            return False
        if match.categories is not None and getattr(event, "category", None) not in match.categories:
            return False
        if match.object_type is not None and getattr(event, "object_type", None) != match.object_type:
            return False
        if rule.layer is not None:
            zone = item.primary_zone(rule.layer)
            if zone is None or (match.zones is not None and zone not in match.zones):
                return False
        if c.kind.gates_itself:  # sequence kinds judge ``when`` and the schedule on every event themselves
            return True
        for cond in rule.when:
            value = event_value(event, cond.field)
            if value is None or not OPS[cond.op](value, cond.value):
                return False
        return c.schedule is None or c.schedule.active(event.ts)

    def process(
        self,
        batch: Sequence[Enriched],
        state: MutableMapping[str, Any],
        position: tuple[int, int] | None = None,
        home: int | None = None,
        check_late: bool = True,
    ) -> Outcome:
        """Fold a batch into ``state`` and return the incidents it created or updated.

        Args:
            batch: enriched events, in any order (they are evaluated in event-time order).
            state: rule state; entries are re-assigned (never mutated in place) so that a
                changelog-backed table records every change.
            position: (partition, offset) of the source message; when given, a message that
                was already applied to an entry is not applied again.
        """
        outcome = Outcome()
        floor = None if (self.watermark_ms is None or not check_late) else self.watermark_ms - self.lateness_ms
        stamped = sorted(((to_ms(i.event.ts), i.event.id, n) for n, i in enumerate(batch)))
        per_rule: dict[int, tuple[list[Enriched], list[int]]] = {}
        batch_max: int | None = None
        for ts, _, n in stamped:
            item = batch[n]
            if floor is not None and ts < floor:
                outcome.late.append(
                    (
                        item,
                        (
                            f"event time {item.event.ts.isoformat()} is older than the watermark "
                            f"{from_ms(self.watermark_ms or 0).isoformat()} minus the allowed lateness "
                            f"{self.pack.spec.allowed_lateness}"
                        ),
                    )
                )
                continue
            batch_max = ts
            for c in self._candidates(item.event):
                if self._matches(c, item):
                    items, stamps = per_rule.setdefault(id(c), ([], []))
                    items.append(item)
                    stamps.append(ts)
        scope = Scope(state, position, home=home)
        for c in self.compiled:
            if id(c) in per_rule:
                items, stamps = per_rule[id(c)]
                c.kind.feed(items, stamps, scope)
        scope.commit()
        if batch_max is not None and (self.watermark_ms is None or batch_max > self.watermark_ms):
            self.watermark_ms = batch_max
        outcome.incidents = list(scope.incidents.values())
        return outcome

    def tick(
        self, state: MutableMapping[str, Any], *, clock_ms: int | None = None, partition: int | None = None
    ) -> list[Incident]:
        """Advance time-driven rules (silence, windows judged at close) to the watermark.

        ``clock_ms`` (live mode: the wall clock) may push the watermark forward when no events
        arrive. With ``partition``, only entries whose home is that partition are touched.
        """
        if clock_ms is not None and (self.watermark_ms is None or clock_ms > self.watermark_ms):
            self.watermark_ms = clock_ms
        timed = [c for c in self.compiled if c.kind.time_driven]
        if self.watermark_ms is None or not timed:
            return []
        keys: dict[str, list[str]] = {c.kind.state_prefix: [] for c in timed}
        for key, value in list(state.items()):
            prefix = key.split("|", 1)[0]
            if prefix in keys and value and (partition is None or _home(value) in (None, partition)):
                keys[prefix].append(key)
        scope = Scope(state, None)
        for c in timed:
            c.kind.tick(scope, self.watermark_ms, keys[c.kind.state_prefix])
        scope.commit()
        return list(scope.incidents.values())

    def expire(self, state: MutableMapping[str, Any], *, partition: int | None = None) -> int:
        """Delete bucket entries that can no longer receive events. Returns how many.

        With ``partition``, only entries whose home (lowest source partition) is that partition
        are touched, so that a changelog tombstone lands where the entry was written.
        """
        if self.watermark_ms is None:
            return 0
        floor = self.watermark_ms - self.lateness_ms
        dead = []
        for key, value in list(state.items()):
            if not value or "end" not in value or int(value["end"]) > floor:
                continue
            if value.get("closed") is False:
                continue
            if partition is not None and _home(value) not in (None, partition):
                continue
            dead.append(key)
        for key in dead:
            del state[key]
        return len(dead)


_DISCRIMINATOR = {"reading": "metric", "report": "category", "track": "object_type"}


def _accepts(match: Any, kind: str, value: str | None) -> bool:
    """Whether a rule's match could accept an event of this kind with this metric/category/object type."""
    if kind == "reading":
        if match.category is not None or match.categories is not None or match.object_type is not None:
            return False
        return match.metric is None or match.metric == value
    if kind == "report":
        if match.metric is not None or match.object_type is not None:
            return False
        if match.category is not None and match.category != value:
            return False
        return match.categories is None or value in match.categories
    if match.metric is not None or match.category is not None or match.categories is not None:
        return False
    return match.object_type is None or match.object_type == value


def _home(entry: dict[str, Any]) -> int | None:
    """The events-topic partition an entry lives in (its changelog partition)."""
    if entry.get("home") is not None:
        return int(entry["home"])
    homes = [int(p) for p in entry.get("pos", {})]
    return min(homes) if homes else None


def run(engine: Engine, events: Iterable[AnyEvent], *, batch_size: int = 1000) -> dict[str, Incident]:
    """Run events through an engine with in-memory state; the latest snapshot per incident id."""
    state: dict[str, Any] = {}
    latest: dict[str, Incident] = {}
    chunk: list[AnyEvent] = []

    def keep(incidents: Iterable[Incident]) -> None:
        for incident in incidents:
            prev = latest.get(incident.id)
            if prev is None or incident.revision >= prev.revision:
                latest[incident.id] = incident

    def flush() -> None:
        keep(engine.process(engine.enrich(chunk), state).incidents)
        chunk.clear()

    for event in events:
        chunk.append(event)
        if len(chunk) >= batch_size:
            flush()
    flush()
    # Time-driven rules need only the final watermark: gaps inside the data are found by the events
    # themselves, so ticking once at the end gives the same incidents as ticking after every batch.
    keep(engine.tick(state))
    return latest
