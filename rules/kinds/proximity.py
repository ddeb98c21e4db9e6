"""proximity: an event within ``distance_m`` of a feature of a point-of-interest layer.

Distances are haversine metres from the event to the feature (for polygon or line features, to
the point of the feature nearest in degrees). The nearest feature is the one at the smallest
distance in metres, ties broken by feature id: every feature within reach is measured, since the
nearest in degrees need not be the nearest on the ground (a degree of longitude is shorter).
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
from pydantic import Field

from rules.duration import Duration
from rules.fields import NumericField
from rules.kinds.base import Fact, Kind, Scope, build_incident, metres_between_arrays, metres_to_degrees
from rules.model import Enriched
from rules.spec import FieldRef, RuleBase
from rules.state import add_event, bucket_of, copy_entry, new_entry


class ProximityRule(RuleBase):
    kind: Literal["proximity"]
    near: str = Field(description="Layer of the features (schools, hospitals, ...).")
    distance_m: float = Field(gt=0, le=50_000)
    field: NumericField = Field(default="value", description="Reported value (when the event has it).")
    dedup: Duration = Field(default="10m", validate_default=True)  # type: ignore[assignment]

    def field_refs(self) -> list[FieldRef]:
        return [*super().field_refs(), FieldRef(("field",), self.field, needed=False)]


class Proximity(Kind):
    rule: ProximityRule
    reads_columns = True

    def __init__(self, rule: ProximityRule, ctx: Any) -> None:
        super().__init__(rule, ctx)
        self.layer = ctx.layers[rule.near]
        self.size_ms = int(rule.dedup.total_seconds() * 1000)

    def feed(self, items: Sequence[Enriched], ts_ms: Sequence[int], scope: Scope) -> None:
        if not items:
            return
        facts = self.facts(items, self.rule.field)
        lon = np.array([f[4] for f in facts], dtype=np.float64)
        lat = np.array([f[5] for f in facts], dtype=np.float64)
        points = shapely.points(lon, lat)
        reach = metres_to_degrees(self.rule.distance_m, float(np.max(np.abs(lat)))) * 1.01
        idx_pt, idx_feat = self.layer.tree.query(points, predicate="dwithin", distance=reach)
        if not len(idx_pt):
            return
        # the point of each candidate feature nearest to the event: the start of the shortest line
        ends = shapely.get_coordinates(shapely.shortest_line(self.layer.geoms[idx_feat], points[idx_pt]))
        dist = metres_between_arrays(lon[idx_pt], lat[idx_pt], ends[0::2, 0], ends[0::2, 1])
        best: dict[int, tuple[float, str]] = {}
        for p, f, d in zip(idx_pt.tolist(), idx_feat.tolist(), dist.tolist(), strict=True):
            if d <= self.rule.distance_m:
                candidate = (d, self.layer.ids[f])
                if p not in best or candidate < best[p]:
                    best[p] = candidate
        for p in sorted(best):
            d, feature = best[p]
            self._add(scope, facts[p], ts_ms[p], feature, round(d, 1))

    def _add(self, scope: Scope, fact: Fact, ts: int, feature: str, dist: float) -> None:
        value, zone, subject, event_id, lon, lat = fact
        start = bucket_of(ts, self.size_ms)
        entry, fresh = scope.load(
            self.key(subject, start), lambda: new_entry(subject, zone, start, start + self.size_ms), copy_entry
        )
        if fresh:
            add_event(entry, ts, event_id, dist if value is None else value, lon, lat, zone=zone)
            best = entry.get("near")
            if best is None or (dist, feature) < (best[1], best[0]):
                entry["near"] = [feature, dist]
        scope.emit(self._snapshot(entry))

    def _snapshot(self, entry: dict[str, Any]) -> Any:
        feature, dist = entry["near"]
        return build_incident(
            self.ctx,
            self.rule,
            subject=str(entry["subj"]),
            start_ms=int(entry["start"]),
            end_ms=int(entry["end"]),
            entry=entry,
            value=float(entry["x"]),
            threshold=self.rule.distance_m,
            op="within",
            zone=entry.get("zone"),
            distance_m=float(dist),
            details={
                "nearest_feature": feature,
                "nearest_name": self.layer.name_of(feature),
                "distance_m": dist,
                "layer": self.rule.near,
            },
        )
