"""geofence: tracks against fences (the zones of a layer), in Tile38's vocabulary.

- ``enter`` / ``exit``: the object crossed into / out of a fence; ``cross``: either. One incident
  per crossing, keyed by the object, the fence and the fix that crossed.
- ``inside``: the object has stayed inside one fence for ``min_dwell``; ``outside``: it has stayed
  outside **every** selected fence for ``min_dwell`` (a robotaxi stalled away from all stop zones is
  one incident, not one per stop zone). The incident stays open while the dwell lasts and resolves
  at the first fix that ends it.

A ``buffer_m`` band around each border absorbs GPS jitter: an object is inside once it is
``buffer_m`` within the fence, outside once it is ``buffer_m`` beyond it, and keeps its previous
state in between. The first fix of an object sets its state without a transition (a first fix in
the band leaves it unknown until a fix leaves the band). Fixes are taken in event-time order per
object; a fix older than the newest seen is ignored (counted in ``details.out_of_order``), so keep
per-object order (one producer per object) for replay to equal stream.

``when`` and ``schedule`` are judged here, not by the engine: a fix that fails them still moves the
object (its inside/outside state follows every fix), but a crossing at such a fix is not reported,
and it ends a dwell, which restarts at the next fix that meets them. So a robotaxi that drives
(``when: speed_mps < 0.5`` fails) between two short stops has not dwelt for the sum of the stops.
Fences are immutable: the buffered copies are built once, when the rule is loaded.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any, Literal

import numpy as np
import shapely
from pydantic import Field

from rules.duration import Duration
from rules.kinds.base import Kind, Scope, build_incident, metres_to_degrees
from rules.model import Enriched, Incident
from rules.spec import RuleBase
from rules.state import EVIDENCE_CAP, Entry

ANY = "*"  # the fence key of an ``outside`` rule: outside every selected fence


class GeofenceRule(RuleBase):
    kind: Literal["geofence"]
    fences: str = Field(description="Layer whose zones are the fences.")
    fence_ids: list[str] | None = Field(default=None, description="Only these zones of the layer.")
    transition: Literal["enter", "exit", "cross", "inside", "outside"]
    # A timedelta default: parse_duration rejects "0s", so a string default failed every rule that omitted it.
    min_dwell: Duration = Field(
        default=timedelta(0), json_schema_extra={"default": "0s"}, description="inside/outside: how long to stay."
    )
    buffer_m: float = Field(default=0.0, ge=0, le=5000, description="Hysteresis band around each border.")


class Geofence(Kind):
    rule: GeofenceRule
    gates_itself = True
    resends_episodes = True

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
        union = self.rule.transition == "outside"
        for row, (item, ts) in enumerate(zip(items, ts_ms, strict=True)):
            obj = item.event.subject
            if union:  # inside any fence, or beyond all of them
                self._step(scope, obj, ANY, item, ts, bool(inside[row].any()), bool(beyond[row].all()))
                continue
            for f, fence in enumerate(self.fence_ids):
                self._step(scope, obj, fence, item, ts, bool(inside[row, f]), bool(beyond[row, f]))

    def _step(self, scope: Scope, obj: str, fence: str, item: Enriched, ts: int, inside: bool, beyond: bool) -> None:
        key = self.key(obj, fence)
        entry, fresh = scope.load(key, _factory(obj, fence), _copy_track)
        if not fresh:
            for ep in entry["eps"].values():
                scope.emit(self._snapshot(entry, ep))
            return
        if ts <= int(entry["t"]):
            entry["ooo"] = int(entry["ooo"]) + 1
            scope.put(key, entry)
            for ep in entry["eps"].values():  # the count is in the snapshots: the latest must show it
                scope.emit(self._snapshot(entry, ep))
            return
        entry["t"] = ts
        passes = self.gate(item)
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
        if transition is not None and passes and (want == transition or want == "cross"):
            ep = {"start": ts, "n": 1, "last": ts, "ev": [record], "what": transition}
            entry["eps"] = {**entry["eps"], str(ts): ep}
            touched.append(ep)
        if want in ("inside", "outside"):
            if passes and entry["in"] is (want == "inside"):
                if entry.get("dwell") is None:
                    entry["dwell"] = ts
                since = int(entry["dwell"])
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
            else:
                entry["dwell"] = None
                for ep in entry["eps"].values():
                    if ep.get("resolved") is None:
                        ep["resolved"] = ts
                        touched.append(ep)
        if len(entry["eps"]) > 8:  # keep the newest transition episodes only
            entry["eps"] = dict(sorted(entry["eps"].items(), key=lambda kv: int(kv[0]))[-8:])
        scope.put(key, entry)
        for ep in touched:
            scope.emit(self._snapshot(entry, ep))

    def open_ended(self, incident: Incident) -> bool:
        """A dwell (inside, outside) changes until the object leaves; a crossing never changes."""
        return incident.status == "open" and incident.details.get("transition") in ("inside", "outside")

    def dedup_key(self, incident: Incident) -> str:
        """An object and its fence (``details.fence``; None for a rule over the union of fences)."""
        return f"{incident.subject}@{incident.details.get('fence')}"

    def _snapshot(self, entry: dict[str, Any], ep: dict[str, Any]) -> Incident:
        fence = str(entry["fence"])
        resolved = ep.get("resolved")
        return build_incident(
            self.ctx,
            self.rule,
            subject=str(entry["subj"]),
            id_subject=f"{entry['subj']}@{fence}",
            start_ms=int(ep["start"]),
            end_ms=int(resolved if resolved is not None else ep["last"]),
            entry=ep,
            value=float(int(ep["last"]) - int(ep["start"])) / 1000.0,
            threshold=self.dwell_ms / 1000.0,
            op=">=",
            zone=None if fence == ANY else fence,
            layer=self.rule.fences,
            status="resolved" if resolved is not None else "open",
            resolved_ms=resolved,
            details={
                "transition": ep["what"],
                "fence": None if fence == ANY else fence,
                "fence_name": None if fence == ANY else self.layer.name_of(fence),
                "buffer_m": self.rule.buffer_m,
                "out_of_order": int(entry["ooo"]),
            },
        )


def _copy_track(entry: Entry) -> Entry:
    """An object's private copy, made once per batch: its episodes (at most 8) grow in place, so each
    is copied too (the generic copy goes one level deep and would share them with the stored entry)."""
    out = dict(entry)
    out["pos"] = dict(entry.get("pos", {}))
    out["eps"] = {at: {**ep, "ev": list(ep["ev"])} for at, ep in entry.get("eps", {}).items()}
    return out


def _factory(obj: str, fence: str) -> Callable[[], Entry]:
    return lambda: {
        "in": None,
        "since": None,
        "dwell": None,
        "t": -1,
        "pos": {},
        "ooo": 0,
        "subj": obj,
        "fence": fence,
        "eps": {},
    }
