"""System: store and worker health, consumer lag (only where the broker reports it correctly), dead
letters with their reasons, alert delivery as far as the store knows it, and silences.
"""

from __future__ import annotations

import json
import logging
import uuid
from datetime import timedelta
from typing import Any, cast

import pandas as pd
import streamlit as st
from kafka.errors import KafkaError

from dashboard import actions, data, lag
from dashboard.ui import (
    Page,
    duration,
    guarded,
    label,
    lang_key,
    live_caption,
    local_time,
    now,
    page_context,
    since,
    updated_caption,
)
from rules.silences import Silence

logger = logging.getLogger(__name__)

WORKER_QUIET_S = 120.0  # no event stored for this long: the worker (or its sources) may be down


def health(page: Page) -> None:
    at = now()
    ping = data.ping_ms(page.address)
    cols = st.columns(4)
    if ping is None:
        cols[0].metric(page.t("system.store"), page.t("system.down"), border=True)
        st.error(page.t("state.unreachable", uri=page.address.uri), icon=":material/cloud_off:")
        return
    h = guarded(page, lambda: data.health(page.address))
    if h is None:
        return
    cols[0].metric(page.t("system.store"), page.t("system.up"), page.t("system.ping", ms=f"{ping:.1f}"),
                   delta_color="off", delta_arrow="off", border=True)  # fmt: skip
    quiet = since(h["last_event_stored"], at)
    worker_ok = quiet is not None and quiet <= WORKER_QUIET_S
    cols[1].metric(page.t("system.worker"), page.t("system.up" if worker_ok else "system.quiet"),
                   page.t("system.last_event", ago=duration(quiet, page.lang)), delta_color="off", delta_arrow="off",
                   border=True, help=page.t("system.worker_help"))  # fmt: skip
    cols[2].metric(page.t("system.schema"), str(h["schema_version"]), border=True)
    cols[3].metric(page.t("system.last_incident"), duration(since(h["last_incident_update"], at), page.lang),
                   help=page.t("system.ago_help"), border=True)  # fmt: skip
    if not worker_ok:
        st.warning(page.t("system.worker_quiet", ago=duration(quiet, page.lang)), icon=":material/pause_circle:")
    st.caption(
        page.t(
            "system.times",
            event=local_time(h["last_event_time"], page.tz),
            action=local_time(h["last_action"], page.tz),
            dead=local_time(h["last_dead_letter"], page.tz),
        )
    )
    st.subheader(page.t("system.alerts"))
    cols = st.columns(3)
    cols[0].metric(page.t("system.updates_published"), f"{int(h['updates_published']):,}")
    cols[1].metric(page.t("system.updates_pending"), f"{int(h['updates_pending']):,}")
    cols[2].metric(page.t("system.oldest_pending"), duration(since(h["oldest_pending"], at), page.lang))
    st.caption(page.t("system.alerts_note"))
    updated_caption(page)


def consumer_lag(page: Page) -> None:
    st.subheader(page.t("system.lag"))
    if not page.settings.dashboard.consumer_lag:
        st.caption(page.t("system.lag_off"))
        return
    try:
        rows = lag.consumer_lag(page.settings)
    except KafkaError as exc:
        st.error(page.t("system.lag_error", broker=page.settings.kafka.bootstrap, error=type(exc).__name__))
        return
    if not rows:
        st.info(page.t("system.lag_none"))
        return
    frame = pd.DataFrame(rows).rename(columns=lambda c: page.t(f"system.lag_{c}"))
    st.dataframe(frame, hide_index=True, width="stretch")


def dead_letters(page: Page) -> None:
    st.subheader(page.t("system.dead_letters"))
    loaded = guarded(page, lambda: (data.dead_letter_kinds(page.address), data.dead_letters(page.address)))
    if loaded is None:
        return
    kinds, rows = loaded
    if not rows:
        st.success(page.t("system.no_dead_letters"), icon=":material/check_circle:")
        return
    st.markdown(" · ".join(f"**{label('dead_kind', k['kind'], page.lang)}** {int(k['n']):,}" for k in kinds))
    frame = pd.DataFrame(
        {
            page.t("col.time"): [local_time(r["failed_at"], page.tz) for r in rows],
            page.t("col.kind"): [label("dead_kind", r["kind"], page.lang) for r in rows],
            page.t("col.reason"): [r["reason"] for r in rows],
            page.t("col.source"): [r["source"] for r in rows],
        }
    )
    st.dataframe(frame, hide_index=True, width="stretch")
    st.caption(page.t("system.dead_help"))


