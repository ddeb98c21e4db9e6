"""silence: no event from a subject for at least ``for`` (sensor offline); zones going blind.

A subject is silent once the event-time watermark is ``for`` past its last event; its incident
(one per silence episode, keyed by that last event) resolves when it speaks again. A gap found
inside the data (two events further apart than ``for``) is reported too, already resolved, so
replay and stream agree whatever the tick timing. With ``zone_share``, a zone in which at least
that share of its known subjects is silent gets a "zone blind" incident: rules relying on those
sensors cannot say "all clear" there (see ``Engine.blind_zones``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import Field

from rules.duration import Duration
from rules.kinds.base import Kind, Scope, build_incident
from rules.model import Enriched
from rules.spec import RuleBase

OUTSIDE = "_none"


class SilenceRule(RuleBase):
    kind: Literal["silence"]
    for_: Duration = Field(alias="for", description="Silence longer than this is an incident.")
    zone_share: float | None = Field(default=None, gt=0, le=1, description="Share of silent subjects: zone blind.")

    model_config = {"populate_by_name": True, "extra": "forbid", "frozen": True}


class Silence(Kind):
    rule: SilenceRule

    def __init__(self, rule: SilenceRule, ctx: Any) -> None:
        super().__init__(rule, ctx)
        self.for_ms = int(rule.for_.total_seconds() * 1000)

    def feed(self, items: Sequence[Enriched], ts_ms: Sequence[int], scope: Scope) -> None:
        for item, ts in zip(items, ts_ms, strict=True):
            zone = self.zone_of(item) or OUTSIDE
            key = self.key("zone", zone)
            entry, fresh = scope.load(key, lambda z=zone: {"zone": z, "last": {}, "where": {}, "silent": {},
                                                            "blind": None, "pos": {}})
            if not fresh:
                continue
            sid = item.event.subject
            prev = entry["last"].get(sid)
            if prev is not None and ts > prev and ts - prev >= self.for_ms:
                # a gap inside the data: a silence episode that already ended
                self._episode(scope, entry, sid, int(prev), resolved=ts)
            elif sid in entry["silent"] and ts > int(entry["silent"][sid]):
                self._episode(scope, entry, sid, int(entry["silent"][sid]), resolved=ts)
            if sid in entry["silent"] and ts > int(entry["silent"][sid]):
                del entry["silent"][sid]
            if prev is None or ts > prev:
                entry["last"][sid] = ts
                entry["where"][sid] = [item.event.lon, item.event.lat]
            scope.put(key, entry)

    def tick(self, scope: Scope, watermark_ms: int, keys: Sequence[str]) -> None:
        for key in keys:
            entry = scope.get(key)
            if entry is None:
                continue
            changed = False
            for sid, last in sorted(entry["last"].items()):
                if sid not in entry["silent"] and watermark_ms - int(last) >= self.for_ms:
                    entry["silent"][sid] = int(last)
                    self._episode(scope, entry, sid, int(last), resolved=None)
                    changed = True
            changed |= self._blind(scope, entry, watermark_ms)
            if changed:
                scope.put(key, entry)

    def _episode(self, scope: Scope, entry: dict[str, Any], sid: str, last: int, *, resolved: int | None) -> None:
        lon, lat = entry["where"].get(sid, [0.0, 0.0])
        start = last + self.for_ms
        ep = {"n": 1, "last": resolved if resolved is not None else start, "ev": [[last, f"{sid}@last", 0.0, lon, lat]]}
        zone = None if entry["zone"] == OUTSIDE else entry["zone"]
        scope.emit(build_incident(
            self.ctx, self.rule, subject=sid, start_ms=last, end_ms=resolved if resolved is not None else start,
            entry=ep, value=float(((resolved or start) - last) / 1000.0), threshold=self.for_ms / 1000.0, op=">=",
            zone=zone, status="resolved" if resolved is not None else "open", resolved_ms=resolved,
            details={"silent_since": last, "scope": "subject"},
        ))

    def _blind(self, scope: Scope, entry: dict[str, Any], watermark_ms: int) -> bool:
        share = self.rule.zone_share
        known = len(entry["last"])
        if share is None or entry["zone"] == OUTSIDE or known == 0:
            return False
        silent = sorted(int(v) + self.for_ms for v in entry["silent"].values())
        needed = max(1, math.ceil(share * known))
        blind_now = len(silent) >= needed
        zone = entry["zone"]
        if blind_now and entry["blind"] is None:
            entry["blind"] = silent[needed - 1]  # the moment the share was reached
        elif not blind_now and entry["blind"] is not None:
            start = int(entry["blind"])
            entry["blind"] = None
            self._emit_blind(scope, zone, start, len(silent), known, resolved=watermark_ms)
            return True
        else:
            return False
        self._emit_blind(scope, zone, int(entry["blind"]), len(silent), known, resolved=None)
        return True

    def _emit_blind(self, scope: Scope, zone: str, start: int, silent: int, known: int, *, resolved: int | None) -> None:
        layer = self.ctx.layers.get(self.rule.layer or "")
        geom = layer.geoms[layer.ids.index(zone)] if layer is not None and zone in layer.ids else None
        point = geom.representative_point() if geom is not None else None
        ep = {"n": silent, "last": resolved or start,
              "ev": [[start, f"{zone}@blind", float(silent), point.x if point else 0.0, point.y if point else 0.0]]}
        scope.emit(build_incident(
            self.ctx, self.rule, subject=f"zone:{zone}", start_ms=start, end_ms=resolved or start, entry=ep,
            value=round(silent / known, 4), threshold=float(self.rule.zone_share or 0), op=">=", zone=zone,
            status="resolved" if resolved is not None else "open", resolved_ms=resolved,
            details={"scope": "zone", "blind": resolved is None, "silent": silent, "known": known},
        ))
