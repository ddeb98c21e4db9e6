"""The dashboard's logic through Streamlit's AppTest, against a real store served over Quack."""

from __future__ import annotations

import json
import re
from datetime import UTC
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import pytest
from streamlit.testing.v1 import AppTest

from dashboard.i18n import LANGUAGES, TextsError, t, texts
from sinks.errors import QueryError
from sinks.read import StoreReader
from streams.settings import get_settings

if TYPE_CHECKING:
    from rules.model import Incident

    from .conftest import RunningStore

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
APP = REPO / "dashboard" / "app.py"
SHANGHAI = ZoneInfo("Asia/Shanghai")
WATER_LEVEL = "flood.water-level-high"
WATERLOGGING = "flood.waterlogging-reports"
DRONE = "airspace.drone-too-high"
PM25 = "air.pm25-very-high"
DUMPING = "sanitation.dumping-reports"


def city_time(incident: Incident) -> str:
    return incident.last_event_at.astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M:%S")


def titles(store: RunningStore, *rule_ids: str) -> set[str]:
    return {store.by_rule(r).title for r in rule_ids}


def run_app() -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=30).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def table(at: AppTest) -> Any:
    assert len(at.dataframe) == 1, "expected exactly one incident table"
    return at.dataframe[0].value


def deck(at: AppTest) -> dict[str, Any]:
    charts = at.get("deck_gl_json_chart")
    assert len(charts) == 1, "expected exactly one map"
    spec: dict[str, Any] = json.loads(charts[0].proto.json)
    return spec


def layer(spec: dict[str, Any], layer_id: str) -> dict[str, Any]:
    found = [x for x in spec["layers"] if x["id"] == layer_id]
    assert found, f"no layer {layer_id!r} in {[x['id'] for x in spec['layers']]}"
    return found[0]


def texts_on_page(at: AppTest) -> str:
    parts = [
        e.value
        for kind in ("title", "caption", "markdown", "error", "info", "warning", "subheader")
        for e in getattr(at, kind)
    ]
    return "\n".join(str(p) for p in parts)


def test_kpis_show_the_counts_of_the_store(live_store: RunningStore) -> None:
    at = run_app()

    assert metrics(at) == {"已存储事件": "0", "未处置事件": "5", "事件总数": "5", "死信": "1"}


def test_table_lists_every_incident_newest_first_in_city_time(live_store: RunningStore) -> None:
    at = run_app()
    frame = table(at)

    newest_first = sorted(live_store.incidents, key=lambda i: i.last_event_at, reverse=True)
    assert list(frame["标题"]) == [i.title for i in newest_first]
    first = frame.iloc[0]
    assert first["时间"] == city_time(live_store.by_rule(WATER_LEVEL))
    assert first["级别"] == "高"
    assert first["行政区"] == "江汉区"
    assert first["对象"] == "wl-jianghan-007"
    assert first["观测值 / 阈值"] == "42.5 > 30"
    assert first["次数"] == 3
    assert first["规则"] == "flood.water-level-high@1"
    assert frame.iloc[1]["观测值 / 阈值"] == "4 ≥ 3"
    assert list(frame.columns) == ["时间", "级别", "标题", "行政区", "对象", "观测值 / 阈值", "次数", "规则"]


def test_severity_filter_narrows_table_and_map(live_store: RunningStore) -> None:
    at = run_app()
    assert len(table(at)) == 5

    at.multiselect(key="filter_severity").set_value(["medium"]).run()

    assert set(table(at)["标题"]) == titles(live_store, PM25, DUMPING)
    points = layer(deck(at), "incidents")["data"]
    assert {p["tip_title"] for p in points} == titles(live_store, PM25, DUMPING) and len(points) == 2
    assert metrics(at)["事件总数"] == "5", "KPIs count the whole store, not the filtered rows"


def test_district_filter_offers_zone_names_and_filters_by_zone_id(live_store: RunningStore) -> None:
    at = run_app()
    district = at.multiselect(key="filter_district")
    assert "洪山区" in district.options and "江汉区" in district.options and "420111" not in district.options

    district.set_value(["420111"]).run()

    assert set(table(at)["标题"]) == titles(live_store, WATERLOGGING, DRONE)
    assert set(table(at)["行政区"]) == {"洪山区"}


