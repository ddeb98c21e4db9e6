"""Zone layers: the vectorised STRtree lookup agrees with the scalar predicate; CRS is converted at load.

Points exactly on a border: ``Layer.locate`` queries with ``intersects``, so a point on the boundary
of a zone is in that zone. A vertex shared by two districts is therefore in both (a triple point in
all three), listed in layer order; ``Enriched.primary_zone`` takes the first, so a border point always
lands in the same district. The scalar ``polygon.contains`` says "in neither" for such points
(``contains`` excludes the boundary); ``polygon.covers`` is the scalar predicate that matches.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import shapely

from rules.columns import Zones
from rules.crs import CRS, wgs84_to_bd09, wgs84_to_gcj02
from rules.errors import LayerError
from rules.geo import Layer, Locator
from rules.model import Enriched, Report

DISTRICTS = Path(__file__).resolve().parents[2] / "rules" / "packs" / "wuhan" / "layers" / "districts.geojson"
N_RANDOM = 5000


@pytest.fixture(scope="module")
def districts() -> Layer:
    return Layer.from_file("districts", DISTRICTS)


def _scalar(layer: Layer, lon: float, lat: float, predicate: str) -> list[str]:
    point = shapely.Point(lon, lat)
    return [zid for zid, geom in zip(layer.ids, layer.geoms, strict=True) if getattr(geom, predicate)(point)]


def _shared_vertices(layer: Layer) -> dict[tuple[float, float], set[str]]:
    """Every polygon vertex that belongs to the outline of two or more zones."""
    owners: dict[tuple[float, float], set[str]] = {}
    for zid, geom in zip(layer.ids, layer.geoms, strict=True):
        for x, y in shapely.get_coordinates(geom).tolist():
            owners.setdefault((x, y), set()).add(zid)
    return {xy: ids for xy, ids in owners.items() if len(ids) > 1}


def _square_feature(zone_id: str, ring: list[tuple[float, float]]) -> dict[str, object]:
    return {
        "type": "Feature",
        "properties": {"zone_id": zone_id, "name": zone_id},
        "geometry": {"type": "Polygon", "coordinates": [[list(p) for p in ring]]},
    }


WGS_SQUARE = [(114.30, 30.60), (114.31, 30.60), (114.31, 30.61), (114.30, 30.61), (114.30, 30.60)]


def test_locate_equals_scalar_contains_for_random_points_over_wuhan(districts: Layer) -> None:
    min_lon, min_lat, max_lon, max_lat = shapely.total_bounds(districts.geoms)
    rng = np.random.default_rng(20261127)
    lon = rng.uniform(min_lon - 0.05, max_lon + 0.05, N_RANDOM)
    lat = rng.uniform(min_lat - 0.05, max_lat + 0.05, N_RANDOM)
    fast = districts.locate(lon, lat)
    slow = [_scalar(districts, x, y, "contains") for x, y in zip(lon.tolist(), lat.tolist(), strict=True)]
    assert fast == slow
    inside = sum(1 for zones in fast if zones)
    assert N_RANDOM * 0.2 < inside < N_RANDOM * 0.9  # the sample really covers districts and outside
    assert {z for zones in fast for z in zones} == set(districts.ids)
    assert all(len(zones) <= 1 for zones in fast)  # a clean coverage: interior points are in one district


def test_locate_answers_in_input_order_for_any_batch_split(districts: Layer) -> None:
    rng = np.random.default_rng(7)
    lon = rng.uniform(113.7, 115.1, 400)
    lat = rng.uniform(29.9, 31.4, 400)
    whole = districts.locate(lon, lat)
    halves = districts.locate(lon[:123], lat[:123]) + districts.locate(lon[123:], lat[123:])
    assert whole == halves
    assert whole[::-1] == districts.locate(lon[::-1], lat[::-1])


def test_locate_of_an_empty_batch_is_empty(districts: Layer) -> None:
    assert districts.locate(np.array([], dtype=np.float64), np.array([], dtype=np.float64)) == []


@pytest.mark.parametrize(
    ("lon", "lat", "zone"),
    [(114.30, 30.60, "420102"), (114.35, 30.50, "420111"), (114.27, 30.58, "420104"), (114.30, 30.55, "420106")],
)
def test_known_wuhan_points_fall_in_their_district(districts: Layer, lon: float, lat: float, zone: str) -> None:
    assert districts.locate(np.array([lon]), np.array([lat])) == [[zone]]


def test_a_point_far_from_wuhan_is_in_no_district(districts: Layer) -> None:
    assert districts.locate(np.array([116.40, 0.0]), np.array([39.90, 0.0])) == [[], []]


def test_a_vertex_shared_by_districts_is_in_every_one_of_them_in_layer_order(districts: Layer) -> None:
    shared = _shared_vertices(districts)
    assert len(shared) > 100
    points = sorted(shared)
    lon = np.array([p[0] for p in points])
    lat = np.array([p[1] for p in points])
    located = districts.locate(lon, lat)
    for (x, y), zones in zip(points, located, strict=True):
        assert set(zones) >= shared[(x, y)]
        assert zones == sorted(zones, key=districts.ids.index)
        assert zones == _scalar(districts, x, y, "covers")
        assert _scalar(districts, x, y, "contains") == []


def test_a_border_point_goes_to_the_first_district_in_layer_order(districts: Layer) -> None:
    (x, y), owners = next((xy, ids) for xy, ids in sorted(_shared_vertices(districts).items()) if len(ids) == 2)
    zones = districts.locate(np.array([x]), np.array([y]))[0]
    event = Report(id="b1", ts="2026-07-01T00:00:00Z", lon=x, lat=y, category="waterlogging")
    item = Enriched(event=event, zones={"districts": zones})
    assert item.primary_zone("districts") == min(owners, key=districts.ids.index)


# -- points seen before (Locator) --------------------------------------------------------------


def _mixed_points(layer: Layer, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random points over and around the layer, plus vertices shared by two zones (border points)."""
    min_lon, min_lat, max_lon, max_lat = shapely.total_bounds(layer.geoms)
    rng = np.random.default_rng(seed)
    shared = sorted(_shared_vertices(layer))[:300]
    lon = np.concatenate([rng.uniform(min_lon - 0.05, max_lon + 0.05, n), [p[0] for p in shared]])
    lat = np.concatenate([rng.uniform(min_lat - 0.05, max_lat + 0.05, n), [p[1] for p in shared]])
    return lon, lat


