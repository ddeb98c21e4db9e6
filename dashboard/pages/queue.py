"""Incident queue: filters, sorting, SLA timers; click a row (or follow ``?incident=<id>``) for the detail.

The table refreshes in a fragment; the filters (sidebar) and the detail with its action form sit
outside it, so a refresh never resets them or a half-written note.
"""

from __future__ import annotations

import contextlib
import logging
from datetime import datetime
from typing import Any

import pandas as pd
import streamlit as st

from dashboard import data, detail
from dashboard.ui import (
    PERIODS,
    SEVERITY_RGB,
    STATUS_RGB,
    Page,
    duration,
    guarded,
    label,
    lang_key,
    live_caption,
    local_time,
    now,
    page_context,
    period_select,
    severity_label,
    since,
    status_label,
    updated_caption,
)
from rules.lifecycle import ACTIVE, STATUSES
from rules.pack import LoadedPack
from sinks.errors import QueryError, StoreUnavailableError
from sinks.read import QUEUE_SORTS, SEVERITIES, IncidentFilter

logger = logging.getLogger(__name__)

TABLE_KEY = "queue_table"
ROWS_KEY = "queue_row_ids"
OPENED_KEY = "queue_opened"
TITLE_WIDTH_PX = 260
QUEUE_PERIODS = ("1h", "24h", "7d", "30d", "all")
QUEUE_COLUMNS = (
    *("severity", "title", "status", "district", "opened", "age"),
    *("since_ack", "sla", "assignee", "subject", "rule"),
)


def _on_row() -> None:
    """A row was clicked: open that incident (by id, from the rows shown when it was clicked)."""
    state: Any = st.session_state.get(TABLE_KEY)
    rows = list((state or {}).get("selection", {}).get("rows", [])) if state else []
    ids: list[str] = st.session_state.get(ROWS_KEY, [])
    if rows and rows[0] < len(ids):
        st.query_params["incident"] = ids[rows[0]]
        st.session_state[OPENED_KEY] = True


def _close_detail() -> None:
    st.query_params.pop("incident", None)


def filters(page: Page, layer: data.ZoneLayer | None) -> tuple[IncidentFilter, str]:
    """Sidebar: status, severity, category, district, pack, period and sort."""
    categories: set[str] = set(layer.categories) if layer else set()
    packs: list[str] = []
    with contextlib.suppress(StoreUnavailableError, QueryError):  # the table says what is wrong
        categories |= set(data.categories(page.address))
        packs = data.distinct(page.address, "pack")
    with st.sidebar:
        st.header(page.t("filters.header"))
        statuses = st.multiselect(
            page.t("filters.status"),
            STATUSES,
            default=[s for s in STATUSES if s in ACTIVE],
            key=lang_key(page, "queue_status"),
            format_func=lambda s: status_label(s, page.lang),
            placeholder=page.t("filters.placeholder"),
        )
        severities = st.multiselect(
            page.t("filters.severity"), SEVERITIES, key=lang_key(page, "queue_severity"),
            format_func=lambda s: severity_label(s, page.lang), placeholder=page.t("filters.placeholder"),
        )  # fmt: skip
        cats = st.multiselect(
            page.t("filters.category"), sorted(categories), key=lang_key(page, "queue_category"),
            format_func=lambda c: label("category", c, page.lang), placeholder=page.t("filters.placeholder"),
        )  # fmt: skip
        zones = st.multiselect(
            page.t("filters.district"), layer.ids if layer else [], key=lang_key(page, "queue_district"),
            format_func=lambda z: layer.zone_name(z, page.lang) if layer else z,
            placeholder=page.t("filters.placeholder"),
        )  # fmt: skip
        chosen_packs = st.multiselect(
            page.t("filters.pack"), packs, key="queue_pack", placeholder=page.t("filters.placeholder")
        )
        period = period_select(page, "queue_period", QUEUE_PERIODS, "all")
        sort = st.selectbox(
            page.t("filters.sort"),
            list(QUEUE_SORTS),
            key=lang_key(page, "queue_sort"),
            format_func=lambda s: page.t(f"sort.{s}"),
        )
    window = PERIODS[period]
    flt = IncidentFilter(
        statuses=tuple(statuses), severities=tuple(severities), categories=tuple(cats), zones=tuple(zones),
        packs=tuple(chosen_packs), since=None if window is None else _minute(now() - window),
    )  # fmt: skip
    return flt, str(sort)


def _minute(value: datetime) -> datetime:
    return value.replace(second=0, microsecond=0)


