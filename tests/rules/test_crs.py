"""WGS-84 / GCJ-02 / BD-09 conversions in rules.crs."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rules.crs import (
    CRS,
    bd09_to_gcj02,
    bd09_to_wgs84,
    gcj02_to_bd09,
    gcj02_to_wgs84,
    to_wgs84,
    wgs84_to_bd09,
    wgs84_to_gcj02,
)

# Required: wgs->gcj->wgs < 1e-6 deg, wgs->bd->wgs < 1e-5 deg. The iterative inverses reach
# float64 resolution (~1e-13 deg), so the tests hold them to 1e-9, a thousand times tighter.
ROUND_TRIP_TOL = 1e-9

# Published reference values.
# googollee/eviltransform, python/test.py and go/transform_test.go (MIT):
# (wgs_lon, wgs_lat, gcj_lon, gcj_lat)
EVILTRANSFORM_WGS_GCJ = [
    (121.5272106, 31.1774276, 121.531541859215, 31.17530398364597),  # Shanghai
    (113.912316, 22.543847, 113.9171764808363, 22.540796131694766),  # Shenzhen
    (116.377817, 39.911954, 116.38404722455657, 39.91334545536069),  # Beijing
]
# wandergis/coordtransform, test/app.js (MIT): each function applied to (116.404, 39.915), Beijing.
WANDERGIS_INPUT = (116.404, 39.915)
WANDERGIS_WGS84_TO_GCJ02 = (116.41024449916938, 39.91640428150164)
WANDERGIS_GCJ02_TO_BD09 = (116.41036949371029, 39.92133699351021)
# Their bd09togcj02 is the closed-form approximation, off by up to ~2e-6 deg from the exact inverse.
WANDERGIS_BD09_TO_GCJ02 = (116.39762729119315, 39.90865673957631)

# Boxes inside mainland China, kept clear of the out-of-China box edges by more than the offset.
MAINLAND_BOXES = [
    (73.7, 18.2, 134.7, 53.5),  # the whole mainland extent
    (113.68, 29.97, 115.08, 31.36),  # Wuhan
    (115.4, 39.4, 117.5, 41.1),  # Beijing
    (120.8, 30.6, 122.2, 31.9),  # Shanghai
    (97.3, 21.1, 106.2, 29.3),  # Yunnan, far from the 105E/35N origin of the formula
]

OUTSIDE_CHINA = [
    (-0.1276, 51.5072),  # London
    (-74.006, 40.7128),  # New York
    (139.6917, 35.6895),  # Tokyo, east of 137.8347
    (151.2093, -33.8688),  # Sydney
    (100.0, 0.5),  # south of 0.8293
    (110.0, 56.0),  # north of 55.8271
]


@st.composite
def mainland_points(draw: st.DrawFn) -> tuple[float, float]:
    min_lon, min_lat, max_lon, max_lat = draw(st.sampled_from(MAINLAND_BOXES))
    lon = draw(st.floats(min_lon, max_lon, allow_nan=False, allow_infinity=False))
    lat = draw(st.floats(min_lat, max_lat, allow_nan=False, allow_infinity=False))
    return lon, lat


@pytest.mark.parametrize(("wgs_lon", "wgs_lat", "gcj_lon", "gcj_lat"), EVILTRANSFORM_WGS_GCJ)
def test_wgs84_to_gcj02_matches_eviltransform_reference(
    wgs_lon: float, wgs_lat: float, gcj_lon: float, gcj_lat: float
) -> None:
    assert wgs84_to_gcj02(wgs_lon, wgs_lat) == pytest.approx((gcj_lon, gcj_lat), abs=1e-9)


@pytest.mark.parametrize(("wgs_lon", "wgs_lat", "gcj_lon", "gcj_lat"), EVILTRANSFORM_WGS_GCJ)
def test_gcj02_to_wgs84_recovers_eviltransform_reference_exactly(
    wgs_lon: float, wgs_lat: float, gcj_lon: float, gcj_lat: float
) -> None:
    # eviltransform's own tests accept 0.5 m for their "exact" inverse; ours is at 1e-9 deg (0.1 mm).
    assert gcj02_to_wgs84(gcj_lon, gcj_lat) == pytest.approx((wgs_lon, wgs_lat), abs=1e-9)


def test_forward_conversions_match_wandergis_reference() -> None:
    assert wgs84_to_gcj02(*WANDERGIS_INPUT) == pytest.approx(WANDERGIS_WGS84_TO_GCJ02, abs=1e-9)
    assert gcj02_to_bd09(*WANDERGIS_INPUT) == pytest.approx(WANDERGIS_GCJ02_TO_BD09, abs=1e-9)


def test_bd09_to_gcj02_agrees_with_published_closed_form_within_its_error() -> None:
    assert bd09_to_gcj02(*WANDERGIS_INPUT) == pytest.approx(WANDERGIS_BD09_TO_GCJ02, abs=5e-6)
    # and, unlike the closed form, it inverts gcj02_to_bd09 exactly
    assert gcj02_to_bd09(*bd09_to_gcj02(*WANDERGIS_INPUT)) == pytest.approx(WANDERGIS_INPUT, abs=1e-12)


def test_gcj02_offset_at_wuhan_is_a_few_hundred_metres_east_and_south() -> None:
    # Order-of-magnitude check, not a reference value: about +0.0054 deg lon, -0.0024 deg lat.
    lon, lat = 114.3055, 30.5928
    gcj_lon, gcj_lat = wgs84_to_gcj02(lon, lat)
    assert gcj_lon - lon == pytest.approx(0.0054, abs=0.0003)
    assert gcj_lat - lat == pytest.approx(-0.0024, abs=0.0003)


@given(mainland_points())
def test_wgs84_gcj02_round_trip_is_below_tolerance(point: tuple[float, float]) -> None:
    lon, lat = point
    back_lon, back_lat = gcj02_to_wgs84(*wgs84_to_gcj02(lon, lat))
    assert abs(back_lon - lon) < ROUND_TRIP_TOL
    assert abs(back_lat - lat) < ROUND_TRIP_TOL


@given(mainland_points())
def test_gcj02_wgs84_round_trip_is_below_tolerance(point: tuple[float, float]) -> None:
    lon, lat = point
    back_lon, back_lat = wgs84_to_gcj02(*gcj02_to_wgs84(lon, lat))
    assert abs(back_lon - lon) < ROUND_TRIP_TOL
    assert abs(back_lat - lat) < ROUND_TRIP_TOL


@given(mainland_points())
def test_wgs84_bd09_round_trip_is_below_tolerance(point: tuple[float, float]) -> None:
    lon, lat = point
    back_lon, back_lat = bd09_to_wgs84(*wgs84_to_bd09(lon, lat))
    assert abs(back_lon - lon) < ROUND_TRIP_TOL
    assert abs(back_lat - lat) < ROUND_TRIP_TOL


@pytest.mark.parametrize(("lon", "lat"), OUTSIDE_CHINA)
def test_points_outside_china_pass_through_gcj02_unchanged(lon: float, lat: float) -> None:
    assert wgs84_to_gcj02(lon, lat) == (lon, lat)
    assert gcj02_to_wgs84(lon, lat) == (lon, lat)
    assert to_wgs84(lon, lat, CRS.GCJ02) == (lon, lat)


@given(st.lists(mainland_points(), min_size=1, max_size=50))
def test_vectorised_arrays_equal_scalar_results(points: list[tuple[float, float]]) -> None:
    lons = np.array([p[0] for p in points] + [p[0] for p in OUTSIDE_CHINA])
    lats = np.array([p[1] for p in points] + [p[1] for p in OUTSIDE_CHINA])
    for func in (wgs84_to_gcj02, gcj02_to_wgs84, gcj02_to_bd09, bd09_to_gcj02, wgs84_to_bd09, bd09_to_wgs84):
        out_lon, out_lat = func(lons, lats)
        assert out_lon.shape == lons.shape
        assert out_lat.shape == lats.shape
        scalar = np.array([func(float(x), float(y)) for x, y in zip(lons, lats, strict=True)])
        np.testing.assert_allclose(out_lon, scalar[:, 0], rtol=0, atol=1e-12)
        np.testing.assert_allclose(out_lat, scalar[:, 1], rtol=0, atol=1e-12)


def test_result_keeps_the_input_shape_and_scalar_type() -> None:
    lons = np.array([[114.3, 0.0], [116.4, 121.5]])
    lats = np.array([[30.6, 51.5], [39.9, 31.2]])
    out_lon, out_lat = gcj02_to_wgs84(lons, lats)
    assert out_lon.shape == out_lat.shape == (2, 2)
    assert (out_lon[0, 1], out_lat[0, 1]) == (0.0, 51.5)
    lon, lat = gcj02_to_wgs84(114.3, 30.6)
    assert type(lon) is float
    assert type(lat) is float


def test_inputs_are_not_modified() -> None:
    lons = np.array([114.3, 116.4])
    lats = np.array([30.6, 39.9])
    gcj02_to_wgs84(lons, lats)
    bd09_to_wgs84(lons, lats)
    np.testing.assert_array_equal(lons, [114.3, 116.4])
    np.testing.assert_array_equal(lats, [30.6, 39.9])


@pytest.mark.parametrize(
    ("crs", "expected"),
    [
        (CRS.WGS84, lambda lon, lat: (lon, lat)),
        (CRS.GCJ02, gcj02_to_wgs84),
        (CRS.BD09, bd09_to_wgs84),
    ],
)
def test_to_wgs84_dispatches_on_crs(crs: CRS, expected: Callable[[float, float], tuple[float, float]]) -> None:
    assert to_wgs84(114.3, 30.6, crs) == expected(114.3, 30.6)


@pytest.mark.parametrize(
    ("text", "crs"),
    [("WGS84", CRS.WGS84), ("wgs84", CRS.WGS84), ("GCJ-02", CRS.GCJ02), ("gcj_02", CRS.GCJ02), ("bd09", CRS.BD09)],
)
def test_crs_lookup_ignores_case_and_separators(text: str, crs: CRS) -> None:
    assert CRS(text) is crs


def test_unknown_crs_is_rejected() -> None:
    with pytest.raises(ValueError, match="EPSG"):
        CRS("EPSG:3857")
