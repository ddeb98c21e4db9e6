"""proximity: an event within ``distance_m`` of a feature of a point-of-interest layer.

The incident carries the nearest feature and its distance (the minimum over its events), and
``escalate`` steps with ``within_m`` raise the severity the closer it gets. Events of one subject
within one ``dedup`` bucket form one incident, like threshold rules. Combine with ``when`` for a
value condition (PM2.5 above 75 near a school).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import shapely
import shapely.ops
from pydantic import Field

from rules.duration import Duration
from rules.kinds.base import Kind, Scope, build_incident, metres_between, metres_to_degrees
from rules.model import Enriched, event_value
from rules.spec import RuleBase
from rules.state import add_event, bucket_of, new_entry


class ProximityRule(RuleBase):
    kind: Literal["proximity"]
    near: str = Field(description="Layer of the features (schools, hospitals, ...).")
    distance_m: float = Field(gt=0, le=50_000)
    field: str = Field(default="value", description="Reported value (when the event has it).")
    dedup: Duration = Field(default="10m", validate_default=True)  # type: ignore[assignment]


class Proximity(Kind):
    rule: ProximityRule

    def __init__(self, rule: ProximityRule, ctx: Any) -> None:
        super().__init__(rule, ctx)
        self.layer = ctx.layers[rule.near]
        self.size_ms = int(rule.dedup.total_seconds() * 1000)

    def feed(self, items: Sequence[Enriched], ts_ms: Sequence[int], scope: Scope) -> None:
        if not items:
            return
        lon = np.array([i.event.lon for i in items])
        lat = np.array([i.event.lat for i in items])
        points = shapely.points(lon, lat)
        reach = metres_to_degrees(self.rule.distance_m, float(np.max(np.abs(lat))))
        idx_pt, idx_feat = self.layer.tree.query_nearest(points, max_distance=reach, all_matches=False)
        for p, f in zip(idx_pt.tolist(), idx_feat.tolist(), strict=True):
            item, ts = items[p], ts_ms[p]
            near_pt = shapely.ops.nearest_points(self.layer.geoms[f], points[p])[0]
            dist = metres_between(item.event.lon, item.event.lat, near_pt.x, near_pt.y)
            if dist > self.rule.distance_m:
                continue
            self._add(scope, item, ts, self.layer.ids[f], round(dist, 1))

    def _add(self, scope: Scope, item: Enriched, ts: int, feature: str, dist: float) -> None:
        subject = item.event.subject
        start = bucket_of(ts, self.size_ms)
        zone = self.zone_of(item)
        entry, fresh = scope.load(self.key(subject, start), lambda: new_entry(subject, zone, start, start + self.size_ms))
        if fresh:
            value = event_value(item.event, self.rule.field)
            add_event(entry, ts, item.event.id, dist if value is None else value, item.event.lon, item.event.lat,
                      zone=zone)
            best = entry.get("near")
            if best is None or (dist, feature) < (best[1], best[0]):
                entry["near"] = [feature, dist]
        scope.emit(self._snapshot(entry))

    def _snapshot(self, entry: dict[str, Any]) -> Any:
        feature, dist = entry["near"]
        return build_incident(
            self.ctx, self.rule, subject=str(entry["subj"]), start_ms=int(entry["start"]), end_ms=int(entry["end"]),
            entry=entry, value=float(entry["x"]), threshold=self.rule.distance_m, op="within", zone=entry.get("zone"),
            distance_m=float(dist),
            details={"nearest_feature": feature, "nearest_name": self.layer.name_of(feature), "distance_m": dist,
                     "layer": self.rule.near},
        )
