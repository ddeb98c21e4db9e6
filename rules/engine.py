"""The rule engine: enrich a batch of events with zones, fold it into state, emit incidents.

Pure and synchronous. The same class serves the live worker (state in a Faust table), replay
and backtests (state in a dict). Time is event time only, so the same events give the same
incidents in every mode.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rules.kinds.base import Kind
from rules.kinds.threshold import Threshold
from rules.kinds.window import Window
from rules.model import Enriched, Evidence, Incident, Reading, Report, Track
from rules.pack import LoadedPack, ThresholdRule, WindowRule
from rules.state import Entry, add_event, already_applied, from_ms, mark_applied, new_entry, to_ms

logger = logging.getLogger(__name__)

AnyEvent = Reading | Report | Track


def incident_id(pack: str, rule_id: str, subject: str, start_ms: int) -> str:
    """Deterministic incident id: the same rule, subject and window always give the same id."""
    return hashlib.sha256(f"{pack}|{rule_id}|{subject}|{start_ms}".encode()).hexdigest()[:24]


@dataclass
class Outcome:
    """What one batch produced: the latest snapshot of every incident it touched, and late events."""

    incidents: list[Incident] = field(default_factory=list)
    late: list[tuple[Enriched, str]] = field(default_factory=list)


@dataclass(frozen=True)
class _Compiled:
    rule: ThresholdRule | WindowRule
    kind: Kind


class Engine:
    """Evaluates one loaded pack. Holds no rule state itself except the event-time watermark."""

    def __init__(self, pack: LoadedPack) -> None:
        self.pack = pack
        self.lateness_ms = int(pack.spec.allowed_lateness.total_seconds() * 1000)
        self.watermark_ms: int | None = None
        self._by_kind: dict[str, list[_Compiled]] = {"reading": [], "report": [], "track": []}
        for rule in pack.spec.rules:
            kind: Kind = Threshold(rule) if isinstance(rule, ThresholdRule) else Window(rule)
            kinds = [rule.match.kind] if rule.match.kind else list(self._by_kind)
            for k in kinds:
                self._by_kind[k].append(_Compiled(rule, kind))

    # -- enrichment -------------------------------------------------------------------------
    def enrich(self, events: Sequence[AnyEvent]) -> list[Enriched]:
        """Attach the zones of every layer to each event: one STRtree query per layer per batch."""
        if not events:
            return []
        lon = np.fromiter((e.lon for e in events), dtype=np.float64, count=len(events))
        lat = np.fromiter((e.lat for e in events), dtype=np.float64, count=len(events))
        per_layer = {name: layer.locate(lon, lat) for name, layer in self.pack.layers.items()}
        return [
            Enriched(event=e, zones={name: zones[i] for name, zones in per_layer.items() if zones[i]})
            for i, e in enumerate(events)
        ]

    # -- evaluation -------------------------------------------------------------------------
    def _matches(self, compiled: _Compiled, item: Enriched) -> bool:
        match = compiled.rule.match
        # Each filter compares the event's own field: a report has no metric, so `metric` never matches it.
        filters = (("metric", match.metric), ("category", match.category), ("object_type", match.object_type))
        for name, wanted in filters:
            if wanted is not None and getattr(item.event, name, None) != wanted:
                return False
        layer = compiled.rule.layer
        if layer is not None:
            zone = item.primary_zone(layer)
            if zone is None or (match.zones is not None and zone not in match.zones):
                return False
        return True

    def process(
        self,
        batch: Sequence[Enriched],
        state: MutableMapping[str, Any],
        position: tuple[int, int] | None = None,
    ) -> Outcome:
        """Fold a batch into ``state`` and return the incidents it created or updated.

        Args:
            batch: enriched events, in any order.
            state: rule state; entries are re-assigned (never mutated in place) so that a
                changelog-backed table records every change.
            position: (partition, offset) of the source message; when given, a message that
                was already applied to an entry is not applied again.
        """
        outcome = Outcome()
        floor = None if self.watermark_ms is None else self.watermark_ms - self.lateness_ms
        touched: dict[str, tuple[_Compiled, Entry]] = {}
        skipped: set[str] = set()
        batch_max: int | None = None
        for item in batch:
            event = item.event
            ts_ms = to_ms(event.ts)
            if floor is not None and ts_ms < floor:
                outcome.late.append(
                    (
                        item,
                        f"event time {event.ts.isoformat()} is older than the watermark "
                        f"{from_ms(self.watermark_ms or 0).isoformat()} minus the allowed "
                        f"lateness {self.pack.spec.allowed_lateness}",
                    )
                )
                continue
            batch_max = ts_ms if batch_max is None else max(batch_max, ts_ms)
            for compiled in self._by_kind[event.kind]:
                if not self._matches(compiled, item):
                    continue
                slot = compiled.kind.slot(item, ts_ms)
                if slot is None or slot.key in skipped:
                    continue
                if slot.key in touched:
                    entry = touched[slot.key][1]
                else:
                    stored = state.get(slot.key)
                    entry = _copy(stored) if stored else new_entry(slot.subject, slot.zone, slot.start_ms, slot.end_ms)
                    if already_applied(entry, position):
                        skipped.add(slot.key)
                        touched_again = self._snapshot(compiled, slot.key, entry)
                        if touched_again is not None:
                            outcome.incidents.append(touched_again)
                        continue
                    touched[slot.key] = (compiled, entry)
                add_event(entry, ts_ms, event.id, slot.value, event.lon, event.lat, prefer_max=compiled.kind.prefer_max)
                if entry["ev"][0][:2] == [ts_ms, event.id]:
                    # The zone of the earliest event (like lon/lat), not of the first to arrive: a subject
                    # that moves between zones within one bucket must not depend on arrival order.
                    entry["zone"] = slot.zone
        for key, (compiled, entry) in touched.items():
            mark_applied(entry, position)
            state[key] = entry
            snapshot = self._snapshot(compiled, key, entry)
            if snapshot is not None:
                outcome.incidents.append(snapshot)
        if batch_max is not None and (self.watermark_ms is None or batch_max > self.watermark_ms):
            self.watermark_ms = batch_max
        return outcome

    def _snapshot(self, compiled: _Compiled, key: str, entry: Entry) -> Incident | None:
        if not compiled.kind.fires(entry["n"], entry["x"]):
            return None
        rule = compiled.rule
        spec = self.pack.spec
        first = entry["ev"][0]
        zone = entry["zone"]
        layer = self.pack.layers.get(rule.layer) if rule.layer else None
        return Incident(
            id=incident_id(spec.pack, rule.id, entry["subj"], entry["start"]),
            revision=entry["n"],
            pack=spec.pack,
            pack_version=spec.version,
            rule_id=rule.id,
            rule_version=rule.version,
            kind=rule.kind,
            title=rule.title,
            severity=rule.severity,
            category=rule.category,
            subject=entry["subj"],
            layer=rule.layer,
            zone_id=zone,
            zone_name=layer.name_of(zone) if (layer is not None and zone is not None) else None,
            window_start=from_ms(entry["start"]),
            window_end=from_ms(entry["end"]),
            first_event_at=from_ms(first[0]),
            last_event_at=from_ms(entry["last"]),
            lon=first[3],
            lat=first[4],
            value=float(entry["n"]) if isinstance(rule, WindowRule) else float(entry["x"]),
            threshold=rule.value,
            op=rule.op,
            evidence=Evidence(
                event_ids=[e[1] for e in entry["ev"]], values=[e[2] for e in entry["ev"]], count=entry["n"]
            ),
        )

    def expire(self, state: MutableMapping[str, Any], *, partition: int | None = None) -> int:
        """Delete entries whose bucket can no longer receive events. Returns how many.

        With ``partition``, only entries whose home (lowest source partition) is that partition
        are touched, so that a changelog tombstone lands where the entry was written.
        """
        if self.watermark_ms is None:
            return 0
        floor = self.watermark_ms - self.lateness_ms
        dead = []
        for key, value in list(state.items()):
            if not value or int(value["end"]) > floor:
                continue
            if partition is not None:
                homes = [int(p) for p in value.get("pos", {})]
                if homes and min(homes) != partition:
                    continue
            dead.append(key)
        for key in dead:
            del state[key]
        return len(dead)


def _copy(entry: Entry) -> Entry:
    return {**entry, "ev": [list(e) for e in entry["ev"]], "pos": dict(entry["pos"])}


def run(engine: Engine, events: Iterable[AnyEvent], *, batch_size: int = 1000) -> dict[str, Incident]:
    """Run events through an engine with in-memory state; the latest snapshot per incident id."""
    state: dict[str, Any] = {}
    latest: dict[str, Incident] = {}
    chunk: list[AnyEvent] = []

    def flush() -> None:
        for incident in engine.process(engine.enrich(chunk), state).incidents:
            prev = latest.get(incident.id)
            if prev is None or incident.revision >= prev.revision:
                latest[incident.id] = incident
        chunk.clear()

    for event in events:
        chunk.append(event)
        if len(chunk) >= batch_size:
            flush()
    flush()
    return latest