def _silence_rows(page: Page, rows: list[dict[str, Any]]) -> pd.DataFrame:
    at = now()
    out = []
    for r in rows:
        payload = json.loads(r["payload"]) if isinstance(r["payload"], str) else dict(r["payload"])
        active = not r["expired"] and r["ends_at"] > at
        out.append(
            {
                page.t("silence.id"): r["silence_id"],
                page.t("silence.state"): page.t("silence.active" if active else "silence.ended"),
                page.t("silence.from"): local_time(r["starts_at"], page.tz),
                page.t("silence.until"): local_time(r["ends_at"], page.tz),
                page.t("silence.zones"): ", ".join(payload.get("zones") or []) or page.t("silence.everywhere"),
                page.t("silence.rules"): ", ".join(payload.get("rules") or ["*"]),
                page.t("silence.by"): r["created_by"],
                page.t("silence.reason"): r["reason"],
                page.t("silence.covered"): int(r["incidents"] or 0),
            }
        )
    return pd.DataFrame(out)


NOTICE_KEY = "silence_notice"


def _expire(page: Page) -> None:
    """Submit callback of the expire form."""
    chosen = st.session_state.get("silence_pick")
    rows = data.silences(page.address)
    row = next((r for r in rows if r["silence_id"] == chosen), None)
    if row is None or not page.user.can_act:
        return
    item = Silence.model_validate_json(row["payload"]).model_copy(update={"expired": True})
    _send(page, item, page.t("silence.expired_ok", id=chosen))


def _create(page: Page) -> None:
    """Submit callback of the new-silence form."""
    if not page.user.can_act:
        return
    reason = str(st.session_state.get("silence_reason") or "").strip()
    if not reason:
        st.session_state[NOTICE_KEY] = ("error", page.t("silence.need_reason"))
        return
    patterns = [p.strip() for p in str(st.session_state.get("silence_rules") or "").split(",") if p.strip()]
    at = now()
    item = Silence(
        silence_id=f"dash-{uuid.uuid4().hex[:12]}", starts_at=at,
        ends_at=at + timedelta(hours=float(st.session_state.get("silence_hours") or 2.0)),
        zones=list(st.session_state.get(lang_key(page, "silence_zones")) or []), rules=patterns or ["*"],
        created_by=page.user.name, reason=reason,
    )  # fmt: skip
    _send(page, item, page.t("silence.created_ok", id=item.silence_id))


def _send(page: Page, item: Silence, ok: str) -> None:
    error = actions.send_silence(page.settings, item, page.lang)
    if error:
        st.session_state[NOTICE_KEY] = ("error", error)
        return
    logger.info("dashboard silence user=%s silence_id=%s expired=%s", page.user.name, item.silence_id, item.expired)
    cast(Any, data.silences).clear()
    st.session_state[NOTICE_KEY] = ("success", ok + " " + page.t("silence.store_lag"))


def silences(page: Page, layer: data.ZoneLayer | None) -> None:
    st.subheader(page.t("silence.header"))
    rows = guarded(page, lambda: data.silences(page.address))
    if rows is None:
        return
    notice = st.session_state.pop(NOTICE_KEY, None)
    if notice:
        (st.success if notice[0] == "success" else st.error)(notice[1])
    if rows:
        st.dataframe(_silence_rows(page, rows), hide_index=True, width="stretch")
    else:
        st.caption(page.t("silence.none"))
    if not page.user.can_act:
        st.caption(page.t("silence.viewer_note"))
        return
    at = now()
    active = [r["silence_id"] for r in rows if not r["expired"] and r["ends_at"] > at]
    if active:
        with st.form("silence_expire"):
            st.selectbox(page.t("silence.expire_which"), active, key="silence_pick")
            st.form_submit_button(page.t("silence.expire"), on_click=_expire, args=(page,))
    with st.form("silence_create", clear_on_submit=True):
        st.markdown(f"**{page.t('silence.create')}**")
        st.multiselect(
            page.t("silence.zones"), layer.ids if layer else [], key=lang_key(page, "silence_zones"),
            format_func=lambda z: layer.zone_name(z, page.lang) if layer else z,
            placeholder=page.t("silence.everywhere"),
        )  # fmt: skip
        st.text_input(page.t("silence.rules"), value="*", key="silence_rules", help=page.t("silence.rules_help"))
        st.number_input(
            page.t("silence.hours"), min_value=0.25, max_value=24.0 * 14, value=2.0, step=0.25, key="silence_hours"
        )
        st.text_input(page.t("silence.reason"), key="silence_reason", max_chars=2000)
        st.form_submit_button(page.t("silence.submit"), type="primary", on_click=_create, args=(page,))


def main() -> None:
    page = page_context()
    st.title(page.t("system.title"))
    live_caption(page)
    layer: data.ZoneLayer | None = None
    try:
        layer = data.zone_layer(str(page.settings.rules.pack))
    except Exception as exc:  # zone names fall back to ids
        logger.error("dashboard cannot load layer pack=%s error=%s", page.settings.rules.pack, exc)
    st.fragment(lambda: health(page), run_every=page.settings.dashboard.refresh_s)()
    consumer_lag(page)
    st.fragment(lambda: dead_letters(page), run_every=page.settings.dashboard.refresh_s)()
    silences(page, layer)


main()
