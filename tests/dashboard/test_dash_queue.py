"""The incident queue: columns, filters, sorting, SLA timers, empty states, and the incident detail."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest
import streamlit as st
from conftest import DRONE, DUMPING, PM25, WATER_LEVEL, WATERLOGGING
from dashkit import badges, frames, open_page, texts

from rules.lifecycle import Action
from sinks.store import Batch

if TYPE_CHECKING:
    from conftest import RunningStore

pytestmark = pytest.mark.integration


def table(at: object) -> object:
    found = frames(at)  # type: ignore[arg-type]
    assert found, "no table on the page"
    return found[0]


def test_queue_lists_open_incidents_most_severe_and_oldest_first(live_store: RunningStore) -> None:
    at = open_page("queue")
    frame = table(at)

    assert list(frame["标题"]) == [DRONE.title, WATERLOGGING.title, WATER_LEVEL.title, DUMPING.title, PM25.title]
    assert list(frame.columns) == [
        "级别", "标题", "状态", "行政区", "发生时间", "已持续", "确认后", "确认时限", "处置人", "对象", "规则",
    ]  # fmt: skip
    first = frame.iloc[0]
    assert (first["级别"], first["状态"], first["行政区"]) == ("高", "待处置", "洪山区")
    assert first["规则"] == "airspace.drone-too-high@1" and first["处置人"] == "—" and first["确认后"] == "—"
    assert "显示 5 个符合条件的事件中的 5 个。" in texts(at)


def test_sla_timer_counts_down_then_flags_overdue(live_store: RunningStore) -> None:
    assert live_store.store is not None  # opened just now: a high incident is due within 15 minutes
    frame = table(open_page("queue"))
    assert frame.iloc[0]["确认时限"].startswith("剩余 1") and frame.iloc[0]["已持续"].endswith("秒")

    live_store.store.con.execute("UPDATE incidents SET opened_at = opened_at - INTERVAL 20 MINUTE")
    st.cache_data.clear()  # not wait for the 1 s TTL
    frame = table(open_page("queue"))
    assert frame.iloc[0]["确认时限"].startswith("⚠ 已超时 5分"), frame.iloc[0]["确认时限"]


def test_acknowledged_incidents_show_how_fast_and_since_when(live_store: RunningStore) -> None:
    assert live_store.store is not None
    opened = live_store.store.con.execute("SELECT opened_at FROM incidents WHERE id = ?", [PM25.id]).fetchone()[0]
    ack = Action(action_id="ack-pm25-0001", incident_id=PM25.id, action="ack", actor="zhang.san",
                 at=opened + timedelta(minutes=3, seconds=5))  # fmt: skip
    live_store.store.apply(Batch(actions=[ack]))

    frame = table(open_page("queue"))
    row = frame[frame["标题"] == PM25.title].iloc[0]

    assert row["状态"] == "已确认"
    assert row["确认时限"] == "✓ 3分05秒后确认"
    assert row["确认后"] != "—"


def test_status_filter_defaults_to_active_and_can_show_closed(live_store: RunningStore) -> None:
    assert live_store.store is not None
    live_store.store.con.execute("UPDATE incidents SET status = 'closed' WHERE id = ?", [DUMPING.id])
    at = open_page("queue")
    assert DUMPING.title not in set(table(at)["标题"])

    at.multiselect(key="queue_status.zh-CN").set_value(["closed"]).run()

    assert list(table(at)["标题"]) == [DUMPING.title]
    assert list(table(at)["状态"]) == ["已关闭"]


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("queue_severity.zh-CN", ["medium"], {PM25.title, DUMPING.title}),
        ("queue_category.zh-CN", ["flood"], {WATER_LEVEL.title, WATERLOGGING.title}),
        ("queue_district.zh-CN", ["420111"], {DRONE.title, WATERLOGGING.title}),
        ("queue_pack", ["wuhan"], {i.title for i in (WATER_LEVEL, WATERLOGGING, DRONE, PM25, DUMPING)}),
    ],
)
def test_filters_narrow_the_queue(live_store: RunningStore, key: str, value: list[str], expected: set[str]) -> None:
    at = open_page("queue")
    at.multiselect(key=key).set_value(value).run()

    assert set(table(at)["标题"]) == expected


def test_period_filter_keeps_incidents_active_in_the_period(live_store: RunningStore) -> None:
    assert live_store.store is not None
    old = datetime.now(UTC) - timedelta(days=3)
    live_store.store.con.execute(
        "UPDATE incidents SET first_event_at = ?, last_event_at = ? WHERE id = ?", [old, old, PM25.id]
    )
    at = open_page("queue")
    at.selectbox(key="queue_period.zh-CN").set_value("24h").run()

    assert PM25.title not in set(table(at)["标题"]) and len(table(at)) == 4


def test_sort_by_newest_activity(live_store: RunningStore) -> None:
    at = open_page("queue")
    at.selectbox(key="queue_sort.zh-CN").set_value("newest").run()

    assert list(table(at)["标题"])[:2] == [WATER_LEVEL.title, WATERLOGGING.title]


def test_no_match_and_no_incidents_say_what_to_do(live_store: RunningStore) -> None:
    at = open_page("queue")
    at.multiselect(key="queue_severity.zh-CN").set_value(["critical"]).run()

    assert [i.value for i in at.info] == ["没有符合筛选条件的事件。请在侧边栏清除筛选条件。"]
    assert not frames(at)


def test_empty_store_queue(empty_store: RunningStore) -> None:
    at = open_page("queue")

    assert [i.value for i in at.info] == ["还没有事件：流处理 worker 在运行吗？`cityops worker`"]


def test_detail_shows_facts_rule_thresholds_evidence_history_and_mini_map(live_store: RunningStore) -> None:
    at = open_page("queue", incident=WATER_LEVEL.id)

    assert at.main.header[0].value == WATER_LEVEL.title
    assert badges(at) == ":red-badge[状态：待处置] :orange-badge[级别：高]"
    shown = {m.label: m.value for m in at.metric}
    assert (shown["观测值 / 阈值"], shown["证据事件"], shown["确认后"]) == ("42.5 > 30", "3", "—")
    assert shown["已持续"].endswith("秒")
    facts, rule, evidence, history = frames(at)[1:5]
    facts = dict(zip(facts["字段"], facts["值"], strict=True))
    assert facts["事件编号"] == WATER_LEVEL.id and facts["行政区"] == "江汉区"
    assert facts["规则"] == "flood.water-level-high v1 (阈值)" and facts["规则包"] == "wuhan 2026.11.2"
    params = dict(zip(rule["参数"], rule["值"], strict=True))
    assert (params["op"], params["value"], params["match.metric"]) == (">", "30", "water_level_cm")
    assert list(evidence["事件编号"]) == ["wl-jianghan-007-e0", "wl-jianghan-007-e1", "wl-jianghan-007-e2"]
    assert list(history["变更"]) == ["创建"] and list(history["操作者"]) == ["rule:flood.water-level-high"]
    charts = at.get("deck_gl_json_chart")
    assert len(charts) == 1, "the mini map"


def test_detail_warns_when_the_loaded_rule_is_another_version(live_store: RunningStore) -> None:
    assert live_store.store is not None
    live_store.store.con.execute(
        "UPDATE incidents SET rule_version = 0, pack_version = '2020.1' WHERE id = ?", [PM25.id]
    )

    at = open_page("queue", incident=PM25.id)

    assert any("事件由 v0 (2020.1) 触发；当前加载的是 v1" in w.value for w in at.main.warning)


def test_detail_says_how_many_firings_a_cooldown_counted_on_the_incident(live_store: RunningStore) -> None:
    assert live_store.store is not None
    facts = dict(zip(*[frames(open_page("queue", incident=DRONE.id))[1][c] for c in ("字段", "值")], strict=True))
    assert "冷却期内合并的触发次数" not in facts  # a single firing says nothing
    live_store.store.con.execute(
        "UPDATE incidents SET details = ? WHERE id = ?",
        ['{"cooldown": {"firings": 3, "last_firing": "x"}}', PM25.id],
    )
    facts = dict(zip(*[frames(open_page("queue", incident=PM25.id))[1][c] for c in ("字段", "值")], strict=True))
    assert facts["冷却期内合并的触发次数"] == "3"


def test_unknown_incident_id_says_so(live_store: RunningStore) -> None:
    at = open_page("queue", incident="no-such-id")

    assert [w.value for w in at.main.warning] == ["找不到编号为 no-such-id 的事件：可能已被删除，或链接有误。"]


def test_closing_the_detail_removes_it(live_store: RunningStore) -> None:
    at = open_page("queue", incident=DRONE.id)
    at.button(key="detail_close").click().run()

    assert "incident" not in at.query_params and not at.main.header


def test_english_queue(live_store: RunningStore) -> None:
    at = open_page("queue", lang="en", incident=WATER_LEVEL.id)

    frame = table(at)
    assert list(frame.columns)[:4] == ["Severity", "Title", "Status", "District"]
    assert frame.iloc[0]["Status"] == "Open" and frame.iloc[0]["District"] == "Hongshan"
    assert at.title[0].value == "Incident queue"
    assert "Recorded as demo." in texts(at)


def test_filters_survive_a_language_switch_with_translated_labels(live_store: RunningStore) -> None:
    at = open_page("queue")
    at.multiselect(key="queue_severity.zh-CN").set_value(["medium"]).run()
    at.selectbox(key="queue_sort.zh-CN").set_value("newest").run()

    at.selectbox(key="lang_select").set_value("en").run()

    severity = at.multiselect(key="queue_severity.en")
    assert severity.value == ["medium"] and severity.format_func("medium") == "Medium"
    assert at.selectbox(key="queue_sort.en").value == "newest"
    assert set(table(at)["Title"]) == {PM25.title, DUMPING.title}


def test_positions_are_shown_in_the_coordinate_system_of_the_operators_map_apps() -> None:
    from dashboard.detail import display_position
    from rules.crs import gcj02_to_wgs84

    # Wuhan: GCJ-02 (Amap) is a few hundred metres off WGS-84, and converts back exactly
    shown = display_position(114.3055, 30.5928, "GCJ02")
    lat, lon = (float(x) for x in shown.split(", "))
    assert abs(lon - 114.3055) > 0.003 and abs(lat - 30.5928) > 0.001
    back_lon, back_lat = gcj02_to_wgs84(lon, lat)
    assert abs(back_lon - 114.3055) < 1e-5 and abs(back_lat - 30.5928) < 1e-5
    assert display_position(114.3055, 30.5928, "WGS84") == "30.592800, 114.305500"
    assert display_position(-73.9857, 40.7484, "GCJ02") == "40.748400, -73.985700"  # outside China: unchanged
