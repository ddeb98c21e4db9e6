"""Make the synthetic demo layers of the Wuhan pack: schools, no-fly zones, robotaxi stop zones.

No registry package ships these for Wuhan, so they are **synthetic**: plausible, deterministic,
and not a map of real schools or real restricted airspace (see ``layers/PROVENANCE.md``). The
output depends only on this script and ``districts.geojson``: re-running it gives byte-identical
files. All coordinates are WGS-84 and lie inside the Wuhan districts.

Usage:
    python scripts/make_demo_layers.py [--out rules/packs/wuhan/layers]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
from pathlib import Path
from typing import Any

import shapely
from shapely.geometry import LineString, Polygon, mapping, shape

REPO = Path(__file__).resolve().parents[1]
LAYERS = REPO / "rules" / "packs" / "wuhan" / "layers"
M_PER_DEG = 6_371_008.8 * math.pi / 180.0

CENTRAL = ("420102", "420103", "420104", "420105", "420106", "420107", "420111")  # the seven central districts
CENTRAL_BOX = (114.18, 30.47, 114.42, 30.66)  # the built-up centre (lon/lat min, max)
SCHOOLS = 40
SCHOOL_SPACING_M = 900.0
SEED = 20261127

AIRPORT = (114.208, 30.784)  # Wuhan Tianhe International Airport (approximate)
RUNWAY_HEADING_DEG = 40.0  # runways 04/22
# Approximate end points (lon, lat) of four Yangtze bridges; the corridors follow these lines.
BRIDGES = [
    ("nofly-bridge-changjiang", "武汉长江大桥上空走廊", (114.2790, 30.5545), (114.2920, 30.5485)),
    ("nofly-bridge-erqiao", "武汉长江二桥上空走廊", (114.3090, 30.6175), (114.3290, 30.6010)),
    ("nofly-bridge-yingwuzhou", "鹦鹉洲长江大桥上空走廊", (114.2640, 30.5330), (114.2830, 30.5210)),
    ("nofly-bridge-erqi", "二七长江大桥上空走廊", (114.3280, 30.6420), (114.3480, 30.6270)),
]
CORRIDOR_HALF_WIDTH_M = 150.0
# Robotaxi stop zones: ten each in the built-up parts of Hanyang and Wuchang.
STOP_AREAS = [
    ("420105", "汉阳", (114.21, 30.52, 114.28, 30.58)),
    ("420106", "武昌", (114.29, 30.51, 114.36, 30.58)),
]
STOPS_PER_AREA = 10
STOP_SIZE_M = (60.0, 30.0)
STOP_SPACING_M = 800.0

_DIGITS = "零一二三四五六七八九"


def chinese_number(n: int) -> str:
    """1..99 in Chinese numerals: 1 一, 10 十, 12 十二, 20 二十, 35 三十五.

    >>> [chinese_number(n) for n in (1, 10, 12, 20, 35)]
    ['一', '十', '十二', '二十', '三十五']
    """
    tens, ones = divmod(n, 10)
    head = "" if tens == 0 else ("十" if tens == 1 else _DIGITS[tens] + "十")
    return head + (_DIGITS[ones] if ones else "")


def _offset(lon: float, lat: float, east_m: float, north_m: float) -> tuple[float, float]:
    """A point ``east_m``/``north_m`` metres from (lon, lat), on a local flat approximation."""
    return (
        lon + east_m / (M_PER_DEG * math.cos(math.radians(lat))),
        lat + north_m / M_PER_DEG,
    )


def _metres(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Haversine distance in metres."""
    p1, p2 = math.radians(a[1]), math.radians(b[1])
    h = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(math.radians(b[0] - a[0]) / 2) ** 2
    return 2 * 6_371_008.8 * math.asin(min(1.0, math.sqrt(h)))


def _rectangle(lon: float, lat: float, length_m: float, width_m: float, heading_deg: float) -> Polygon:
    """A rectangle centred on (lon, lat), its long side along ``heading_deg`` (clockwise from north)."""
    h = math.radians(heading_deg)
    along = (math.sin(h), math.cos(h))
    across = (math.cos(h), -math.sin(h))
    corners = []
    for sa, sc in ((1, 1), (1, -1), (-1, -1), (-1, 1)):
        east = sa * along[0] * length_m / 2 + sc * across[0] * width_m / 2
        north = sa * along[1] * length_m / 2 + sc * across[1] * width_m / 2
        corners.append(_offset(lon, lat, east, north))
    return Polygon([*corners, corners[0]])


def _corridor(a: tuple[float, float], b: tuple[float, float], half_width_m: float) -> Polygon:
    """A band of ``half_width_m`` either side of the segment a-b, with flat ends."""
    lat0 = (a[1] + b[1]) / 2
    kx = M_PER_DEG * math.cos(math.radians(lat0))
    line = LineString([((a[0]) * kx, a[1] * M_PER_DEG), (b[0] * kx, b[1] * M_PER_DEG)])
    band = line.buffer(half_width_m, cap_style="flat")
    return shapely.transform(band, lambda xy: xy / [kx, M_PER_DEG])


