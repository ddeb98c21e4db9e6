"""A report from a GCJ-02 map app lands in the district where it really is, not ~600 m off."""

from __future__ import annotations

import numpy as np
import pytest
from formats_data import NOW

from rules.crs import wgs84_to_gcj02
from rules.decode import Rejected
from rules.engine import Engine
from rules.formats.open311 import Open311Context, parse_service_request
from rules.model import Report


def grid() -> list[tuple[float, float]]:
    """A 2 km grid over central Wuhan (WGS-84), where several districts meet along the rivers."""
    lons = np.arange(114.20, 114.42, 0.02)
    lats = np.arange(30.50, 30.66, 0.02)
    return [(round(float(x), 4), round(float(y), 4)) for x in lons for y in lats]


def zone(engine: Engine, lon: float, lat: float) -> list[str]:
    event = Report(id="z", ts=NOW, lon=lon, lat=lat, category="noise")
    return engine.enrich([event])[0].zones.get("districts", [])


def test_gcj02_reports_land_in_the_district_of_their_true_position(engine: Engine, open311_ctx: Open311Context) -> None:
    shifted_wrongly = 0
    for lon, lat in grid():
        truth = zone(engine, lon, lat)
        glon, glat = wgs84_to_gcj02(lon, lat)
        got = parse_service_request(
            {"service_code": "waterlogging", "lat": glat, "long": glon, "crs": "GCJ02"},
            open311_ctx,
            request_id="app-1",
            received_at=NOW,
            raw=b"",
        )
        assert not isinstance(got, Rejected), got
        event, _ = got
        assert zone(engine, event.lon, event.lat) == truth, (lon, lat)
        shifted_wrongly += zone(engine, glon, glat) != truth
    # the control: read as WGS-84, the raw GCJ-02 numbers put some reports in the wrong district
    assert shifted_wrongly >= 1


def test_a_known_jianghan_point_sent_in_gcj02_is_in_jianghan(engine: Engine, open311_ctx: Open311Context) -> None:
    glon, glat = wgs84_to_gcj02(114.27, 30.59)
    got = parse_service_request(
        {"service_code": "waterlogging", "lat": str(glat), "long": str(glon)},
        open311_ctx,
        request_id="app-2",
        received_at=NOW,
        raw=b"",
        crs_override="GCJ02",
    )
    assert not isinstance(got, Rejected)
    assert zone(engine, got[0].lon, got[0].lat) == ["420103"]
    assert got[0].lon == pytest.approx(114.27, abs=1e-9)
