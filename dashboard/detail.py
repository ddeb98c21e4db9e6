"""One incident in full: facts, the rule and version that fired with its thresholds, a mini map, the
evidence events, the whole history, and (for operators) the actions it allows now.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any, cast

import orjson
import pandas as pd
import streamlit as st

from dashboard import actions, data, maps
from dashboard.ui import (
    OP_SYMBOLS,
    Page,
    duration,
    guarded,
    label,
    lang_key,
    local_time,
    now,
    severity_label,
    since,
    status_label,
)
from rules.crs import wgs84_to_bd09, wgs84_to_gcj02
from rules.lifecycle import ActionName, legal_actions
from rules.pack import LoadedPack
from sinks.actions import new_action

logger = logging.getLogger(__name__)

MINI_MAP_HEIGHT_PX = 320
_RULE_META = {"id", "version", "title", "description", "severity", "category", "kind", "tests"}


def _value(value: Any) -> str:
    if isinstance(value, timedelta):
        return str(value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def rule_parameters(rule: Any) -> list[tuple[str, str]]:
    """The rule's thresholds and settings as (name, value) rows, nested fields dotted."""
    rows: list[tuple[str, str]] = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            for i, v in enumerate(value):
                walk(f"{prefix}[{i}]", v)
        elif value not in (None, [], {}):
            rows.append((prefix, _value(value) if not isinstance(value, list) else ", ".join(map(_value, value))))

    walk("", rule.model_dump(exclude=_RULE_META, exclude_none=True))
    return rows


STATUS_BADGE = {"open": "red", "acknowledged": "orange", "in_progress": "blue", "cleared": "violet",
                "resolved": "green", "closed": "gray"}  # fmt: skip
SEVERITY_BADGE = {"critical": "red", "high": "orange", "medium": "yellow", "low": "blue", "info": "gray"}


def table_height(rows: int) -> int:
    """Pixels for a st.dataframe that shows ``rows`` rows without a scroll bar."""
    return 35 * (rows + 1) + 3


def _badges(page: Page, inc: dict[str, Any]) -> None:
    """Status and severity, coloured, under the title (short labels fit; long ones would not in a metric)."""
    status, severity = str(inc["status"]), str(inc["severity"])
    with st.container(key="incident_badges"):
        status_text = page.t("detail.status_badge", status=status_label(status, page.lang))
        severity_text = page.t("detail.severity_badge", severity=severity_label(severity, page.lang))
        st.markdown(
            f":{STATUS_BADGE.get(status, 'gray')}-badge[{status_text}] "
            f":{SEVERITY_BADGE.get(severity, 'gray')}-badge[{severity_text}]"
        )


def display_position(lon: float, lat: float, crs: str) -> str:
    """A WGS-84 position as the operators' map apps expect it ("lat, lon", 6 decimals)."""
    if crs == "GCJ02":
        lon, lat = wgs84_to_gcj02(lon, lat)
    elif crs == "BD09":
        lon, lat = wgs84_to_bd09(lon, lat)
    return f"{float(lat):.6f}, {float(lon):.6f}"


def _facts(page: Page, inc: dict[str, Any], layer: data.ZoneLayer | None) -> None:
    at = now()
    district = layer.zone_name(inc["zone_id"], page.lang, inc["zone_name"]) if layer else inc["zone_name"] or "—"
    op = OP_SYMBOLS.get(str(inc["op"]), str(inc["op"]))
    opened, acked = inc.get("opened_at"), inc.get("acknowledged_at")
    cols = st.columns([1.7, 1, 1, 1])  # "137.6 > 30" needs the room
    cols[0].metric(page.t("detail.value"), f"{float(inc['value']):g} {op} {float(inc['threshold']):g}")
    cols[1].metric(page.t("detail.evidence_count"), f"{int(inc['evidence_count']):,}")
    cols[2].metric(page.t("col.age"), duration(since(opened, at), page.lang))
    cols[3].metric(page.t("col.since_ack"), duration(since(acked, at), page.lang))
    ago = page.t("detail.ago", d=duration(since(opened, at), page.lang))
    facts = {
        page.t("detail.id"): inc["id"],
        page.t("detail.category"): label("category", inc["category"], page.lang),
        page.t("detail.district"): district,
        page.t("detail.subject"): inc["subject"],
        page.t("detail.rule"): f"{inc['rule_id']} v{inc['rule_version']} ({label('kind', inc['kind'], page.lang)})",
        page.t("detail.pack"): f"{inc['pack']} {inc['pack_version']}",
        page.t("detail.first_event"): local_time(inc["first_event_at"], page.tz),
        page.t("detail.last_event"): local_time(inc["last_event_at"], page.tz),
        page.t("detail.opened"): f"{local_time(opened, page.tz)} ({ago})",
        page.t("detail.acknowledged"): local_time(inc.get("acknowledged_at"), page.tz),
        page.t("detail.closed"): local_time(inc.get("closed_at"), page.tz),
        page.t("detail.assignee"): inc.get("assignee") or "—",
        page.t("detail.silenced"): page.t("common.yes") if inc.get("silenced") else page.t("common.no"),
        page.t("detail.certainty"): label("certainty", inc.get("certainty"), page.lang),
        page.t("detail.position", crs=page.settings.dashboard.display_crs): display_position(
            float(inc["lon"]), float(inc["lat"]), page.settings.dashboard.display_crs
        ),
    }
    firings = cooldown_firings(inc.get("details"))
    if firings is not None:
        facts[page.t("detail.firings")] = f"{firings:,}"
    frame = pd.DataFrame({page.t("detail.field"): list(facts), page.t("detail.field_value"): list(facts.values())})
    st.dataframe(frame, hide_index=True, width="stretch", height=table_height(len(frame)))