def _round(geom: Any) -> dict[str, Any]:
    return mapping(shapely.set_precision(geom, 1e-6))


def _districts(path: Path) -> dict[str, Any]:
    doc = json.loads(path.read_text(encoding="utf-8"))
    return {f["properties"]["zone_id"]: shape(f["geometry"]) for f in doc["features"]}


def _spread_points(
    rng: random.Random, area: Any, box: tuple[float, float, float, float], n: int, spacing_m: float
) -> list[tuple[float, float]]:
    """n random points in ``area`` ∩ ``box``, each at least ``spacing_m`` from the others."""
    points: list[tuple[float, float]] = []
    for _ in range(200_000):
        if len(points) == n:
            return points
        p = (round(rng.uniform(box[0], box[2]), 6), round(rng.uniform(box[1], box[3]), 6))
        if shapely.contains_xy(area, *p) and all(_metres(p, q) >= spacing_m for q in points):
            points.append(p)
    raise SystemExit(f"could only place {len(points)} of {n} points {spacing_m} m apart")


def schools(districts: dict[str, Any]) -> list[dict[str, Any]]:
    rng = random.Random(SEED)
    central = shapely.union_all([districts[z] for z in CENTRAL])
    points = _spread_points(rng, central, CENTRAL_BOX, SCHOOLS, SCHOOL_SPACING_M)
    points.sort(key=lambda p: (-p[1], p[0]))  # numbered north to south, then west to east
    out = []
    for n, (lon, lat) in enumerate(points, start=1):
        district = next(z for z in CENTRAL if shapely.contains_xy(districts[z], lon, lat))
        out.append(
            {
                "type": "Feature",
                "properties": {
                    "zone_id": f"school-{n:02d}",
                    "name": f"第{chinese_number(n)}中学",
                    "district": district,
                    "synthetic": True,
                },
                "geometry": {"type": "Point", "coordinates": [lon, lat]},
            }
        )
    return out


def no_fly() -> list[dict[str, Any]]:
    airport = _rectangle(*AIRPORT, length_m=6000.0, width_m=3000.0, heading_deg=RUNWAY_HEADING_DEG)
    features = [
        {
            "type": "Feature",
            "properties": {
                "zone_id": "nofly-airport",
                "name": "天河机场净空保护区",
                "kind": "airport",
                "synthetic": True,
            },
            "geometry": _round(airport),
        }
    ]
    for zone_id, name, a, b in BRIDGES:
        features.append(
            {
                "type": "Feature",
                "properties": {"zone_id": zone_id, "name": name, "kind": "bridge", "synthetic": True},
                "geometry": _round(_corridor(a, b, CORRIDOR_HALF_WIDTH_M)),
            }
        )
    return features


def stop_zones(districts: dict[str, Any]) -> list[dict[str, Any]]:
    rng = random.Random(SEED + 1)
    features = []
    number = 0
    for zone, label, box in STOP_AREAS:
        for k, (lon, lat) in enumerate(_spread_points(rng, districts[zone], box, STOPS_PER_AREA, STOP_SPACING_M), 1):
            number += 1
            heading = rng.choice((0.0, 45.0, 90.0, 135.0))
            features.append(
                {
                    "type": "Feature",
                    "properties": {
                        "zone_id": f"stop-{number:02d}",
                        "name": f"{label}停靠点{k:02d}",
                        "district": zone,
                        "synthetic": True,
                    },
                    "geometry": _round(_rectangle(lon, lat, *STOP_SIZE_M, heading_deg=heading)),
                }
            )
    return features


def render(name: str, features: list[dict[str, Any]]) -> str:
    """One feature per line, keys sorted: stable text that diffs well."""
    head = {
        "type": "FeatureCollection",
        "name": name,
        "crs_note": "WGS-84 (EPSG:4326)",
        "source": "synthetic: scripts/make_demo_layers.py; not real data, see PROVENANCE.md",
    }
    lines = [json.dumps(f, ensure_ascii=False, sort_keys=True, separators=(",", ":")) for f in features]
    body = json.dumps(head, ensure_ascii=False, separators=(",", ":"))[:-1]
    return body + ',"features":[\n' + ",\n".join(lines) + "\n]}\n"


def build(districts_path: Path) -> dict[str, str]:
    """File name -> text of every synthetic layer."""
    districts = _districts(districts_path)
    return {
        "schools.geojson": render("wuhan_schools_synthetic", schools(districts)),
        "no_fly.geojson": render("wuhan_no_fly_synthetic", no_fly()),
        "stop_zones.geojson": render("wuhan_stop_zones_synthetic", stop_zones(districts)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=LAYERS, help="output directory (default: the Wuhan pack's layers)")
    parser.add_argument("--districts", type=Path, default=LAYERS / "districts.geojson")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in build(args.districts).items():
        (args.out / name).write_text(text, encoding="utf-8")
        print(args.out / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
