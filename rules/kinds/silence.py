"""silence: no event from a subject for at least ``for`` (sensor offline); zones going blind.

A subject is silent once the event-time watermark is ``for`` past its last event; its incident
(one per silence episode, keyed by that last event) opens at the tick that sees it and resolves
when the subject speaks again. A gap found inside the data (two events further apart than
``for``) is reported too, already resolved, so replay and stream agree whatever the tick timing.

With ``zone_share``, a zone in which at least that share of its known subjects (every subject
seen there) is silent gets a "zone blind" incident: rules relying on those sensors cannot say
"all clear" there. Its window starts when the share was reached (the moment the last subject
needed went silent), and it resolves at the event that brings the share below ``zone_share``.
Blindness is judged at every event of the zone and at every tick, from the subjects' last
events, so a blind spell inside the data is found by replay just as by a live tick. Its revision
is the largest number of silent subjects seen during the episode (plus one once resolved).

Silence is judged against the watermark, which every subject shares: replay equals stream when
events arrive in event-time order, batched in any way. An event that arrives after the watermark
is already ``for`` past its subject's previous event opens an episode that replay would not have
(it resolves at that event); per-subject order alone is not enough.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Sequence
from typing import Any, Literal

from pydantic import ConfigDict, Field

from rules.duration import Duration
from rules.kinds.base import Kind, Scope, build_incident
from rules.model import Enriched, Incident
from rules.routes import routing_layer
from rules.spec import RuleBase
from rules.state import Entry

OUTSIDE = "_none"


class SilenceRule(RuleBase):
    kind: Literal["silence"]
    for_: Duration = Field(alias="for", description="Silence longer than this is an incident.")
    zone_share: float | None = Field(default=None, gt=0, le=1, description="Share of silent subjects: zone blind.")

    model_config = ConfigDict(populate_by_name=True, extra="forbid", frozen=True)


class Silence(Kind):
    rule: SilenceRule
    reads_columns = True
    #: The pack's other rules that take the events this rule watches (``Match.overlaps``): in a
    #: blind zone they cannot say "all clear", and a blind incident names them (``details.rules``).
    relying: tuple[str, ...] = ()

    def __init__(self, rule: SilenceRule, ctx: Any) -> None:
        super().__init__(rule, ctx)
        self.for_ms = int(rule.for_.total_seconds() * 1000)
        # A zone of a layer other than the routing layer can hold subjects of several partitions,
        # and its share of silent subjects needs all of them: the rule is spread, and only the
        # partition owning a zone keeps it (its subjects, ticks and incidents), as windows do.
        self.spreading = rule.layer not in (None, routing_layer(ctx.layers))

    def open_ended(self, incident: Incident) -> bool:
        """An open episode changes until it resolves."""
        return incident.status == "open"

    def feed(self, items: Sequence[Enriched], ts_ms: Sequence[int], scope: Scope) -> None:
        # per zone touched in this batch: its subjects' last event times, sorted, kept in step with
        # entry["last"], so judging blindness at each event costs a bisection, not a pass over the zone
        order: dict[str, list[int]] = {}
        for (_, found, sid, _, lon, lat), ts in zip(self.facts(items, "value"), ts_ms, strict=True):
            zone = found or OUTSIDE
            if not self.owns_group(scope, zone):
                continue  # another partition owns this zone (and gets this event too)
            key = self.key("zone", zone)
            entry, fresh = scope.load(key, _factory(zone), _copy_zone)
            if not fresh:
                continue
            lasts = order.get(key)
            if lasts is None:
                lasts = order[key] = self._sorted_lasts(entry)
            prev = entry["last"].get(sid)
            # The zone just before this event, then just after it: every event is a point at which
            # blindness is judged, whatever the batching, so replay finds what live ticks find.
            self._blind(scope, entry, ts, lasts)
            if prev is not None and ts > prev:
                if ts - prev >= self.for_ms:
                    # a gap inside the data: a silence episode that already ended (a tick may have opened it)
                    self._episode(scope, entry, sid, int(prev), resolved=ts)
                elif sid in entry["silent"]:  # opened by a tick, then an older event came: out of order
                    self._episode(scope, entry, sid, int(entry["silent"][sid]), resolved=ts)
                entry["silent"].pop(sid, None)
            if prev is None or ts > prev:
                if prev is not None and lasts:
                    del lasts[bisect.bisect_left(lasts, int(prev))]
                if self.rule.zone_share is not None:
                    bisect.insort(lasts, ts)
                entry["last"][sid] = ts
                entry["where"][sid] = [lon, lat]
            self._blind(scope, entry, ts, lasts)
            scope.put(key, entry)

    def tick(self, scope: Scope, watermark_ms: int, keys: Sequence[str]) -> None:
        for key in keys:
            entry = scope.get(key, _copy_zone)
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
        end = resolved if resolved is not None else start
        ep = {"n": 1, "last": end, "ev": [[last, f"{sid}@last", 0.0, lon, lat]]}
        zone = None if entry["zone"] == OUTSIDE else entry["zone"]
        scope.emit(
            build_incident(
                self.ctx,
                self.rule,
                subject=sid,
                start_ms=last,
                end_ms=end,
                entry=ep,
                value=float((end - last) / 1000.0),
                threshold=self.for_ms / 1000.0,
                op=">=",
                zone=zone,
                status="resolved" if resolved is not None else "open",
                resolved_ms=resolved,
                details={"silent_since": last, "scope": "subject"},
            )
        )

    def _sorted_lasts(self, entry: dict[str, Any]) -> list[int]:
        """The subjects' last event times, sorted (only blindness needs them)."""
        return sorted(entry["last"].values()) if self.rule.zone_share is not None else []

    def _blind(self, scope: Scope, entry: dict[str, Any], now_ms: int, lasts: list[int] | None = None) -> bool:
        """Judge the zone at ``now_ms``; emit when a blind episode starts, grows or ends.

        ``lasts`` are the subjects' last event times, sorted (built from the entry when not given).
        """
        share = self.rule.zone_share
        known = len(entry["last"])
        if share is None or entry["zone"] == OUTSIDE or known == 0:
            return False
        if lasts is None:
            lasts = self._sorted_lasts(entry)
        # silent: the subjects whose last event is ``for`` or more before now (the earliest first)
        silent = bisect.bisect_right(lasts, now_ms - self.for_ms)
        needed = max(1, math.ceil(share * known))
        zone = entry["zone"]
        if silent >= needed:
            if entry["blind"] is None:
                entry["blind"] = lasts[needed - 1] + self.for_ms  # the moment the share was reached
                entry["peak"] = silent
            elif silent > int(entry.get("peak", 0)):
                entry["peak"] = silent
            else:
                return False
            self._emit_blind(scope, zone, int(entry["blind"]), int(entry["peak"]), known, resolved=None)
            return True
        if entry["blind"] is not None:
            start, peak = int(entry["blind"]), int(entry.get("peak", needed))
            entry["blind"] = None
            self._emit_blind(scope, zone, start, peak, known, resolved=now_ms)
            return True
        return False

    def _emit_blind(self, scope: Scope, zone: str, start: int, peak: int, known: int, *, resolved: int | None) -> None:
        layer = self.ctx.layers.get(self.rule.layer or "")
        geom = layer.geoms[layer.ids.index(zone)] if layer is not None and zone in layer.ids else None
        point = geom.representative_point() if geom is not None else None
        end = resolved if resolved is not None else start
        ep = {
            "n": peak,
            "last": end,
            "ev": [[start, f"{zone}@blind", float(peak), point.x if point else 0.0, point.y if point else 0.0]],
        }
        scope.emit(
            build_incident(
                self.ctx,
                self.rule,
                subject=f"zone:{zone}",
                start_ms=start,
                end_ms=end,
                entry=ep,
                value=round(peak / known, 4),
                threshold=float(self.rule.zone_share or 0),
                op=">=",
                zone=zone,
                status="resolved" if resolved is not None else "open",
                resolved_ms=resolved,
                details={
                    "scope": "zone",
                    "blind": resolved is None,
                    "silent": peak,
                    "known": known,
                    "rules": list(self.relying),
                },
            )
        )


def _copy_zone(entry: Entry) -> Entry:
    """A zone entry's private copy: its per-subject dicts are copied (at C speed), their values shared.

    The generic copy also copies every ``where`` position list, one per sensor of the zone, per
    batch; positions are only ever replaced, never changed in place.
    """
    out = dict(entry)
    for name in ("last", "where", "silent", "pos"):
        if name in out:
            out[name] = dict(out[name])
    return out


def _factory(zone: str) -> Callable[[], Entry]:
    return lambda: {"zone": zone, "last": {}, "where": {}, "silent": {}, "blind": None, "peak": 0, "pos": {}}
