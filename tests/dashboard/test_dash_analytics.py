"""The analytics page: incidents over time, MTTA and MTTR, top recurring locations, intake rates."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import pyarrow as pa
import pytest
from conftest import DRONE, DUMPING, PM25, WATER_LEVEL, WATERLOGGING
from dashkit import frames, open_page

if TYPE_CHECKING:
    from conftest import RunningStore

pytestmark = pytest.mark.integration


def chart(at: Any, index: int) -> Any:
    """The data of the page's ``index``-th chart (AppTest sees charts only as their spec and Arrow data)."""
    charts = at.get("vega_lite_chart")
    assert len(charts) > index, f"only {len(charts)} charts"
    return pa.ipc.open_stream(charts[index].proto.datasets[0].data.data).read_all().to_pandas()


def set_times(store: RunningStore, incident_id: str, **minutes: int | None) -> None:
    """Lifecycle times as minutes after a fixed opening one hour ago."""
    assert store.store is not None
    opened = datetime.now(UTC) - timedelta(hours=1)
    values = {k: (None if v is None else opened + timedelta(minutes=v)) for k, v in minutes.items()}
    store.store.con.execute(
        "UPDATE incidents SET opened_at = ?, acknowledged_at = ?, closed_at = ?, status = ?, status_changed_at = ? "
        "WHERE id = ?",
        [opened, values.get("acked"), values.get("closed"), "closed" if values.get("closed") else "acknowledged",
         values.get("closed") or opened, incident_id],
    )  # fmt: skip


def test_mtta_and_mttr_from_the_lifecycle_times(live_store: RunningStore) -> None:
    set_times(live_store, WATER_LEVEL.id, acked=4, closed=30)
    set_times(live_store, PM25.id, acked=10, closed=50)
    set_times(live_store, DRONE.id, acked=7)

    at = open_page("analytics")

    shown = {m.label: m.value for m in at.metric}
    assert shown["平均确认时间"] == "7分00秒" and shown["确认时间中位数"] == "7分00秒"
    assert shown["平均解决时间"] == "40分00秒" and shown["解决时间中位数"] == "40分00秒"
    per_category = next(f for f in frames(at) if "已确认" in f.columns)
    flood = per_category[per_category["类别"] == "内涝"].iloc[0]
    assert (flood["事件数"], flood["已确认"], flood["已解决或关闭"], flood["平均确认时间"]) == (2, 1, 1, "4分00秒")


def test_incidents_over_time_by_category_and_district(live_store: RunningStore) -> None:
    at = open_page("analytics")

    assert len(at.get("vega_lite_chart")) == 3, "intake, by category, by district"
    series = "color -- streamlit-generated"
    value = "value -- streamlit-generated"
    by_category = chart(at, 1)
    # per day: incidents opened up to an hour ago fall on two days just after midnight in Shanghai
    # (16:00 UTC), so each series is summed over the days shown
    assert by_category.groupby(series)[value].sum().to_dict() == {
        "内涝": 2, "空气质量": 1, "环境卫生": 1, "低空安全": 1,
    }  # fmt: skip
    by_district = chart(at, 2)
    assert by_district.groupby(series)[value].sum().to_dict() == {
        "洪山区": 2, "江汉区": 1, "青山区": 1, "武昌区": 1,
    }  # fmt: skip
    shanghai = datetime.now(ZoneInfo("Asia/Shanghai"))
    assert set(by_category["日期"]) <= {
        shanghai.strftime("%Y-%m-%d"),
        (shanghai - timedelta(hours=1)).strftime("%Y-%m-%d"),
    }


def test_top_locations_rank_places_by_incidents(live_store: RunningStore) -> None:
    at = open_page("analytics")

    top = next(f for f in frames(at) if "位置（经度, 纬度）" in f.columns)
    assert len(top) == 5 and set(top["事件数"]) == {1}
    assert set(top["行政区"]) == {"江汉区", "洪山区", "青山区", "武昌区"}
    assert "114.255, 30.605" in set(top["位置（经度, 纬度）"])


def test_intake_rates_and_dead_letter_share(live_store: RunningStore) -> None:
    at = open_page("analytics")

    shown = {m.label: m.value for m in at.metric}
    assert shown["每秒接入事件"] == f"{9 / 300:.1f}"
    assert shown["每分钟死信"] == f"{1 / 300 * 60:.1f}"
    assert shown["死信占比"] == "10.00%"


def test_period_excludes_older_incidents(live_store: RunningStore) -> None:
    assert live_store.store is not None
    old = datetime.now(UTC) - timedelta(days=3)
    for inc in (WATERLOGGING, DUMPING):
        live_store.store.con.execute(
            "UPDATE incidents SET first_event_at = ?, opened_at = ? WHERE id = ?", [old, old, inc.id]
        )
    at = open_page("analytics")
    at.selectbox(key="analytics_period.zh-CN").set_value("24h").run()

    top = next(f for f in frames(at) if "位置（经度, 纬度）" in f.columns)
    assert len(top) == 3


def test_empty_store_says_there_is_nothing_yet(empty_store: RunningStore) -> None:
    at = open_page("analytics")

    infos = [i.value for i in at.info]
    assert "此时间范围内没有事件。请在侧边栏选择更长的时间范围。" in infos
    assert "最近一小时没有存储任何数据：流处理 worker 在运行吗？`cityops worker`" in infos


def test_english_analytics(live_store: RunningStore) -> None:
    at = open_page("analytics", lang="en")

    assert at.title[0].value == "Analytics"
    assert {"MTTA (mean)", "MTTR (median)", "Events in per second"} <= {m.label for m in at.metric}