def test_category_filter_lists_pack_categories_and_narrows_table(live_store: RunningStore) -> None:
    at = run_app()
    category = at.multiselect(key="filter_category")
    assert {"内涝", "空气质量", "环境卫生", "低空安全"} <= set(category.options)

    category.set_value(["flood"]).run()

    assert set(table(at)["标题"]) == titles(live_store, WATER_LEVEL, WATERLOGGING)


def test_filters_that_match_nothing_say_how_to_see_more(live_store: RunningStore) -> None:
    at = run_app()
    at.multiselect(key="filter_severity").set_value(["critical"]).run()

    assert len(at.dataframe) == 0
    assert any("没有符合筛选条件的事件" in i.value for i in at.info)


def test_map_has_no_basemap_shades_districts_and_colours_points_by_severity(live_store: RunningStore) -> None:
    spec = deck(run_app())

    assert spec.get("mapProvider") in (None, "None")
    assert not isinstance(spec.get("mapStyle"), dict)
    view = spec["initialViewState"]
    assert abs(view["longitude"] - 114.3) < 0.2 and abs(view["latitude"] - 30.6) < 0.2 and 8 <= view["zoom"] <= 9
    districts = {f["properties"]["zone_id"]: f["properties"] for f in layer(spec, "districts")["data"]["features"]}
    assert len(districts) == 13
    assert districts["420111"]["tip_line1"] == "未处置事件：2"
    assert districts["420111"]["fill"] != districts["420117"]["fill"], "a district with incidents is shaded"
    assert districts["420117"]["tip_line1"] == "未处置事件：0"
    points = layer(spec, "incidents")["data"]
    assert len(points) == len(live_store.incidents)
    colour = {p["tip_title"]: tuple(p["color"][:3]) for p in points}
    water, pm25, drone = (live_store.by_rule(r) for r in (WATER_LEVEL, PM25, DRONE))
    assert colour[water.title] != colour[pm25.title]
    assert colour[water.title] == colour[drone.title]
    point = next(p for p in points if p["tip_title"] == water.title)
    assert point["position"] == [water.lon, water.lat]
    assert "江汉区" in point["tip_line1"]
    assert point["tip_line2"] == city_time(water)


def test_switching_language_to_english_changes_texts(live_store: RunningStore) -> None:
    at = run_app()
    assert at.title[0].value == "城市运行总览"

    at.selectbox(key="lang_select").set_value("en").run()

    assert at.title[0].value == "Operations overview"
    assert metrics(at) == {"Events stored": "0", "Incidents open": "5", "Incidents total": "5", "Dead letters": "1"}
    frame = table(at)
    assert list(frame.columns) == [
        "Time",
        "Severity",
        "Title",
        "District",
        "Subject",
        "Value vs threshold",
        "Count",
        "Rule",
    ]
    assert frame.iloc[0]["District"] == "Jianghan"
    assert frame.iloc[0]["Severity"] == "High"
    assert "DEMO MODE — no login" in texts_on_page(at)
    assert at.multiselect(key="filter_severity").options == ["Critical", "High", "Medium", "Low", "Info"]
    assert not re.search(r"[\u4e00-\u9fff]", texts_on_page(at)), "Chinese text left on the English page"

    at.multiselect(key="filter_severity").set_value(["high"]).run()  # the choice survives further reruns
    assert at.title[0].value == "Operations overview"
    assert set(table(at)["Severity"]) == {"High"}


