"""geofence: tracks against fences (the zones of a layer), in Tile38's vocabulary.

- ``enter`` / ``exit``: the object crossed into / out of a fence; ``cross``: either.
- ``inside`` / ``outside``: the object has stayed inside / outside a fence for ``min_dwell``
  (for example a robotaxi stalled outside every stop zone for 3 minutes; add ``when`` for speed).

A ``buffer_m`` band around each border absorbs GPS jitter: an object is inside once it is
``buffer_m`` within the fence, outside once it is ``buffer_m`` beyond it, and keeps its previous
state in between. The first fix of an object sets its state without a transition. Fixes are
taken in event-time order per object; an older fix than the newest seen is ignored (counted).
Fences are immutable: the buffered copies are built once, when the rule is loaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import shapely
from pydantic import Field

from rules.duration import Duration
from rules.kinds.base import Kind, Scope, build_incident, metres_to_degrees
from rules.model import Enriched
from rules.spec import RuleBase
from rules.state import EVIDENCE_CAP


class GeofenceRule(RuleBase):
    kind: Literal["geofence"]
    fences: str = Field(description="Layer whose zones are the fences.")
    fence_ids: list[str] | None = Field(default=None, description="Only these zones of the layer.")
    transition: Literal["enter", "exit", "cross", "inside", "outside"]
    min_dwell: Duration = Field(default="0s", validate_default=True)  # type: ignore[assignment]
    buffer_m: float = Field(default=0.0, ge=0, le=5000, description="Hysteresis band around each border.")


class Geofence(Kind):
    rule: GeofenceRule

    def __init__(self, rule: GeofenceRule, ctx: Any) -> None:
        super().__init__(rule, ctx)
        layer = ctx.layers[rule.fences]
        keep = [i for i, z in enumerate(layer.ids) if rule.fence_ids is None or z in rule.fence_ids]
        self.fence_ids = [layer.ids[i] for i in keep]
        self.layer = layer
        geoms = layer.geoms[keep]
        lat0 = float(np.mean([g.centroid.y for g in geoms])) if len(geoms) else 0.0
        band = metres_to_degrees(rule.buffer_m, lat0) if rule.buffer_m else 0.0
        self.inner = shapely.buffer(geoms, -band) if band else geoms
        self.outer = shapely.buffer(geoms, band) if band else geoms
        shapely.prepare(self.inner)
        shapely.prepare(self.outer)
        self.dwell_ms = int(rule.min_dwell.total_seconds() * 1000)

    def feed(self, items: Sequence[Enriched], ts_ms: Sequence[int], scope: Scope) -> None:
        if not items or not self.fence_ids:
            return
        lon = np.array([i.event.lon for i in items])
        lat = np.array([i.event.lat for i in items])
        # (n_items, n_fences) boolean matrices, one vectorised predicate call each
        inside = shapely.contains_xy(self.inner[None, :], lon[:, None], lat[:, None])
        beyond = ~shapely.contains_xy(self.outer[None, :], lon[:, None], lat[:, None])
        for row, (item, ts) in enumerate(zip(items, ts_ms, strict=True)):
            obj = item.event.subject
            for f, fence in enumerate(self.fence_ids):
                self._step(scope, obj, fence, item, ts, bool(inside[row, f]), bool(beyond[row, f]))

    def _step(self, scope: Scope, obj: str, fence: str, item: Enriched, ts: int, inside: bool, beyond: bool) -> None:
        key = self.key(obj, fence)
        entry, fresh = scope.load(key, lambda: {"in": None, "since": None, "t": -1, "pos": {}, "ooo": 0,
                                                "subj": obj, "fence": fence, "eps": {}})
        if not fresh:
            for ep in entry["eps"].values():
                scope.emit(self._snapshot(entry, ep))
            return
        if ts <= int(entry["t"]):
            entry["ooo"] = int(entry["ooo"]) + 1
            scope.put(key, entry)
            return
        entry["t"] = ts
        state = entry["in"]
        new_state = True if inside else (False if beyond else state)
        record = [ts, item.event.id, 1.0 if new_state else 0.0, item.event.lon, item.event.lat]
        transition = None
        if state is None:
            entry.update({"in": new_state, "since": ts})
        elif new_state != state and new_state is not None:
            transition = "enter" if new_state else "exit"
            entry.update({"in": new_state, "since": ts})
        want = self.rule.transition
        touched: list[dict[str, Any]] = []
        if transition is not None and (want == transition or want == "cross"):
            ep = {"start": ts, "n": 1, "last": ts, "ev": [record], "what": transition}
            entry["eps"] = {**entry["eps"], str(ts): ep}
            touched.append(ep)
        if want in ("inside", "outside") and entry["in"] is (want == "inside"):
            since = int(entry["since"])
            ep = entry["eps"].get(str(since))
            if ep is None and ts - since >= self.dwell_ms:
                ep = {"start": since, "n": 0, "last": since, "ev": [], "what": want}
                entry["eps"] = {str(since): ep}  # only the current dwell episode is kept
            if ep is not None:
                ep["n"] += 1
                ep["last"] = ts
                if len(ep["ev"]) < EVIDENCE_CAP:
                    ep["ev"].append(record)
                touched.append(ep)
        elif want in ("inside", "outside"):
            for ep in entry["eps"].values():
                if ep.get("resolved") is None:
                    ep["resolved"] = ts
                    touched.append(ep)
        if len(entry["eps"]) > 8:  # keep the newest transition episodes only
            entry["eps"] = dict(sorted(entry["eps"].items(), key=lambda kv: int(kv[0]))[-8:])
        scope.put(key, entry)
        for ep in touched:
            scope.emit(self._snapshot(entry, ep))

    def _snapshot(self, entry: dict[str, Any], ep: dict[str, Any]) -> Any:
        fence = str(entry["fence"])
        resolved = ep.get("resolved")
        return build_incident(
            self.ctx, self.rule, subject=str(entry["subj"]), id_subject=f"{entry['subj']}@{fence}",
            start_ms=int(ep["start"]), end_ms=int(resolved if resolved is not None else ep["last"]), entry=ep,
            value=float(int(ep["last"]) - int(ep["start"])) / 1000.0, threshold=self.dwell_ms / 1000.0, op=">=",
            zone=fence, layer=self.rule.fences, status="resolved" if resolved is not None else "open",
            resolved_ms=resolved,
            details={"transition": ep["what"], "fence": fence, "fence_name": self.layer.name_of(fence),
                     "buffer_m": self.rule.buffer_m, "out_of_order": int(entry["ooo"])},
        )
