"""The live map page: KPIs, districts, incidents by severity, sensor health, tracks, aggregation, states."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import pytest
from conftest import DRONE, NOW, PM25, WATER_LEVEL, make_incident
from dashkit import app, deck, layer, layer_ids, metrics, ok, open_page

from dashboard import data
from sinks.store import Batch

if TYPE_CHECKING:
    from conftest import RunningStore

pytestmark = pytest.mark.integration

SHANGHAI = ZoneInfo("Asia/Shanghai")
OPEN_KEY = "map_open_incident"  # dashboard/pages/map.py: where the on_select callback puts the click


def test_kpis_count_the_store_and_the_sensors(live_store: RunningStore) -> None:
    at = ok(app().run())  # the map is the default page

    assert at.title[0].value == "实时地图"
    assert metrics(at) == {
        "已存储事件": "9", "未处置事件": "5", "事件总数": "5", "死信": "1", "静默传感器": "1", "活动轨迹": "1",
    }  # fmt: skip


def test_map_has_no_basemap_and_shades_districts_by_open_incidents(live_store: RunningStore) -> None:
    spec = deck(ok(app().run()))

    assert spec.get("mapProvider") in (None, "None")
    assert not isinstance(spec.get("mapStyle"), dict)
    view = spec["initialViewState"]
    assert abs(view["longitude"] - 114.3) < 0.2 and abs(view["latitude"] - 30.6) < 0.2 and 8 <= view["zoom"] <= 9
    assert layer_ids(spec) == ["districts", "district-names", "sensors", "tracks", "track-heads", "incidents"]
    districts = {f["properties"]["zone_id"]: f["properties"] for f in layer(spec, "districts")["data"]["features"]}
    assert len(districts) == 13
    assert districts["420111"]["tip_line1"] == "未处置事件：2"
    assert districts["420111"]["fill"] != districts["420117"]["fill"], "a district with incidents is shaded"


def test_incidents_are_coloured_by_severity_and_carry_their_id(live_store: RunningStore) -> None:
    points = layer(deck(ok(app().run())), "incidents")["data"]

    assert len(points) == 5
    colour = {p["tip_title"]: tuple(p["color"][:3]) for p in points}
    assert colour[WATER_LEVEL.title] == colour[DRONE.title] != colour[PM25.title]
    water = next(p for p in points if p["tip_title"] == WATER_LEVEL.title)
    assert water["id"] == WATER_LEVEL.id
    assert water["position"] == [WATER_LEVEL.lon, WATER_LEVEL.lat]
    assert "江汉区" in water["tip_line1"]
    assert water["tip_line2"] == WATER_LEVEL.last_event_at.astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M:%S")
    assert points[-1]["tip_title"] in {WATER_LEVEL.title, DRONE.title}, "the most severe are drawn last (on top)"


def test_silent_sensors_stand_out(live_store: RunningStore) -> None:
    sensors = {s["tip_title"].split(" ·")[0]: s for s in layer(deck(ok(app().run())), "sensors")["data"]}

    silent, reporting = sensors["wl-qiaokou-003"], sensors["wl-jianghan-007"]
    assert silent["silent"] and not reporting["silent"]
    assert silent["radius"] > reporting["radius"] and silent["color"] != reporting["color"]
    assert silent["tip_line1"] == "静默：最近没有数据"
    assert sensors["wl-jianghan-007"]["tip_title"] == "wl-jianghan-007 · 水位"


def test_active_tracks_are_drawn_as_paths_with_a_head(live_store: RunningStore) -> None:
    spec = deck(ok(app().run()))

    (path,) = layer(spec, "tracks")["data"]
    assert len(path["path"]) == 5 and path["path"][0] == [114.38, 30.5]
    assert path["tip_title"] == "uav-0042 · 无人机 · 150 m"
    (head,) = layer(spec, "track-heads")["data"]
    assert head["position"] == path["path"][-1]


def test_sensor_and_track_layers_can_be_hidden(live_store: RunningStore) -> None:
    at = ok(app().run())
    at.checkbox(key="map_sensors").uncheck().run()
    at.checkbox(key="map_tracks").uncheck().run()

    assert layer_ids(deck(at)) == ["districts", "district-names", "incidents"]


def test_severity_and_district_filters_narrow_the_points_and_the_shading(live_store: RunningStore) -> None:
    at = ok(app().run())
    at.multiselect(key="map_severity.zh-CN").set_value(["medium"]).run()
    assert {p["tip_title"] for p in layer(deck(at), "incidents")["data"]} == {PM25.title, live_store.incidents[4].title}

    at.multiselect(key="map_severity.zh-CN").set_value([]).run()
    at.multiselect(key="map_district.zh-CN").set_value(["420111"]).run()
    spec = deck(at)
    assert {p["id"] for p in layer(spec, "incidents")["data"]} == {DRONE.id, live_store.incidents[1].id}
    districts = {f["properties"]["zone_id"]: f["properties"] for f in layer(spec, "districts")["data"]["features"]}
    assert districts["420103"]["tip_line1"] == "未处置事件：0", "shading follows the filters"
    assert metrics(at)["事件总数"] == "5", "KPIs count the whole store"


def test_filters_that_match_nothing_say_so(live_store: RunningStore) -> None:
    at = ok(app().run())
    at.multiselect(key="map_severity.zh-CN").set_value(["critical"]).run()

    assert [i.value for i in at.info] == ["没有符合筛选条件的未处置事件。请在侧边栏清除筛选条件。"]


def test_a_blind_district_says_which_rules_cannot_report_an_all_clear_there(live_store: RunningStore) -> None:
    assert live_store.store is not None
    at = ok(app().run())
    assert not any("盲区" in w.value for w in at.warning)
    blind = make_incident(
        "ops.sensor-silence", "Water-level sensor silent", "medium", "operations", "zone:420103",
        "420103", "江汉区", 114.255, 30.605, 0.6, 0.5, op=">=", kind="silence",
    )  # fmt: skip
    details = {"scope": "zone", "blind": True, "silent": 3, "known": 5, "rules": ["flood.water-level-high"]}
    resolved = make_incident(
        "ops.sensor-silence", "Water-level sensor silent", "medium", "operations", "zone:420111",
        "420111", "洪山区", 114.37, 30.51, 0.6, 0.5, op=">=", kind="silence",
    ).model_copy(update={"status": "resolved", "resolved_at": NOW})  # fmt: skip
    live_store.store.apply(Batch(incidents=[blind.model_copy(update={"details": details}), resolved]))
    data.blind_zones.clear()

    at = ok(app().run())

    assert [w.value for w in at.warning if "盲区" in w.value] == [
        "江汉区处于盲区：5 个传感器中有 3 个静默。以下规则在该区无法报告“一切正常”：flood.water-level-high。"
    ]


def test_many_incidents_are_drawn_as_h3_hexagons(live_store: RunningStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data, "MAP_POINT_LIMIT", 3)

    at = ok(app().run())

    spec = deck(at)
    assert "incidents" not in layer_ids(spec)
    cells = layer(spec, "incident-cells")["data"]
    assert sum(int(c["tip_title"].split()[1]) for c in cells) == 5  # "此处 N 个事件"
    assert all(len(c["polygon"]) == 6 for c in cells), "hexagons"
    assert any("H3" in c.value for c in at.caption)


def test_clicking_an_incident_opens_it_below_the_map_with_a_link_to_the_queue(live_store: RunningStore) -> None:
    at = ok(app().run())
    at.query_params["incident"] = DRONE.id  # what the map's on_select callback sets
    at.session_state[OPEN_KEY] = DRONE.id

    ok(at.run())

    assert at.title[0].value == "实时地图"  # no page switch: see the map page's docstring
    assert at.query_params["incident"] == DRONE.id
    assert OPEN_KEY not in at.session_state
    assert DRONE.title in [h.value for h in at.main.header]
    links = [e.proto for e in at.get("page_link")]
    assert [(link.label, link.query_string) for link in links] == [("在事件队列中打开", f"incident={DRONE.id}")]
    assert links[0].page.endswith("queue")

    at.button(key="map_detail_close").click()
    ok(at.run())

    assert "incident" not in at.query_params
    assert DRONE.title not in [h.value for h in at.main.header]
    assert at.get("page_link") == []


def test_a_new_incident_appears_on_the_next_refresh(live_store: RunningStore) -> None:
    at = ok(app().run())
    late = make_incident("flood.water-level-high", "Late one", "critical", "flood", "wl-late", "420102", "江岸区",
                         114.30, 30.64, 50, 30, minutes_ago=0)  # fmt: skip
    assert live_store.store is not None
    live_store.store.apply(Batch(incidents=[late]))
    data.counts.clear()  # type: ignore[attr-defined]  # the 1 s TTL, without waiting
    data.count.clear()  # type: ignore[attr-defined]
    data.points.clear()  # type: ignore[attr-defined]

    ok(at.run())

    assert "Late one" in {p["tip_title"] for p in layer(deck(at), "incidents")["data"]}
    assert metrics(at)["未处置事件"] == "6"


def test_english_map_texts(live_store: RunningStore) -> None:
    at = open_page("map", lang="en")

    assert at.title[0].value == "Live map"
    assert set(metrics(at)) == {
        "Events stored", "Incidents open", "Incidents total", "Dead letters", "Silent sensors", "Active tracks",
    }  # fmt: skip
    sensors = layer(deck(at), "sensors")["data"]
    assert {s["tip_line1"] for s in sensors} == {"Reporting", "SILENT: no reading recently"}


def test_empty_store_draws_districts_and_says_what_to_do(empty_store: RunningStore) -> None:
    at = ok(app().run())

    assert metrics(at)["事件总数"] == "0"
    assert [i.value for i in at.info] == ["还没有事件：流处理 worker 在运行吗？`cityops worker`"]
    assert len(layer(deck(at), "districts")["data"]["features"]) == 13


def test_unreachable_store_says_how_to_start_it(unreachable_store: RunningStore) -> None:
    at = ok(app().run())

    uri = f"quack:127.0.0.1:{unreachable_store.port}"
    assert [e.value for e in at.error] == [
        f"无法连接数据存储服务（{uri}）。请用 `cityops store`（或 `make demo`）启动它。"
    ]
    assert len(at.metric) == 0


def test_old_sensor_beyond_the_lookback_is_not_drawn(live_store: RunningStore) -> None:
    from rules.model import Enriched, Reading

    old = Reading(id="old-1", ts=NOW - timedelta(days=3), lon=114.3, lat=30.6, sensor_id="wl-old", metric="m", value=1)
    assert live_store.store is not None
    live_store.store.apply(Batch(events=[Enriched(event=old, zones={})]))

    sensors = layer(deck(ok(app().run())), "sensors")["data"]

    assert "wl-old" not in {s["tip_title"].split(" ·")[0] for s in sensors}
