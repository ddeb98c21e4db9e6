"""The scripted Wuhan demo scenario: sensors, citizen reports, drones, and a few bad records.

Deterministic for a given start time and seed. Within the first two minutes it makes:
water levels rise in Jianghan and Wuchang (flood threshold), PM2.5 spikes in Qingshan,
illegal-dumping reports cluster in Hongshan and waterlogging reports in Jianghan (window
counts), and a drone climbs above 120 m. Three malformed messages exercise the dead-letter path.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import shapely

from rules.geo import Layer
from rules.state import bucket_of, to_ms

SILENT_SENSOR = "wl-420113-0"  # Hannan: stops reporting after 30 s (sensor silence after 10 minutes)
CATEGORIES = ("noise", "road_damage", "streetlight", "illegal_dumping", "waterlogging", "illegal_parking")
JIANGHAN, WUCHANG, QINGSHAN, HONGSHAN = "420103", "420106", "420107", "420111"


@dataclass
class Message:
    """One raw Kafka message of the scenario: an envelope of events, or deliberately bad bytes."""

    at_s: float
    events: list[dict[str, Any]] = field(default_factory=list)
    bad: bytes | None = None


def _points_in(geom: shapely.Geometry, n: int, rng: random.Random) -> list[tuple[float, float]]:
    """n reproducible random points inside a polygon (near its representative point)."""
    rep = shapely.point_on_surface(geom)
    out: list[tuple[float, float]] = []
    minx, miny, maxx, maxy = geom.bounds
    spanx, spany = min(maxx - minx, 0.08), min(maxy - miny, 0.08)
    tries = 0
    while len(out) < n and tries < 2000:
        tries += 1
        x = rep.x + (rng.random() - 0.5) * spanx
        y = rep.y + (rng.random() - 0.5) * spany
        if shapely.contains_xy(geom, x, y):
            out.append((round(x, 6), round(y, 6)))
    while len(out) < n:
        out.append((round(rep.x, 6), round(rep.y, 6)))
    return out


def _aligned(t0: datetime, offsets: list[float], window: timedelta) -> list[float]:
    """Shift offsets so they all fall in one tumbling window (the demo must fire reliably)."""
    size = int(window.total_seconds() * 1000)
    first = to_ms(t0 + timedelta(seconds=offsets[0]))
    last = to_ms(t0 + timedelta(seconds=offsets[-1]))
    if bucket_of(first, size) == bucket_of(last, size):
        return offsets
    boundary_s = (bucket_of(last, size) - to_ms(t0)) / 1000
    return [boundary_s + 1 + (o - offsets[0]) for o in offsets]


def wuhan_scenario(
    districts: Layer,
    start: datetime,
    duration_s: float = 120.0,
    *,
    seed: int = 7,
    tick_s: float = 2.0,
    bad_records: bool = True,
    extra_layers: dict[str, Layer] | None = None,
) -> list[Message]:
    """All messages of the scenario, ordered by time offset."""
    rng = random.Random(seed)
    geoms = dict(zip(districts.ids, districts.geoms, strict=True))
    sensors: list[tuple[str, str, str, float, float]] = []  # (id, metric, zone, lon, lat)
    for zone in districts.ids:
        for i, (x, y) in enumerate(_points_in(geoms[zone], 3, rng)):
            metric = "pm25" if i == 2 else "water_level_cm"
            sensors.append((f"{'aq' if metric == 'pm25' else 'wl'}-{zone}-{i}", metric, zone, x, y))
    messages: dict[float, Message] = {}
    features = _feature_sites(districts, sensors, extra_layers or {})
    anchors = {HONGSHAN: features["dumping"], JIANGHAN: features["waterlogging"]}

    def at(t: float) -> Message:
        return messages.setdefault(round(t, 3), Message(at_s=round(t, 3)))

    def ts(t: float) -> str:
        return (start + timedelta(seconds=t)).isoformat()

    t = 0.0
    while t < duration_s:
        tick = int(t / tick_s)
        msg = at(t)
        for phase, (sid, metric, zone, x, y) in enumerate(sensors):
            if (tick + phase) % 2 or (sid == SILENT_SENSOR and t >= 30):
                continue
            if metric == "water_level_cm":
                value = 8.0 + rng.uniform(-3, 3)
                if sid in (f"wl-{JIANGHAN}-0", f"wl-{WUCHANG}-1") and t >= 10:
                    value = 8.0 + (t - 10) * 1.2
            else:
                value = 45.0 + rng.uniform(-12, 12)
                if zone == QINGSHAN and 20 <= t <= 240:
                    value = 185.0 + rng.uniform(0, 30)
            msg.events.append(
                {
                    "kind": "reading",
                    "id": f"{sid}-{tick}",
                    "ts": ts(t),
                    "lon": x,
                    "lat": y,
                    "sensor_id": sid,
                    "metric": metric,
                    "value": round(value, 2),
                    "unit": "cm" if metric == "water_level_cm" else "ug/m3",
                    "source": "sim",
                }
            )
        for n, drone in enumerate(("uav-1", "uav-2")):
            lon = 114.28 + 0.0008 * tick + 0.05 * n
            lat = 30.57 + 0.0004 * tick
            alt = 80.0 + (max(0.0, t - 10) * 2.5 if drone == "uav-2" else 0.0)
            msg.events.append(
                {
                    "kind": "track",
                    "id": f"{drone}-{tick}",
                    "ts": ts(t),
                    "lon": round(lon, 6),
                    "lat": round(lat, 6),
                    "object_id": drone,
                    "object_type": "drone",
                    "alt_m": round(min(alt, 400.0), 1),
                    "speed_mps": 8.0,
                    "source": "sim",
                }
            )
        if rng.random() < 0.4:
            zone = rng.choice(districts.ids)
            x, y = _points_in(geoms[zone], 1, rng)[0]
            msg.events.append(
                {
                    "kind": "report",
                    "id": f"r-bg-{tick}",
                    "ts": ts(t),
                    "lon": x,
                    "lat": y,
                    "category": rng.choice(("noise", "road_damage", "streetlight", "illegal_parking")),
                    "channel": "12345",
                    "description": "background report",
                    "source": "sim",
                }
            )
        msg.events.extend(_city_features(t, tick, ts(t), features))
        t += tick_s

    scripted = [
        (HONGSHAN, "illegal_dumping", _aligned(start, [8, 14, 20, 26], timedelta(minutes=10)), "垃圾堆放"),
        (JIANGHAN, "waterlogging", _aligned(start, [16, 24, 32], timedelta(minutes=15)), "路面积水"),
    ]
    for zone, category, offsets, text in scripted:
        for j, off in enumerate(offsets):
            if off >= duration_s:
                continue
            ax, ay = anchors[zone]  # close together: window, cluster and correlation rules all see them
            x, y = round(ax + rng.uniform(-0.0008, 0.0008), 6), round(ay + rng.uniform(-0.0008, 0.0008), 6)
            at(off).events.append(
                {
                    "kind": "report",
                    "id": f"r-{category}-{j}",
                    "ts": ts(off),
                    "lon": x,
                    "lat": y,
                    "category": category,
                    "channel": "12345",
                    "description": text,
                    "source": "sim",
                }
            )
    if bad_records:
        for off, bad in (
            (12.0, b'{"kind": "reading", "id": '),
            (
                22.0,
                b'{"kind":"reading","id":"bad-lat",'
                b'"ts":"2026-01-01T00:00:00Z","lon":114.3,"lat":123.0,"sensor_id":"x","metric":"m",'
                b'"value":1}',
            ),
            (32.0, b'{"kind":"parade","id":"bad-kind","ts":"2026-01-01T00:00:00Z","lon":114.3,"lat":30.6}'),
        ):
            if off < duration_s:
                messages[off + 0.5] = Message(at_s=off + 0.5, bad=bad)
    return [messages[k] for k in sorted(messages)]


def _feature_sites(
    districts: Layer, sensors: list[tuple[str, str, str, float, float]], layers: dict[str, Layer]
) -> dict[str, tuple[float, float]]:
    """Where the scripted city features are: near real sensors, schools and no-fly zones of the pack."""
    where = {sid: (x, y) for sid, _, _, x, y in sensors}
    hongshan = shapely.point_on_surface(districts.geoms[districts.ids.index(HONGSHAN)])
    wuchang = shapely.point_on_surface(districts.geoms[districts.ids.index(WUCHANG)])
    schools = layers.get("schools")
    school = (schools.geoms[0].x, schools.geoms[0].y) if schools is not None else (114.3402, 30.6382)
    no_fly = layers.get("no_fly")
    airport = no_fly.geoms[0].representative_point() if no_fly is not None else shapely.Point(114.208, 30.784)
    return {
        "dumping": (round(hongshan.x, 6), round(hongshan.y, 6)),
        "waterlogging": where.get(f"wl-{JIANGHAN}-0", (114.27, 30.59)),
        "manhole": (round(wuchang.x + 0.002, 6), round(wuchang.y, 6)),
        "school_aq": (round(school[0] + 0.0005, 6), round(school[1], 6)),
        "airport": (round(airport.x, 6), round(airport.y, 6)),
    }


def _city_features(t: float, tick: int, stamp: str, sites: dict[str, tuple[float, float]]) -> list[dict[str, Any]]:
    """Manhole tilt, night noise, PM2.5 at a school, a stalling robotaxi and a drone heading for the airport."""
    mx, my = sites["manhole"]
    sx, sy = sites["school_aq"]
    ax, ay = sites["airport"]
    moving = t < 20
    robotaxi_lon = 114.2600 + 0.0001 * min(tick, 10)
    drone_lon = ax - 0.045 + 0.0006 * tick  # starts outside the airport zone, enters after about a minute
    base = {"ts": stamp, "source": "sim"}
    return [
        {
            **base,
            "kind": "reading",
            "id": f"mh-1-{tick}",
            "lon": mx,
            "lat": my,
            "sensor_id": "mh-420106-1",
            "metric": "manhole_tilt_deg",
            "value": 2.0 if t < 30 else 24.0,
            "unit": "deg",
        },
        {
            **base,
            "kind": "reading",
            "id": f"nz-1-{tick}",
            "lon": mx - 0.004,
            "lat": my + 0.003,
            "sensor_id": "nz-420106-1",
            "metric": "noise_db",
            "value": 62.0,
            "unit": "dB(A)",
        },
        {
            **base,
            "kind": "reading",
            "id": f"aq-school-{tick}",
            "lon": sx,
            "lat": sy,
            "sensor_id": "aq-school-01",
            "metric": "pm25",
            "value": 40.0 if t < 20 else 128.0,
            "unit": "ug/m3",
        },
        {
            **base,
            "kind": "track",
            "id": f"rt-1-{tick}",
            "lon": round(robotaxi_lon, 6),
            "lat": 30.5550,
            "object_id": "rt-1",
            "object_type": "robotaxi",
            "speed_mps": 8.0 if moving else 0.0,
        },
        {
            **base,
            "kind": "track",
            "id": f"uav-3-{tick}",
            "lon": round(drone_lon, 6),
            "lat": ay,
            "object_id": "uav-3",
            "object_type": "drone",
            "alt_m": 60.0,
            "speed_mps": 29.0,
        },
    ]


def scenario_events(messages: list[Message]) -> list[dict[str, Any]]:
    """Every good event of a scenario, in order (what a replay file holds)."""
    return [e for m in messages for e in m.events]