def cooldown_firings(details: Any) -> int | None:
    """How many firings a rule's cooldown counted on the incident (``details.cooldown``), if any."""
    if isinstance(details, str | bytes):
        try:
            details = orjson.loads(details)
        except orjson.JSONDecodeError:
            return None
    found = details.get("cooldown") if isinstance(details, dict) else None
    firings = found.get("firings") if isinstance(found, dict) else None
    return firings if isinstance(firings, int) and firings > 1 else None


def _rule(page: Page, inc: dict[str, Any], pack: LoadedPack | None) -> None:
    st.subheader(page.t("detail.rule_header"))
    rule = next((r for r in pack.spec.rules if r.id == inc["rule_id"]), None) if pack else None
    if rule is None:
        st.warning(page.t("detail.rule_missing", rule=inc["rule_id"], pack=page.settings.rules.pack))
        return
    st.markdown(f"**{rule.title}** — `{rule.id}` v{rule.version}")
    if rule.description:
        st.caption(rule.description)
    if rule.version != int(inc["rule_version"]) or (pack is not None and pack.version != inc["pack_version"]):
        st.warning(
            page.t(
                "detail.rule_version_differs",
                fired=f"v{inc['rule_version']} ({inc['pack_version']})",
                loaded=f"v{rule.version} ({pack.version if pack else '?'})",
            ),
            icon=":material/history:",
        )
    params = rule_parameters(rule)
    frame = pd.DataFrame(params, columns=[page.t("detail.parameter"), page.t("detail.field_value")])
    st.dataframe(frame, hide_index=True, width="stretch", height=table_height(len(frame)))


def _mini_map(page: Page, inc: dict[str, Any], evidence: list[dict[str, Any]], layer: data.ZoneLayer | None) -> None:
    layers = maps.district_layers(layer, {}, page.lang, names=False) if layer else []
    ev = [
        {
            "position": [float(e["lon"]), float(e["lat"])],
            "tip_title": str(e["id"]),
            "tip_line1": " · ".join(
                str(x) for x in (e["subject"], e["topic_label"] or e["kind"], e["value"]) if x not in (None, "")
            ),
            "tip_line2": local_time(e["ts"], page.tz),
        }
        for e in evidence
    ]
    layers.append(maps.points_layer("evidence", ev, maps.LIVE_RGB, 5))
    layers.append(maps.incident_layer([inc], layer, page.lang, page.tz))
    view = {"longitude": float(inc["lon"]), "latitude": float(inc["lat"]), "zoom": 11.0}
    st.pydeck_chart(maps.deck(layers, view), height=MINI_MAP_HEIGHT_PX, key="mini_map")
    st.caption(page.t("detail.mini_map_legend"))


def _evidence(page: Page, evidence: list[dict[str, Any]], total: int) -> None:
    st.subheader(page.t("detail.evidence_header"))
    if not evidence:
        st.info(page.t("detail.no_evidence"), icon=":material/inventory_2:")
        return
    frame = pd.DataFrame(
        {
            page.t("col.time"): [local_time(e["ts"], page.tz) for e in evidence],
            page.t("col.kind"): [label("event_kind", e["kind"], page.lang) for e in evidence],
            page.t("col.subject"): [e["subject"] for e in evidence],
            page.t("col.label"): [e["topic_label"] or "—" for e in evidence],
            page.t("col.value"): [e["value"] for e in evidence],
            page.t("col.event_id"): [e["id"] for e in evidence],
        }
    )
    st.dataframe(frame, hide_index=True, width="stretch")
    if total > len(evidence):
        st.caption(page.t("detail.evidence_more", shown=len(evidence), total=total))