def test_language_comes_from_settings(live_store: RunningStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CITYOPS_DASHBOARD__LANGUAGE", "en")
    get_settings.cache_clear()

    at = run_app()

    assert at.title[0].value == "Operations overview"
    assert at.selectbox(key="lang_select").value == "en"


def test_demo_mode_badge_is_shown_and_can_be_turned_off(
    live_store: RunningStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert "演示模式" in texts_on_page(run_app())

    monkeypatch.setenv("CITYOPS_DASHBOARD__DEMO_MODE", "false")
    get_settings.cache_clear()

    assert "演示模式" not in texts_on_page(run_app())


def test_unreachable_store_says_how_to_start_it(unreachable_store: RunningStore) -> None:
    at = run_app()

    assert [e.value for e in at.error] == [
        f"无法连接数据存储服务（quack:127.0.0.1:{unreachable_store.port}）。"
        "请用 `cityops store`（或 `make demo`）启动它。"
    ]
    assert len(at.metric) == 0 and len(at.dataframe) == 0


def test_unreachable_store_message_in_english(unreachable_store: RunningStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CITYOPS_DASHBOARD__LANGUAGE", "en")
    get_settings.cache_clear()

    at = run_app()

    assert [e.value for e in at.error] == [
        f"The store writer is not reachable at quack:127.0.0.1:{unreachable_store.port}. "
        "Start it with `cityops store` (or `make demo`)."
    ]


def test_unknown_timezone_is_named_and_times_fall_back_to_utc(
    live_store: RunningStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CITYOPS_DASHBOARD__TIMEZONE", "Mars/Olympus_Mons")
    get_settings.cache_clear()

    at = run_app()

    assert any("Mars/Olympus_Mons" in w.value for w in at.warning)
    water = live_store.by_rule(WATER_LEVEL)
    assert table(at).iloc[0]["时间"] == water.last_event_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def test_wrong_token_says_what_to_check(live_store: RunningStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CITYOPS_STORE__TOKEN", "not-the-token")
    get_settings.cache_clear()

    at = run_app()

    assert len(at.error) == 1 and "CITYOPS_STORE__TOKEN" in at.error[0].value
    assert len(at.metric) == 0


def test_empty_store_says_no_incidents_yet(empty_store: RunningStore) -> None:
    at = run_app()

    assert metrics(at) == {"已存储事件": "0", "未处置事件": "0", "事件总数": "0", "死信": "0"}
    assert [i.value for i in at.info] == ["还没有事件：流处理 worker 在运行吗？`cityops worker`"]
    assert len(at.dataframe) == 0
    assert len(layer(deck(at), "districts")["data"]["features"]) == 13, "the district map is drawn anyway"


def test_empty_store_message_in_english(empty_store: RunningStore) -> None:
    at = run_app()
    at.selectbox(key="lang_select").set_value("en").run()

    assert [i.value for i in at.info] == ["No incidents yet: is the worker running? `cityops worker`"]


def test_map_query_binds_filter_values_as_literals(live_store: RunningStore) -> None:
    reader = StoreReader(live_store.uri, "test-token-123")

    assert reader.incident_points(severities=["x' OR '1'='1"]) == []
    assert reader.incident_points(zones=["420111'] OR TRUE OR zone_id IN ['x"]) == []
    assert reader.incident_points(categories=["flood\\' OR TRUE --"]) == []
    with pytest.raises(QueryError):  # the store's read-only policy refuses it outright
        reader.incident_points(severities=["high'); DROP TABLE incidents; --"])
    assert len(reader.incident_points(severities=["medium"], limit=1)) == 1
    assert reader.counts()["incidents"] == len(live_store.incidents)


def test_every_text_exists_in_both_languages() -> None:
    zh, en = texts("zh-CN"), texts("en")
    assert set(zh) == set(en)
    for key in zh:
        assert sorted(re.findall(r"{(\w+)", zh[key])) == sorted(re.findall(r"{(\w+)", en[key])), key


def test_every_text_key_used_in_the_code_is_defined() -> None:
    used: set[str] = set()
    for path in (REPO / "dashboard").rglob("*.py"):
        used |= set(re.findall(r"""\bt\(\s*f?["']([a-z_]+\.[a-z_]+)["']""", Path(path).read_text(encoding="utf-8")))
    assert used, "found no t(...) calls: the pattern is stale"
    for lang in LANGUAGES:
        missing = sorted(k for k in used if k not in texts(lang))
        assert not missing, f"{lang}: {missing}"
    assert t("state.no_incidents", "en") == "No incidents yet: is the worker running? `cityops worker`"
    with pytest.raises(TextsError, match=r"no text 'state\.nope'"):
        t("state.nope", "en")