def _located(locator: Locator, lon: np.ndarray, lat: np.ndarray) -> dict[str, list[list[str]]]:
    """The zone ids of every point per layer, through the locator and ``Zones``."""
    rows = locator.zone_sets(lon, lat)
    out = {}
    for n, (name, layer) in enumerate(locator.layers.items()):
        zones = Zones.from_sets(layer.ids, [sets[n] for sets in rows])
        out[name] = [zones.of(r) for r in range(len(lon))]
        primary = [zones.ids[p] if p >= 0 else None for p in zones.primary.tolist()]
        assert primary == [z[0] if z else None for z in out[name]]
    return out


@pytest.fixture(scope="module")
def squares() -> Layer:
    """A second layer: two overlapping squares over central Wuhan."""
    a = [(114.25, 30.55), (114.32, 30.55), (114.32, 30.62), (114.25, 30.62), (114.25, 30.55)]
    b = [(114.30, 30.58), (114.36, 30.58), (114.36, 30.64), (114.30, 30.64), (114.30, 30.58)]
    return Layer.from_features("squares", [_square_feature("a", a), _square_feature("b", b)])


def test_points_seen_before_get_the_zones_a_fresh_search_finds(districts: Layer, squares: Layer) -> None:
    locator = Locator({"districts": districts, "squares": squares})
    lon, lat = _mixed_points(districts, 2000, 11)
    first = _located(locator, lon, lat)
    assert len(locator.points) == len(set((lon + lat * 1j).tolist()))  # every point is remembered
    # a batch of remembered points, new points and repeats within the batch, in another order
    new_lon, new_lat = _mixed_points(districts, 500, 12)
    order = np.random.default_rng(3).permutation(len(lon) + len(new_lon) + 50)
    all_lon = np.concatenate([lon, new_lon, lon[:50]])[order]
    all_lat = np.concatenate([lat, new_lat, lat[:50]])[order]
    again = _located(locator, all_lon, all_lat)
    expected = {"districts": districts.locate(all_lon, all_lat), "squares": squares.locate(all_lon, all_lat)}
    assert again == expected
    assert first == {"districts": districts.locate(lon, lat), "squares": squares.locate(lon, lat)}
    for zones in expected.values():  # borders, overlaps and points outside are all covered
        assert any(len(z) > 1 for z in zones) and any(not z for z in zones)


