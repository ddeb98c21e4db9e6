"""The event sets and packs of `cityops bench`: deterministic, with completion markers and latency probes.

Two configurations:

- the Wuhan demo pack (its 13 districts and 15 rules) with readings, reports and drone tracks;
- a synthetic grid of ``zones`` square zones and a pack of ``rules`` rules (thresholds, windows,
  sustained conditions and one drone-height rule), like the throughput target of issue #7
  (1,000 zones, 100 rules).

Completion and latency both rest on one threshold rule over tracks without a layer (the drone
height rule in both configurations): a track of a *new* object above it opens a new incident
whose first evidence is that very event. ``markers`` places one such track at the end of the
event set in every partition of the events topic, so that seeing all marker incidents proves
that every partition has processed everything before them.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiokafka.partitioner import murmur2

from rules.engine import Engine
from rules.kinds.threshold import ThresholdRule
from rules.model import Enriched, Track
from rules.pack import LoadedPack
from rules.pipeline import Pipeline
from streams.errors import StreamsError

START = datetime(2026, 7, 1, tzinfo=UTC)
STEP_MS = 20  # event-time spacing of the generated events (50 events/s of event time)
BBOX = (114.15, 30.45, 114.50, 30.70)  # lon, lat: central Wuhan
GRID_METRICS = 10
GRID_CATEGORIES = 8


class BenchError(StreamsError):
    """The benchmark cannot run as configured (pack without a usable rule, a phase that timed out...)."""


Event = dict[str, Any]


@dataclass(frozen=True)
class Probe:
    """What a probe or marker must look like to open a new incident: a track above a threshold rule."""

    object_type: str
    field: str
    value: float


def probe_rule(pack: LoadedPack) -> Probe:
    """The threshold rule over tracks (no layer, ``>``/``>=``) that markers and latency probes fire."""
    for rule in pack.spec.rules:
        if (
            isinstance(rule, ThresholdRule)
            and rule.layer is None
            and rule.match.kind in (None, "track")
            and rule.match.object_type is not None
            and rule.op in (">", ">=")
            and not rule.when
            and rule.schedule is None
        ):
            return Probe(rule.match.object_type, rule.field, rule.value + 100.0)
    raise BenchError(
        f"pack '{pack.spec.pack}' has no threshold rule over tracks without a layer (like the Wuhan pack's "
        "airspace.drone-too-high): the benchmark needs one to detect completion and to measure latency"
    )


def probe_event(probe: Probe, event_id: str, object_id: str, ts: datetime, lon: float, lat: float) -> Event:
    """A track of a new object that opens a new incident of the probe rule."""
    return {
        "kind": "track",
        "id": event_id,
        "ts": ts.isoformat(),
        "lon": lon,
        "lat": lat,
        "object_id": object_id,
        "object_type": probe.object_type,
        probe.field: probe.value,
        "source": "bench",
    }


def markers(pack: LoadedPack, partitions: int, at: datetime, where: tuple[float, float]) -> list[Event]:
    """One probe track per partition of the events topic, routed there by the worker's own route key."""
    probe = probe_rule(pack)
    route = Pipeline(Engine(pack)).route_key
    found: dict[int, Event] = {}
    n = 0
    while len(found) < partitions and n < 100_000:
        event = probe_event(probe, f"bench-marker-{n}", f"bench-marker-{n}", at, *where)
        item = Enriched.model_construct(event=Track.model_validate(event), zones={})
        partition = (murmur2(route(item).encode()) & 0x7FFFFFFF) % partitions
        found.setdefault(partition, event)
        n += 1
    return [found[p] for p in sorted(found)]


def _ts(i: int) -> str:
    return (START + timedelta(milliseconds=i * STEP_MS)).isoformat()


