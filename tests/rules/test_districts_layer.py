"""The Wuhan districts layer: 13 valid WGS-84 districts that agree with an independent outline."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import shapely
from shapely.geometry import shape

from rules.crs import wgs84_to_gcj02

REPO = Path(__file__).resolve().parents[2]
LAYER = REPO / "rules" / "packs" / "wuhan" / "layers" / "districts.geojson"
# Independent outline: Aliyun DataV districts, converted from GCJ-02 to WGS-84. shared/ sits beside
# the repository, in CI as well.
DATAV = Path(__file__).resolve().parents[3] / "shared" / "data" / "wuhan" / "wuhan_districts_datav_v3_wgs84.geojson"

EXPECTED = {
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
EARTH_RADIUS_M = 6371008.8


def haversine_m(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    h = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(math.sqrt(h))


def spherical_area_km2(geom: shapely.Geometry) -> float:
    """Area on a sphere via the sinusoidal (equal-area) projection: independent of the script's method."""

    def project(xy: np.ndarray) -> np.ndarray:
        lam, phi = np.radians(xy[:, 0] - 114.0), np.radians(xy[:, 1])
        return np.column_stack((EARTH_RADIUS_M * lam * np.cos(phi), EARTH_RADIUS_M * phi))

    return float(shapely.area(shapely.transform(geom, project))) / 1e6


@pytest.fixture(scope="module")
def layer() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(LAYER.read_text(encoding="utf-8"))
    return data


@pytest.fixture(scope="module")
def districts(layer: dict[str, Any]) -> dict[str, shapely.Geometry]:
    return {f["properties"]["zone_id"]: shape(f["geometry"]) for f in layer["features"]}


def test_layer_is_a_feature_collection_with_a_crs_note(layer: dict[str, Any]) -> None:
    assert layer["type"] == "FeatureCollection"
    assert "WGS-84" in layer["crs_note"]
    assert "GCJ-02" in layer["crs_note"]


def test_layer_has_13_valid_polygonal_districts_with_unique_zone_ids(layer: dict[str, Any]) -> None:
    features = layer["features"]
    assert len(features) == 13
    zone_ids = [f["properties"]["zone_id"] for f in features]
    assert len(set(zone_ids)) == 13
    assert set(zone_ids) == set(EXPECTED)
    for feature in features:
        geom = shape(feature["geometry"])
        assert geom.geom_type in ("Polygon", "MultiPolygon"), feature["properties"]["zone_id"]
        assert geom.is_valid, (feature["properties"]["zone_id"], shapely.is_valid_reason(geom))
        assert not geom.is_empty


def test_every_district_has_its_names_and_area(layer: dict[str, Any]) -> None:
    for feature in layer["features"]:
        props = feature["properties"]
        assert isinstance(props["zone_id"], str)
        assert (props["name"], props["name_en"]) == EXPECTED[props["zone_id"]]
        assert isinstance(props["area_km2"], float)
        assert props["area_km2"] > 0
        assert props["area_km2"] == round(props["area_km2"], 1)


def test_coordinates_are_rounded_to_6_decimals(districts: dict[str, shapely.Geometry]) -> None:
    coords = shapely.get_coordinates(list(districts.values()))
    np.testing.assert_array_equal(coords, np.round(coords, 6))


def test_total_area_matches_wuhan(layer: dict[str, Any]) -> None:
    total = sum(f["properties"]["area_km2"] for f in layer["features"])
    assert 8_400 < total < 8_750


def test_area_property_agrees_with_an_independent_spherical_area(
    layer: dict[str, Any], districts: dict[str, shapely.Geometry]
) -> None:
    for feature in layer["features"]:
        zone_id = feature["properties"]["zone_id"]
        # sphere versus ellipsoid differ by well under 1 % at 30N
        assert feature["properties"]["area_km2"] == pytest.approx(spherical_area_km2(districts[zone_id]), rel=0.01)


def test_districts_do_not_overlap(districts: dict[str, shapely.Geometry]) -> None:
    geoms = list(districts.values())
    assert shapely.coverage_is_valid(geoms)
    overlap = sum(
        shapely.area(shapely.intersection(geoms[i], geoms[j]))
        for i in range(len(geoms))
        for j in range(i + 1, len(geoms))
    )
    assert overlap == 0


def test_district_centroids_match_datav_in_wgs84_and_not_in_gcj02(districts: dict[str, shapely.Geometry]) -> None:
    reference = {
        str(f["properties"]["adcode"]): shape(f["geometry"])
        for f in json.loads(DATAV.read_text(encoding="utf-8"))["features"]
    }
    assert set(districts) <= set(reference)
    for zone_id, geom in districts.items():
        ours = geom.centroid
        theirs = reference[zone_id].centroid
        assert haversine_m(ours.x, ours.y, theirs.x, theirs.y) < 150, zone_id
        # had the GCJ-02 source been used unconverted, the district would sit ~600 m off
        gcj_lon, gcj_lat = wgs84_to_gcj02(ours.x, ours.y)
        assert haversine_m(gcj_lon, gcj_lat, theirs.x, theirs.y) > 400, zone_id