def sla_text(page: Page, row: dict[str, Any], at: datetime) -> str:
    """Where the incident stands against its acknowledge target."""
    target_min = page.settings.dashboard.sla_ack_minutes.get(str(row["severity"]))
    opened, acked = row.get("opened_at"), row.get("acknowledged_at")
    if acked is not None and opened is not None:
        return page.t("sla.acked_in", d=duration((acked - opened).total_seconds(), page.lang))
    if row["status"] not in ACTIVE or target_min is None or opened is None:
        return "—"
    left = target_min * 60 - (since(opened, at) or 0)
    if left < 0:
        return page.t("sla.overdue", d=duration(-left, page.lang))
    return page.t("sla.due_in", d=duration(left, page.lang))


def queue_frame(page: Page, rows: list[dict[str, Any]], layer: data.ZoneLayer | None, at: datetime) -> pd.DataFrame:
    """The queue's rows with translated headers and values for people."""
    records = [
        {
            page.t("col.severity"): severity_label(str(r["severity"]), page.lang),
            page.t("col.title"): r["title"],
            page.t("col.status"): status_label(str(r["status"]), page.lang),
            page.t("col.district"): layer.zone_name(r["zone_id"], page.lang, r["zone_name"])
            if layer
            else r["zone_name"],
            page.t("col.opened"): local_time(r["opened_at"], page.tz, "%m-%d %H:%M"),
            page.t("col.age"): duration(since(r["opened_at"], at), page.lang),
            page.t("col.since_ack"): duration(since(r["acknowledged_at"], at), page.lang),
            page.t("col.sla"): sla_text(page, r, at),
            page.t("col.assignee"): r["assignee"] or "—",
            page.t("col.subject"): r["subject"],
            page.t("col.rule"): f"{r['rule_id']}@{r['rule_version']}",
        }
        for r in rows
    ]
    return pd.DataFrame.from_records(records, columns=[page.t(f"col.{c}") for c in QUEUE_COLUMNS])


def render_table(page: Page, layer: data.ZoneLayer | None, flt: IncidentFilter, sort: str) -> None:
    at = now()
    loaded = guarded(page, lambda: (data.count(page.address, flt), data.queue(page.address, flt, sort)))
    if loaded is None:
        return
    total, rows = loaded
    if total == 0:
        anything = guarded(page, lambda: data.counts(page.address)["incidents"]) or 0
        st.info(page.t("state.no_match" if anything else "state.no_incidents"), icon=":material/filter_alt_off:")
        return
    st.caption(page.t("queue.showing", shown=f"{len(rows):,}", total=f"{total:,}"))
    st.session_state[ROWS_KEY] = [str(r["id"]) for r in rows]
    frame = queue_frame(page, rows, layer, at)
    styles = {severity_label(s, page.lang): f"color: rgb{SEVERITY_RGB[s]}; font-weight: 600" for s in SEVERITIES}
    styles |= {status_label(s, page.lang): f"color: rgb{rgb}" for s, rgb in STATUS_RGB.items()}
    overdue = page.t("sla.overdue", d="").strip()
    styled = frame.style.map(lambda v: styles.get(v, ""), subset=[page.t("col.severity"), page.t("col.status")]).map(
        lambda v: "color: rgb(183, 28, 28); font-weight: 600" if str(v).startswith(overdue) else "",
        subset=[page.t("col.sla")],
    )
    st.dataframe(
        styled, hide_index=True, width="stretch", key=TABLE_KEY, on_select=_on_row, selection_mode="single-row",
        column_config={page.t("col.title"): st.column_config.TextColumn(width=TITLE_WIDTH_PX)},
    )  # fmt: skip
    st.caption(page.t("queue.click_hint"))
    updated_caption(page)
    if st.session_state.pop(OPENED_KEY, False):
        st.rerun()  # the detail sits outside this fragment


def main() -> None:
    page = page_context()
    st.title(page.t("queue.title"))
    live_caption(page)
    layer: data.ZoneLayer | None = None
    pack: LoadedPack | None = None
    try:
        layer = data.zone_layer(str(page.settings.rules.pack))
        pack = data.current_pack(page.settings.rules.pack)
    except Exception as exc:  # the queue works without the pack; the detail says what is missing
        logger.error("dashboard cannot load pack=%s error=%s", page.settings.rules.pack, exc)
        st.error(page.t("state.no_layer", pack=page.settings.rules.pack, error=exc))
    flt, sort = filters(page, layer)
    st.fragment(lambda: render_table(page, layer, flt, sort), run_every=page.settings.dashboard.refresh_s)()
    opened = st.query_params.get("incident")
    if opened:
        st.divider()
        st.button(page.t("detail.close"), icon=":material/close:", key="detail_close", on_click=_close_detail)
        detail.render(page, str(opened), layer, pack)


main()