def wuhan_events(n: int, seed: int = 1) -> list[Event]:
    """n readings, reports and drone tracks from 2,000 sensors and 20 drones over central Wuhan.

    About 14% of the water levels exceed 30 cm and 7% of the PM2.5 readings 150 µg/m³, so the
    threshold, sustained and correlation rules fire; reports feed the window and cluster rules.
    """
    rng = random.Random(seed)
    sensors = [(f"s{i}", *_point(rng)) for i in range(2000)]
    drones = [(f"uav-{i}", *_point(rng)) for i in range(20)]
    out: list[Event] = []
    for i in range(n):
        ts = _ts(i)
        if i % 50 == 7:
            oid, lon, lat = drones[(i // 50) % len(drones)]
            drift = (i // 1000) * 0.0005
            out.append(
                {
                    "kind": "track",
                    "id": f"k{i}",
                    "ts": ts,
                    "lon": round(lon + drift, 6),
                    "lat": lat,
                    "object_id": oid,
                    "object_type": "drone",
                    "alt_m": round(rng.uniform(40, 130), 1),
                    "speed_mps": 8.0,
                }
            )
            continue
        sid, lon, lat = sensors[i % len(sensors)]
        if i % 10 == 0:
            category = rng.choice(["illegal_dumping", "waterlogging", "noise"])
            out.append({"kind": "report", "id": f"r{i}", "ts": ts, "lon": lon, "lat": lat, "category": category})
            continue
        metric = "water_level_cm" if i % 2 else "pm25"
        value = rng.uniform(0, 35) if metric == "water_level_cm" else rng.uniform(10, 160)
        out.append(
            {
                "kind": "reading",
                "id": f"e{i}",
                "ts": ts,
                "lon": lon,
                "lat": lat,
                "sensor_id": sid,
                "metric": metric,
                "value": round(value, 2),
            }
        )
    return out


def _point(rng: random.Random) -> tuple[float, float]:
    return round(BBOX[0] + rng.random() * (BBOX[2] - BBOX[0]), 6), round(
        BBOX[1] + rng.random() * (BBOX[3] - BBOX[1]), 6
    )


def grid_events(n: int, seed: int = 1) -> list[Event]:
    """n events over the grid pack's bounding box: readings of its metrics, reports, drone tracks."""
    rng = random.Random(seed)
    sensors = [(f"g{i}", *_point(rng)) for i in range(10_000)]
    drones = [(f"uav-{i}", *_point(rng)) for i in range(50)]
    out: list[Event] = []
    for i in range(n):
        ts = _ts(i)
        if i % 50 == 7:
            oid, lon, lat = drones[(i // 50) % len(drones)]
            out.append(
                {
                    "kind": "track",
                    "id": f"k{i}",
                    "ts": ts,
                    "lon": lon,
                    "lat": lat,
                    "object_id": oid,
                    "object_type": "drone",
                    "alt_m": round(rng.uniform(40, 130), 1),
                }
            )
            continue
        sid, lon, lat = sensors[i % len(sensors)]
        if i % 10 == 0:
            category = f"c{rng.randrange(GRID_CATEGORIES)}"
            out.append({"kind": "report", "id": f"r{i}", "ts": ts, "lon": lon, "lat": lat, "category": category})
            continue
        metric = f"m{int(sid[1:]) % GRID_METRICS}"
        value = round(min(100.0, max(0.0, rng.gauss(40, 15))), 2)
        out.append(
            {
                "kind": "reading",
                "id": f"e{i}",
                "ts": ts,
                "lon": lon,
                "lat": lat,
                "sensor_id": sid,
                "metric": metric,
                "value": value,
            }
        )
    return out


def write_grid_pack(directory: Path, zones: int, rules: int) -> Path:
    """Write a synthetic pack: a square grid of about ``zones`` cells and ``rules`` rules. Returns its path.

    One rule is the drone-height threshold (the probe rule); of the rest, about 70% are thresholds
    over the metrics, 20% report windows per zone and 10% sustained conditions.
    """
    if zones < 1 or rules < 1:
        raise BenchError(f"a grid needs at least one zone and one rule (got zones={zones}, rules={rules})")
    side = math.ceil(math.sqrt(zones))
    dx, dy = (BBOX[2] - BBOX[0]) / side, (BBOX[3] - BBOX[1]) / side
    features = []
    for k in range(zones):
        x0, y0 = BBOX[0] + (k % side) * dx, BBOX[1] + (k // side) * dy
        ring = [[x0, y0], [x0 + dx, y0], [x0 + dx, y0 + dy], [x0, y0 + dy], [x0, y0]]
        features.append(
            {
                "type": "Feature",
                "properties": {"zone_id": f"z{k:05d}", "name": f"cell {k}"},
                "geometry": {"type": "Polygon", "coordinates": [[[round(a, 7), round(b, 7)] for a, b in ring]]},
            }
        )
    (directory / "layers").mkdir(parents=True, exist_ok=True)
    (directory / "layers" / "grid.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    specs: list[dict[str, Any]] = [
        {
            "id": "airspace.drone-too-high",
            "kind": "threshold",
            "title": "Drone above 120 m",
            "category": "airspace",
            "severity": "high",
            "match": {"kind": "track", "object_type": "drone"},
            "field": "alt_m",
            "op": ">",
            "value": 120,
            "dedup": "5m",
        }
    ]
    makers: list[Callable[[int], dict[str, Any]]] = [_grid_threshold] * 7 + [_grid_window] * 2 + [_grid_sustained]
    for r in range(rules - 1):
        specs.append(makers[r % len(makers)](r))
    pack = {
        "pack": "bench-grid",
        "version": f"{zones}z.{rules}r",
        "title": f"Synthetic benchmark pack: {zones} grid zones, {rules} rules",
        "timezone": "Asia/Shanghai",
        "allowed_lateness": "1h",
        "layers": {"grid": {"file": "layers/grid.geojson"}},
        "rules": specs,
    }
    path = directory / "pack.yaml"
    path.write_text(json.dumps(pack, indent=1))  # JSON is YAML
    return path


def _grid_threshold(r: int) -> dict[str, Any]:
    return {
        "id": f"grid.threshold-{r}",
        "kind": "threshold",
        "title": f"m{r % GRID_METRICS} above {80 + (r // GRID_METRICS) % 15}",
        "category": "bench",
        "layer": "grid",
        "match": {"kind": "reading", "metric": f"m{r % GRID_METRICS}"},
        "op": ">",
        "value": 80 + (r // GRID_METRICS) % 15,
        "dedup": "15m",
    }


def _grid_window(r: int) -> dict[str, Any]:
    return {
        "id": f"grid.window-{r}",
        "kind": "window",
        "title": f"Reports c{r % GRID_CATEGORIES} in a cell",
        "category": "bench",
        "layer": "grid",
        "match": {"kind": "report", "category": f"c{r % GRID_CATEGORIES}"},
        "window": "10m",
        "op": ">=",
        "value": 2 + r % 3,
    }


def _grid_sustained(r: int) -> dict[str, Any]:
    return {
        "id": f"grid.sustained-{r}",
        "kind": "sustained",
        "title": f"m{r % GRID_METRICS} above 60 for 2 minutes",
        "category": "bench",
        "layer": "grid",
        "match": {"kind": "reading", "metric": f"m{r % GRID_METRICS}"},
        "op": ">",
        "value": 60,
        "for": "2m",
        "resolve_after": "5m",
    }