def _history(page: Page, history: list[dict[str, Any]]) -> None:
    st.subheader(page.t("detail.history_header"))
    history = history[::-1]  # newest first: the latest action is what the operator looks for
    frame = pd.DataFrame(
        {
            page.t("col.time"): [local_time(h["happened_at"], page.tz) for h in history],
            page.t("col.change"): [label("change", h["kind"], page.lang) for h in history],
            page.t("col.status"): [
                status_label(h["to_status"], page.lang)
                if h["from_status"] in (None, h["to_status"])
                else f"{status_label(h['from_status'], page.lang)} → {status_label(h['to_status'], page.lang)}"
                for h in history
            ],
            page.t("col.actor"): [h["actor"] for h in history],
            page.t("col.note"): [h["note"] for h in history],
        }
    )
    st.dataframe(frame, hide_index=True, width="stretch")


FORM_ERROR_KEY = "action_form_error"


def _submit(page: Page, incident_id: str) -> None:
    """The action form's submit callback: validate and send; problems are shown on the next run."""
    if not page.user.can_act:  # the form is not drawn for them; never trust that alone
        st.session_state[FORM_ERROR_KEY] = page.t("actions.viewer_note")
        return
    choice = st.session_state.get(lang_key(page, f"action_choice_{incident_id}"))
    assignee = str(st.session_state.get(f"action_assignee_{incident_id}") or "").strip()
    note = str(st.session_state.get(f"action_note_{incident_id}") or "").strip()
    if choice is None:
        return
    if choice == "assign" and not assignee:
        st.session_state[FORM_ERROR_KEY] = page.t("actions.need_assignee")
        return
    who = assignee if choice == "assign" else None
    action = new_action(incident_id, cast(ActionName, choice), page.user.name, note=note, assignee=who)
    logger.info("dashboard action user=%s action=%s incident=%s", page.user.name, choice, incident_id)
    error = actions.send(page.settings, action, page.lang)
    if error:
        st.session_state[FORM_ERROR_KEY] = error


def _action_form(page: Page, inc: dict[str, Any]) -> None:
    st.subheader(page.t("actions.header"))
    actions.show_outcome()
    key = str(inc["id"])
    if actions.pending(key) is not None:
        st.fragment(lambda: actions.poll(page.settings, page.lang), run_every=actions.POLL_S)()
        return
    if not page.user.can_act:
        st.caption(page.t("actions.viewer_note"))
        return
    with st.form(f"action_form_{key}", clear_on_submit=True):
        st.radio(
            page.t("actions.action"),
            legal_actions(inc["status"]),
            horizontal=True,
            key=lang_key(page, f"action_choice_{key}"),
            format_func=lambda a: page.t(f"action.{a}"),
        )
        st.text_input(page.t("actions.assignee"), key=f"action_assignee_{key}", help=page.t("actions.assignee_help"))
        st.text_area(page.t("actions.note"), key=f"action_note_{key}", max_chars=4000, height=80)
        st.form_submit_button(page.t("actions.submit"), type="primary", on_click=_submit, args=(page, key))
    error = st.session_state.pop(FORM_ERROR_KEY, None)
    if error:
        st.error(error, icon=":material/error:")
    st.caption(page.t("actions.as_user", name=page.user.name))


def render(page: Page, incident_id: str, layer: data.ZoneLayer | None, pack: LoadedPack | None) -> None:
    """The incident detail, or a clear note when the id is unknown."""
    loaded = guarded(
        page,
        lambda: (
            data.incident(page.address, incident_id),
            data.history(page.address, incident_id),
            data.evidence_events(page.address, incident_id),
        ),
    )
    if loaded is None:
        return
    inc, history, evidence = loaded
    if inc is None:
        st.warning(page.t("detail.unknown", id=incident_id), icon=":material/search_off:")
        return
    st.header(f"{inc['title']}")
    _badges(page, inc)
    left, right = st.columns([3, 2])
    with left:
        _facts(page, inc, layer)
    with right:
        _mini_map(page, inc, evidence, layer)
    _action_form(page, inc)
    _rule(page, inc, pack)
    _evidence(page, evidence, int(inc["evidence_count"]))
    _history(page, history)
