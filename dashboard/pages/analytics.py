"""Analytics: incidents over time by category and district, MTTA and MTTR, top recurring locations,
events per second in and the dead-letter rate.

All aggregation happens in the store (one query per tile); buckets and days are the city's.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import pandas as pd
import streamlit as st

from dashboard import data
from dashboard.ui import (
    PERIODS,
    Page,
    duration,
    floor_time,
    guarded,
    label,
    live_caption,
    local_time,
    now,
    page_context,
    period_select,
    updated_caption,
)

logger = logging.getLogger(__name__)

ANALYTICS_PERIODS = ("24h", "7d", "30d")
INTAKE_WINDOW = timedelta(hours=1)
RATE_WINDOW = timedelta(minutes=5)


def _series(rows: list[dict[str, Any]], names: dict[str, str], page: Page, bucket: str) -> pd.DataFrame:
    """Long rows (bucket, key, n) as a wide frame: one column per key, city-local bucket index."""
    if not rows:
        return pd.DataFrame()
    frame = pd.DataFrame(rows)
    frame["key"] = frame["key"].map(lambda k: names.get(str(k), str(k) or "—"))
    # City-local buckets as text: a chart would shift naive datetimes into the browser's time zone.
    fmt = "%m-%d %H:00" if bucket == "hour" else "%Y-%m-%d"
    frame["bucket"] = [pd.Timestamp(b).strftime(fmt) for b in frame["bucket"]]
    wide = frame.pivot_table(index="bucket", columns="key", values="n", aggfunc="sum", fill_value=0)
    wide.index.name = page.t(f"analytics.bucket_{bucket}")
    return wide


def over_time(page: Page, since: Any, until: Any, bucket: str, layer: data.ZoneLayer | None) -> None:
    loaded = guarded(
        page,
        lambda: (
            data.over_time(page.address, since, until, bucket, "category", page.tz_name),
            data.over_time(page.address, since, until, bucket, "zone", page.tz_name),
        ),
    )
    if loaded is None:
        return
    by_cat, by_zone = loaded
    if not by_cat:
        st.info(page.t("analytics.no_incidents"), icon=":material/hourglass_empty:")
        return
    cats = {str(r["key"]): label("category", str(r["key"]), page.lang) for r in by_cat}
    outside = page.t("analytics.outside_zones")
    zones = {
        str(r["key"]): layer.zone_name(str(r["key"]) or None, page.lang, outside) if layer else str(r["key"]) or outside
        for r in by_zone
    }
    left, right = st.columns(2)
    with left:
        st.subheader(page.t("analytics.by_category"))
        st.bar_chart(_series(by_cat, cats, page, bucket), height=300, y_label=page.t("analytics.incidents"))
    with right:
        st.subheader(page.t("analytics.by_district"))
        st.bar_chart(_series(by_zone, zones, page, bucket), height=300, y_label=page.t("analytics.incidents"))


def response(page: Page, since: Any, until: Any) -> None:
    rows = guarded(page, lambda: data.response_times(page.address, since, until))
    if rows is None:
        return
    st.subheader(page.t("analytics.response"))
    total = next((r for r in rows if r["category"] is None), None)
    if total is None or not total["incidents"]:
        st.info(page.t("analytics.no_incidents"), icon=":material/hourglass_empty:")
        return
    cols = st.columns(4)
    cols[0].metric(page.t("analytics.mtta"), duration(total["mtta_s"], page.lang), help=page.t("analytics.mtta_help"))
    cols[1].metric(page.t("analytics.mtta_p50"), duration(total["mtta_p50_s"], page.lang))
    cols[2].metric(page.t("analytics.mttr"), duration(total["mttr_s"], page.lang), help=page.t("analytics.mttr_help"))
    cols[3].metric(page.t("analytics.mttr_p50"), duration(total["mttr_p50_s"], page.lang))
    frame = pd.DataFrame(
        {
            page.t("col.category"): [label("category", r["category"], page.lang) for r in rows if r["category"]],
            page.t("analytics.incidents"): [int(r["incidents"]) for r in rows if r["category"]],
            page.t("analytics.acknowledged"): [int(r["acknowledged"]) for r in rows if r["category"]],
            page.t("analytics.mtta"): [duration(r["mtta_s"], page.lang) for r in rows if r["category"]],
            page.t("analytics.resolved"): [int(r["resolved"]) for r in rows if r["category"]],
            page.t("analytics.mttr"): [duration(r["mttr_s"], page.lang) for r in rows if r["category"]],
        }
    )
    st.dataframe(frame, hide_index=True, width="stretch")


def top_locations(page: Page, since: Any, until: Any, layer: data.ZoneLayer | None) -> None:
    rows = guarded(page, lambda: data.top_locations(page.address, since, until))
    if rows is None:
        return
    st.subheader(page.t("analytics.top_locations"))
    if not rows:
        st.info(page.t("analytics.no_incidents"), icon=":material/hourglass_empty:")
        return
    frame = pd.DataFrame(
        {
            page.t("col.place"): [f"{float(r['lon']):.3f}, {float(r['lat']):.3f}" for r in rows],
            page.t("col.district"): [
                layer.zone_name(r["zone_id"], page.lang, r["zone_name"]) if layer else r["zone_name"] or "—"
                for r in rows
            ],
            page.t("analytics.incidents"): [int(r["n"]) for r in rows],
            page.t("col.category"): [label("category", r["category"], page.lang) for r in rows],
            page.t("analytics.rules"): [int(r["rules"]) for r in rows],
            page.t("col.last"): [local_time(r["last_at"], page.tz) for r in rows],
        }
    )
    st.dataframe(frame, hide_index=True, width="stretch")
    st.caption(page.t("analytics.top_locations_note"))


def intake(page: Page) -> None:
    """Events/s in and the dead-letter rate over the last hour, per minute (live)."""
    at = now()
    rows = guarded(page, lambda: data.intake(page.address, floor_time(at - INTAKE_WINDOW, 10)))
    if rows is None:
        return
    st.subheader(page.t("analytics.intake"))
    recent = [r for r in rows if r["bucket"] is not None and (at - _utc(r["bucket"])) <= RATE_WINDOW]
    events = sum(int(r["n"]) for r in recent if r["what"] == "events")
    dead = sum(int(r["n"]) for r in recent if r["what"] == "dead_letters")
    seconds = RATE_WINDOW.total_seconds()
    cols = st.columns(3)
    cols[0].metric(page.t("analytics.events_per_s"), f"{events / seconds:.1f}", help=page.t("analytics.rate_help"))
    cols[1].metric(page.t("analytics.dead_per_min"), f"{dead / seconds * 60:.1f}")
    share = dead / (events + dead) if events + dead else 0.0
    cols[2].metric(page.t("analytics.dead_share"), f"{share:.2%}")
    if not rows:
        st.info(page.t("analytics.no_intake"), icon=":material/hourglass_empty:")
        return
    frame = pd.DataFrame(rows)
    frame["what"] = frame["what"].map(lambda w: page.t(f"analytics.series_{w}"))
    frame["bucket"] = [local_time(_utc(b), page.tz, "%H:%M") for b in frame["bucket"]]
    wide = frame.pivot_table(index="bucket", columns="what", values="n", aggfunc="sum", fill_value=0)
    wide.index.name = page.t("analytics.bucket_minute")
    st.bar_chart(wide / 60.0, stack=False, height=220, y_label=page.t("analytics.per_second"))
    updated_caption(page)


def _utc(value: Any) -> Any:
    return value if getattr(value, "tzinfo", None) else pd.Timestamp(value, tz="UTC").to_pydatetime()


def main() -> None:
    page = page_context()
    st.title(page.t("analytics.title"))
    live_caption(page)
    layer: data.ZoneLayer | None = None
    try:
        layer = data.zone_layer(str(page.settings.rules.pack))
    except Exception as exc:  # district names fall back to ids
        logger.error("dashboard cannot load layer pack=%s error=%s", page.settings.rules.pack, exc)
    with st.sidebar:
        st.header(page.t("filters.header"))
    period = period_select(page, "analytics_period", ANALYTICS_PERIODS, "7d")
    window = PERIODS[period] or timedelta(days=30)
    until = floor_time(now(), 60) + timedelta(minutes=1)
    since = until - window
    bucket = "hour" if window <= timedelta(days=2) else "day"
    st.caption(page.t("analytics.period_caption", since=local_time(since, page.tz, "%Y-%m-%d %H:%M"),
                      until=local_time(until, page.tz, "%Y-%m-%d %H:%M")))  # fmt: skip
    st.fragment(lambda: intake(page), run_every=page.settings.dashboard.refresh_s)()
    over_time(page, since, until, bucket, layer)
    response(page, since, until)
    top_locations(page, since, until, layer)


main()