def test_a_remembered_point_is_told_apart_from_one_with_the_same_longitude(districts: Layer) -> None:
    locator = Locator({"districts": districts})
    lon = np.array([114.30, 114.30])
    lat = np.array([30.60, 30.55])  # 420102, then 420106: same longitude
    assert _located(locator, lon[:1], lat[:1]) == {"districts": [["420102"]]}
    assert _located(locator, lon, lat) == {"districts": [["420102"], ["420106"]]}
    assert _located(locator, lat[:1], lon[:1]) == {"districts": [[]]}  # swapped coordinates are another point


def test_the_memory_of_points_is_bounded(districts: Layer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("rules.geo.POINT_CACHE", 100)
    locator = Locator({"districts": districts})
    lon, lat = _mixed_points(districts, 300, 5)

    def covers(lon: np.ndarray, lat: np.ndarray) -> list[list[str]]:
        return [_scalar(districts, x, y, "covers") for x, y in zip(lon.tolist(), lat.tolist(), strict=True)]

    for start in range(0, len(lon), 60):
        chunk = slice(start, start + 60)
        assert _located(locator, lon[chunk], lat[chunk]) == {"districts": covers(lon[chunk], lat[chunk])}
        assert 0 < len(locator.points) <= 100
        # the newest points are the ones remembered: a full memory starts again
        assert all(k in locator.points for k in (lon[chunk] + lat[chunk] * 1j).tolist())
    # more new points in one batch than it may remember
    assert _located(locator, lon[:150], lat[:150]) == {"districts": covers(lon[:150], lat[:150])}
    assert len(locator.points) == 100


def _grid_points(n: int, shift: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(int(shift * 1e6) % 1000)
    return rng.uniform(114.1, 114.5, n) + shift, rng.uniform(30.4, 30.7, n)


def test_a_locator_learns_new_points_until_its_memory_first_fills(
    districts: Layer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("rules.geo.POINT_CACHE", 1000)
    locator = Locator({"districts": districts})
    for batch in range(4):  # 800 new points, none found: it keeps asking while it learns
        assert locator.worth_asking()
        locator.zone_sets(*_grid_points(200, batch * 1e-4))
    assert not locator.filled and locator.hit_rate < 0.1 and len(locator.points) == 800


def test_a_locator_that_finds_too_few_points_is_asked_only_one_batch_in_sixteen(
    districts: Layer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("rules.geo.POINT_CACHE", 500)
    locator = Locator({"districts": districts})
    batch = 0
    while not locator.filled:  # a stream of moving objects: every point new
        locator.zone_sets(*_grid_points(200, batch * 1e-4))
        batch += 1
    asked = []
    for _ in range(48):
        asked.append(locator.worth_asking())
        if asked[-1]:
            locator.zone_sets(*_grid_points(200, batch * 1e-4))
            batch += 1
    assert sum(asked) == 3  # one probe in every 16 batches
    # the points start repeating (fixed sensors): the next probes find them, and it asks again
    lon, lat = _grid_points(200, 7.0)
    for _ in range(40):
        if locator.worth_asking():
            assert locator.zone_sets(lon, lat) == Locator({"districts": districts}).zone_sets(lon, lat)
    assert locator.hit_rate >= 0.5
    assert all(locator.worth_asking() for _ in range(20))


def test_a_locator_of_no_layers_gives_every_point_no_zones() -> None:
    locator = Locator({})
    assert locator.zone_sets(np.array([114.30, 114.31]), np.array([30.60, 30.61])) == [(), ()]
    assert locator.zone_sets(np.array([114.30]), np.array([30.60])) == [()]  # from memory


def test_a_point_without_coordinates_is_in_no_zone_and_not_remembered(districts: Layer) -> None:
    locator = Locator({"districts": districts})
    assert _located(locator, np.array([np.nan, 114.30]), np.array([30.60, np.nan])) == {"districts": [[], []]}
    assert locator.points == {}


# -- CRS ---------------------------------------------------------------------------------------


def test_a_gcj02_layer_is_converted_to_wgs84_at_load() -> None:
    gcj = [wgs84_to_gcj02(x, y) for x, y in WGS_SQUARE]
    layer = Layer.from_features("fence", [_square_feature("F", gcj)], crs=CRS.GCJ02)
    got = shapely.get_coordinates(layer.geoms[0])
    assert np.abs(got - np.array(WGS_SQUARE)).max() < 1e-9
    # The GCJ-02 square sits ~500 m east of the true one: a WGS-84 point there is outside the fence.
    assert layer.locate(np.array([114.305, 114.3145]), np.array([30.605, 30.605])) == [["F"], []]


def test_a_gcj02_layer_read_as_wgs84_would_be_several_hundred_metres_off() -> None:
    gcj = [wgs84_to_gcj02(x, y) for x, y in WGS_SQUARE]
    wrong = Layer.from_features("fence", [_square_feature("F", gcj)], crs=CRS.WGS84)
    assert wrong.locate(np.array([114.3002]), np.array([30.605])) == [[]]
    assert shapely.get_coordinates(wrong.geoms[0])[0, 0] - WGS_SQUARE[0][0] > 0.004


def test_a_bd09_layer_is_converted_to_wgs84_at_load() -> None:
    bd = [wgs84_to_bd09(x, y) for x, y in WGS_SQUARE]
    layer = Layer.from_features("fence", [_square_feature("F", bd)], crs=CRS.BD09)
    assert np.abs(shapely.get_coordinates(layer.geoms[0]) - np.array(WGS_SQUARE)).max() < 1e-9


def test_a_gcj02_layer_declared_in_a_file_is_converted_by_from_file(tmp_path: Path) -> None:
    gcj = [wgs84_to_gcj02(x, y) for x, y in WGS_SQUARE]
    path = tmp_path / "fence.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [_square_feature("F", gcj)]}))
    layer = Layer.from_file("fence", path, crs=CRS.GCJ02)
    assert layer.locate(np.array([114.3001]), np.array([30.6001])) == [["F"]]


# -- layer building ----------------------------------------------------------------------------


def test_the_wuhan_layer_has_13_named_valid_districts(districts: Layer) -> None:
    assert len(districts.ids) == 13
    assert districts.name_of("420106") == "武昌区"
    assert districts.name_of("999999") == "999999"
    assert all(bool(g.is_valid) for g in districts.geoms)


def test_to_geojson_round_trips_through_from_features(districts: Layer) -> None:
    again = Layer.from_features("again", districts.to_geojson()["features"])
    assert again.ids == districts.ids
    assert again.names == districts.names
    assert all(bool(a.equals(b)) for a, b in zip(again.geoms, districts.geoms, strict=True))


def test_a_feature_without_an_id_is_a_layer_error() -> None:
    feature = _square_feature("F", WGS_SQUARE)
    feature["properties"] = {"name": "no id"}
    with pytest.raises(LayerError, match=r"feature #0 has no 'zone_id' property"):
        Layer.from_features("fence", [feature])


def test_duplicate_zone_ids_are_a_layer_error() -> None:
    with pytest.raises(LayerError, match=r"duplicate zone ids \['F'\]"):
        Layer.from_features("fence", [_square_feature("F", WGS_SQUARE), _square_feature("F", WGS_SQUARE)])


def test_a_feature_without_geometry_is_a_layer_error() -> None:
    feature = _square_feature("F", WGS_SQUARE)
    del feature["geometry"]
    with pytest.raises(LayerError, match=r"zone 'F' has no valid geometry"):
        Layer.from_features("fence", [feature])


def test_an_invalid_polygon_is_repaired_at_load() -> None:
    bowtie = [(0.0, 0.0), (1.0, 1.0), (1.0, 0.0), (0.0, 1.0), (0.0, 0.0)]
    layer = Layer.from_features("fence", [_square_feature("X", bowtie)])
    assert bool(layer.geoms[0].is_valid)
    assert layer.locate(np.array([0.2, 0.8, 0.5]), np.array([0.5, 0.5, 0.2])) == [["X"], ["X"], []]
