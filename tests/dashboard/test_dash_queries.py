"""The dashboard's read-side queries (``sinks.read``) over a real Quack endpoint: results, allow-lists, and
filter values that stay literals whatever they contain."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest
from conftest import DRONE, PM25, TOKEN, WATER_LEVEL, WATERLOGGING

from dashboard.maps import GRID_STEP_DEG, hexagons
from sinks.errors import QueryError
from sinks.read import IncidentFilter, StoreReader

if TYPE_CHECKING:
    from conftest import RunningStore

pytestmark = pytest.mark.integration

INJECTIONS = [
    "x' OR '1'='1",
    "420111'] OR TRUE OR zone_id IN ['x",
    "flood\\' OR TRUE --",
    "high'); DROP TABLE incidents; --",
    "'; ATTACH 'evil.db' AS e; --",
    "load",
]
LATER = datetime.now(UTC) + timedelta(hours=1)
EARLIER = datetime.now(UTC) - timedelta(days=1)


@pytest.fixture
def reader(live_store: RunningStore) -> StoreReader:
    return StoreReader(live_store.uri, TOKEN)


@pytest.mark.parametrize("payload", INJECTIONS)
def test_filter_values_are_literals_so_payloads_match_nothing_and_change_nothing(
    reader: StoreReader, payload: str
) -> None:
    for flt in (
        IncidentFilter(severities=(payload,)),
        IncidentFilter(zones=(payload,)),
        IncidentFilter(categories=(payload,)),
        IncidentFilter(statuses=(payload,), packs=(payload,)),
    ):
        assert reader.queue(flt) == [] and reader.count(flt) == 0
        assert reader.points(flt) == [] and reader.grid(flt, step_deg=0.01) == [] and reader.zone_counts(flt) == {}
    assert reader.incident(payload) is None and reader.history(payload) == [] and reader.action(payload) is None
    assert reader.counts()["incidents"] == 5


@pytest.mark.parametrize(
    "call",
    [
        lambda r: r.queue(IncidentFilter(), sort="severity; DROP TABLE incidents"),
        lambda r: r.over_time(EARLIER, LATER, bucket="hour); DROP TABLE x; --", by="category", tz="UTC"),
        lambda r: r.over_time(EARLIER, LATER, bucket="hour", by="1; DROP TABLE x", tz="UTC"),
        lambda r: r.over_time(EARLIER, LATER, bucket="hour", by="category", tz="Asia/Shanghai'; DROP"),
        lambda r: r.intake(EARLIER, bucket="week"),
        lambda r: r.distinct("id; DROP TABLE incidents"),
        lambda r: r.grid(IncidentFilter(), step_deg=0.0),
    ],
)
def test_identifiers_and_keywords_come_only_from_allow_lists(reader: StoreReader, call: object) -> None:
    with pytest.raises(QueryError):
        call(reader)  # type: ignore[operator]


def test_queue_count_and_points_follow_the_filter(reader: StoreReader) -> None:
    flt = IncidentFilter(statuses=("open",), categories=("flood",), since=EARLIER, until=LATER)

    assert [r["id"] for r in reader.queue(flt, sort="severity")] == [WATERLOGGING.id, WATER_LEVEL.id]
    assert reader.count(flt) == 2
    assert {p["id"] for p in reader.points(flt)} == {WATER_LEVEL.id, WATERLOGGING.id}
    assert reader.zone_counts(flt) == {"420103": 1, "420111": 1}
    assert reader.count(IncidentFilter(since=LATER)) == 0


def test_grid_cells_bin_into_h3_hexagons_without_losing_incidents(reader: StoreReader) -> None:
    cells = reader.grid(IncidentFilter(), step_deg=GRID_STEP_DEG)

    assert sum(c["n"] for c in cells) == 5
    hexes = hexagons(cells)
    assert sum(h["n"] for h in hexes) == 5
    hongshan = [h for h in hexes if h["n"] == 2 or h["worst"] == 1]
    assert hongshan and min(h["worst"] for h in hexes) == 1, "high (rank 1) is the worst severity here"


def test_sensors_and_tracks(reader: StoreReader) -> None:
    sensors = {s["subject"]: s for s in reader.sensors(EARLIER)}
    assert set(sensors) == {"wl-jianghan-007", "wl-qiaokou-003"}
    assert sensors["wl-jianghan-007"]["readings"] == 3 and sensors["wl-jianghan-007"]["metric"] == "water_level_cm"

    (track,) = reader.tracks(EARLIER, datetime.now(UTC) - timedelta(minutes=5))
    assert track["subject"] == "uav-0042" and len(track["path"]) == 5 and track["object_type"] == "drone"
    assert reader.tracks(EARLIER, LATER) == [], "nothing has a fix in the future"


def test_analytics_queries(reader: StoreReader) -> None:
    rows = reader.over_time(EARLIER, LATER, bucket="hour", by="category", tz="Asia/Shanghai")
    assert sum(r["n"] for r in rows) == 5 and {r["key"] for r in rows} == {
        "flood",
        "air_quality",
        "sanitation",
        "airspace",
    }
    total = next(r for r in reader.response_times(EARLIER, LATER) if r["category"] is None)
    assert total["incidents"] == 5 and total["acknowledged"] == 0 and total["mtta_s"] is None
    top = reader.top_locations(EARLIER, LATER)
    assert len(top) == 5 and top[0]["n"] == 1
    intake = reader.intake(datetime.now(UTC) - timedelta(hours=1))
    assert sum(r["n"] for r in intake if r["what"] == "events") == 9
    assert sum(r["n"] for r in intake if r["what"] == "dead_letters") == 1


def test_rule_and_system_queries(reader: StoreReader) -> None:
    hits = {h["rule_id"]: h for h in reader.rule_hits(None)}
    assert hits[DRONE.rule_id]["hits"] == 1 and hits[DRONE.rule_id]["active"] == 1
    assert reader.rule_hits(LATER) == []
    assert reader.pack_versions()[0]["incidents"] == 5
    health = reader.health()
    assert health["schema_version"] == 2 and health["updates_pending"] == 5
    assert reader.dead_letter_kinds() == [
        {"kind": "bad_json", "n": 1, "last_failed": reader.dead_letters()[0]["failed_at"]}
    ]
    assert reader.event_count(EARLIER, LATER) == 9
    assert reader.distinct("category") == sorted({"flood", "air_quality", "sanitation", "airspace"})
    assert PM25.id in {r["id"] for r in reader.queue(IncidentFilter(severities=("medium",)))}
