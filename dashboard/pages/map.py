"""Live map: districts shaded by open incidents, incidents by severity, sensor health, active tracks.

The filters sit in the sidebar, outside the live fragment, so a refresh never resets them. Up to
``data.MAP_POINT_LIMIT`` matching incidents are drawn one by one; beyond, as H3 hexagons. Clicking
an incident opens its detail below the map (``?incident=<id>``), with a link to it in the queue.

The detail opens on this page, through a full rerun of it, never by ``st.switch_page`` from the
live fragment: a refresh timer of that fragment firing while the server switches pages reaches
the server as a rerun of the map page's fragment after the queue page has been drawn; Streamlit
then treats it as a change back to the map page and clears the screen, leaving the operator on a
blank page (seen in headless Chromium under load). Navigation the browser starts (the sidebar, a
page link) stops the page's timers first.
"""

from __future__ import annotations

import contextlib
import html
import logging
from datetime import timedelta
from typing import Any

import streamlit as st

from dashboard import data, detail, maps
from dashboard.ui import (
    Page,
    floor_time,
    guarded,
    label,
    lang_key,
    live_caption,
    now,
    page_context,
    severity_chips,
    severity_label,
    since,
    updated_caption,
)
from rules.lifecycle import ACTIVE
from rules.pack import LoadedPack
from sinks.errors import QueryError, StoreUnavailableError
from sinks.read import SEVERITIES, IncidentFilter

logger = logging.getLogger(__name__)

MAP_KEY = "live_map"
OPEN_KEY = "map_open_incident"
# No bare strings at module level in page scripts: Streamlit's "magic" would print them on the page.
SENSOR_LOOKBACK = timedelta(hours=24)  # sensors not heard from in this long drop off the map
TRACK_TAIL = timedelta(minutes=10)  # how much of an active track's path is drawn


def _on_select() -> None:
    """A click on the map: open that incident below the map (the fragment then reruns the page)."""
    state: Any = st.session_state.get(MAP_KEY)
    objects = (state or {}).get("selection", {}).get("objects", {}) if state else {}
    picked = objects.get("incidents") or []
    if picked:
        st.query_params["incident"] = str(picked[0]["id"])
        st.session_state[OPEN_KEY] = str(picked[0]["id"])


def _close_detail() -> None:
    st.query_params.pop("incident", None)


def filters(page: Page, layer: data.ZoneLayer | None) -> tuple[IncidentFilter, bool, bool]:
    """Sidebar: severity, category, district; and which extra layers to draw."""
    known = set(layer.categories) if layer else set()
    with contextlib.suppress(StoreUnavailableError, QueryError):  # the live part says what is wrong
        known |= set(data.categories(page.address))
    with st.sidebar:
        st.header(page.t("filters.header"))
        severities = st.multiselect(
            page.t("filters.severity"),
            SEVERITIES,
            key=lang_key(page, "map_severity"),
            format_func=lambda s: severity_label(s, page.lang),
            placeholder=page.t("filters.placeholder"),
        )
        categories = st.multiselect(
            page.t("filters.category"),
            sorted(known),
            key=lang_key(page, "map_category"),
            format_func=lambda c: label("category", c, page.lang),
            placeholder=page.t("filters.placeholder"),
        )
        zones = st.multiselect(
            page.t("filters.district"),
            layer.ids if layer else [],
            key=lang_key(page, "map_district"),
            format_func=lambda z: layer.zone_name(z, page.lang) if layer else z,
            placeholder=page.t("filters.placeholder"),
        )
        show_sensors = st.checkbox(page.t("map.show_sensors"), value=True, key="map_sensors")
        show_tracks = st.checkbox(page.t("map.show_tracks"), value=True, key="map_tracks")
        st.caption(page.t("map.filters_note"))
    flt = IncidentFilter(
        statuses=tuple(sorted(ACTIVE)), severities=tuple(severities), categories=tuple(categories), zones=tuple(zones)
    )
    return flt, show_sensors, show_tracks


def legend(page: Page, aggregated: bool) -> None:
    points = page.t("map.legend_cells" if aggregated else "map.legend_points", limit=f"{data.MAP_POINT_LIMIT:,}")
    st.markdown(
        f"<small>{html.escape(page.t('map.legend_zones'))} &nbsp;|&nbsp; {html.escape(points)}"
        f"{page.t('map.legend_sep')}{severity_chips(page.lang)} &nbsp;|&nbsp; "
        f'<span style="color:rgb{maps.SENSOR_OK_RGBA[:3]}">&#9679;</span> {html.escape(page.t("map.legend_sensor"))} '
        f'<span style="color:rgb{maps.SENSOR_SILENT_RGBA[:3]}">&#11044;</span> '
        f"{html.escape(page.t('map.legend_silent'))} &nbsp;|&nbsp; "
        f'<span style="color:rgb{maps.TRACK_RGB["drone"]}">&#9473;</span> {html.escape(page.t("map.legend_track"))}'
        "</small>",
        unsafe_allow_html=True,
    )


def render_live(
    page: Page, layer: data.ZoneLayer | None, flt: IncidentFilter, show_sensors: bool, show_tracks: bool
) -> None:
    """KPIs and the map, from one consistent set of queries."""
    at = now()
    sensor_since = floor_time(at - SENSOR_LOOKBACK, 60)
    track_active = floor_time(at - timedelta(seconds=page.settings.dashboard.track_active_s), 1)

    def load() -> dict[str, Any]:
        matching = data.count(page.address, flt)
        aggregated = matching > data.MAP_POINT_LIMIT
        return {
            "counts": data.counts(page.address),
            "matching": matching,
            "aggregated": aggregated,
            "by_zone": data.zone_counts(page.address, flt),
            "points": [] if aggregated else data.points(page.address, flt),
            "cells": data.grid(page.address, flt, maps.GRID_STEP_DEG) if aggregated else [],
            "sensors": data.sensors(page.address, sensor_since) if show_sensors else [],
            "tracks": data.tracks(page.address, track_active - TRACK_TAIL, track_active) if show_tracks else [],
            "blind": data.blind_zones(page.address),
        }

    loaded = guarded(page, load)
    if loaded is None:
        return
    counts = loaded["counts"]
    quiet_s = page.settings.dashboard.sensor_silent_s
    silent = [s for s in loaded["sensors"] if (since(s["last_seen"], at) or 0) > quiet_s]
    kpis = st.columns(6)
    kpis[0].metric(page.t("kpi.events"), f"{counts['events']:,}", border=True)
    kpis[1].metric(page.t("kpi.open"), f"{counts['open_incidents']:,}", border=True)
    kpis[2].metric(page.t("kpi.total"), f"{counts['incidents']:,}", border=True)
    kpis[3].metric(page.t("kpi.dead"), f"{counts['dead_letters']:,}", help=page.t("kpi.dead_help"), border=True)
    kpis[4].metric(page.t("kpi.silent_sensors"), f"{len(silent):,}", help=page.t("kpi.silent_help"), border=True)
    kpis[5].metric(page.t("kpi.tracks"), f"{len(loaded['tracks']):,}", border=True)
    for zone in loaded["blind"]:
        name = layer.zone_name(zone["zone_id"], page.lang, zone["zone_name"]) if layer else zone["zone_name"]
        st.warning(
            page.t(
                "map.blind",
                zone=name or zone["zone_id"],
                silent=zone["silent"],
                known=zone["known"],
                rules=", ".join(zone["rules"]) or "—",
            ),
            icon=":material/visibility_off:",
        )
    if counts["incidents"] == 0:
        st.info(page.t("state.no_incidents"), icon=":material/hourglass_empty:")
    elif loaded["matching"] == 0:
        st.info(page.t("state.no_match_map"), icon=":material/filter_alt_off:")
    if layer is None:
        return
    legend(page, loaded["aggregated"])
    layers = maps.district_layers(layer, loaded["by_zone"], page.lang)
    if loaded["sensors"]:
        layers.append(
            maps.sensor_layer(loaded["sensors"], at, page.settings.dashboard.sensor_silent_s, page.lang, page.tz)
        )
    if loaded["tracks"]:
        layers.extend(maps.track_layers(loaded["tracks"], page.lang, page.tz))
    if loaded["aggregated"]:
        layers.append(maps.hexagon_layer(maps.hexagons(loaded["cells"]), page.lang))
        st.caption(page.t("map.aggregated", count=f"{loaded['matching']:,}", limit=f"{data.MAP_POINT_LIMIT:,}"))
    else:
        layers.append(maps.incident_layer(loaded["points"], layer, page.lang, page.tz))
    st.pydeck_chart(
        maps.deck(layers),
        height=maps.MAP_HEIGHT_PX,
        on_select=_on_select,
        selection_mode="single-object",
        key=MAP_KEY,
    )
    st.caption(page.t("map.click_hint"))
    updated_caption(page)
    opened = st.session_state.pop(OPEN_KEY, None)
    if opened:
        logger.info("dashboard map opens incident=%s", opened)
        st.rerun()  # the detail sits outside this fragment


def render_detail(page: Page, incident_id: str, layer: data.ZoneLayer | None) -> None:
    """The clicked incident under the map: close, open in the queue, then the same detail as the queue's."""
    pack: LoadedPack | None = None
    try:
        pack = data.current_pack(page.settings.rules.pack)
    except Exception as exc:  # the detail says what is missing; the map above already said why
        logger.error("dashboard cannot load pack=%s error=%s", page.settings.rules.pack, exc)
    st.divider()
    close, queue = st.columns([1, 4], vertical_alignment="center")
    close.button(page.t("detail.close"), icon=":material/close:", key="map_detail_close", on_click=_close_detail)
    queue.page_link(
        "pages/queue.py",
        label=page.t("map.open_in_queue"),
        icon=":material/notifications_active:",
        query_params={"incident": incident_id},
    )
    detail.render(page, incident_id, layer, pack)


def main() -> None:
    page = page_context()
    st.title(page.t("map.title"))
    live_caption(page)
    layer: data.ZoneLayer | None = None
    try:
        layer = data.zone_layer(str(page.settings.rules.pack))
    except Exception as exc:  # PackError, LookupError, OSError: the page still works without a map
        logger.error("dashboard cannot load layer pack=%s error=%s", page.settings.rules.pack, exc)
        st.error(page.t("state.no_layer", pack=page.settings.rules.pack, error=exc))
    flt, show_sensors, show_tracks = filters(page, layer)

    def live() -> None:
        render_live(page, layer, flt, show_sensors, show_tracks)

    st.fragment(live, run_every=page.settings.dashboard.refresh_s)()
    opened = st.query_params.get("incident")
    if opened:
        render_detail(page, str(opened), layer)


main()
