"""Overview: live KPIs, the district map and the incident table, with filters in the sidebar.

Run through ``dashboard/app.py`` (``st.navigation``). The live part is one ``st.fragment`` that
reruns every ``settings.dashboard.refresh_s`` seconds; the filter widgets sit outside it, so a
refresh never resets them.
"""

from __future__ import annotations

import contextlib
import html
import json
import logging
from collections.abc import Sequence
from datetime import UTC, datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pandas as pd
import pydeck as pdk
import streamlit as st
from pydeck.bindings.json_tools import default_serialize

from dashboard import data, require_app_shell
from dashboard.i18n import LANG_KEY, Lang, as_lang, has, t
from sinks.errors import QueryError, StoreUnavailableError
from sinks.read import SEVERITIES
from streams.settings import Settings, get_settings

logger = logging.getLogger(__name__)

# The whole city (all 13 districts) fits a MAP_HEIGHT_PX map at zoom 8.1; the core fills the middle.
WUHAN_VIEW = {"longitude": 114.38, "latitude": 30.66, "zoom": 8.1}
MAP_HEIGHT_PX = 640
TITLE_WIDTH_PX = 225
SEVERITY_RGB: dict[str, tuple[int, int, int]] = {
    "critical": (183, 28, 28),
    "high": (239, 108, 0),
    "medium": (249, 168, 37),
    "low": (30, 136, 229),
    "info": (120, 144, 156),
}
SEVERITY_RADIUS_PX = {"critical": 9, "high": 8, "medium": 7, "low": 6, "info": 5}
OP_SYMBOLS = {">": ">", ">=": "≥", "<": "<", "<=": "≤", "==": "=", "!=": "≠"}
ZONE_EMPTY_RGBA = (236, 239, 241, 200)
ZONE_LOW_RGB = (255, 224, 178)
ZONE_HIGH_RGB = (191, 54, 12)
# Map label fonts per language (canvas fonts: quoted so pydeck passes them as strings, not accessors).
LABEL_FONTS: dict[Lang, str] = {
    "zh-CN": "'Noto Sans CJK SC, Source Han Sans SC, Microsoft YaHei, PingFang SC, WenQuanYi Micro Hei, sans-serif'",
    "en": "'Helvetica Neue, Arial, Liberation Sans, DejaVu Sans, sans-serif'",
}


def city_timezone(settings: Settings) -> tuple[tzinfo, bool]:
    """The display time zone, and whether it was understood (else UTC)."""
    try:
        return ZoneInfo(settings.dashboard.timezone), True
    except (ZoneInfoNotFoundError, ValueError):
        logger.warning("dashboard unknown timezone tz=%s; showing UTC", settings.dashboard.timezone)
        return UTC, False


def local_time(value: datetime | None, tz: tzinfo) -> str:
    """``YYYY-MM-DD HH:MM:SS`` in the city's time zone."""
    if value is None:
        return "—"
    if value.tzinfo is None:  # the store keeps TIMESTAMPTZ; a naive value would be UTC
        value = value.replace(tzinfo=UTC)
    return value.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S")


def severity_label(severity: str, lang: Lang) -> str:
    return t(f"severity.{severity}", lang) if has(f"severity.{severity}", lang) else severity


def category_label(category: str, lang: Lang) -> str:
    return t(f"category.{category}", lang) if has(f"category.{category}", lang) else category


def zone_fill(count: int, top: int) -> list[int]:
    """Fill colour of a district with ``count`` open incidents, on a ramp up to ``top``."""
    if count <= 0 or top <= 0:
        return list(ZONE_EMPTY_RGBA)
    share = min(1.0, count / top)
    rgb = [round(lo + (hi - lo) * share) for lo, hi in zip(ZONE_LOW_RGB, ZONE_HIGH_RGB, strict=True)]
    return [*rgb, 190]


class CompactDeck(pdk.Deck):  # type: ignore[misc]  # pydeck is untyped
    """A Deck serialised without indentation.

    pydeck indents its JSON by 2, which makes the district GeoJSON five times larger, and 5,000
    points take 140 ms instead of 20 ms. Same document, built with pydeck's own serialiser.
    """

    def to_json(self) -> str:
        return json.dumps(self, default=default_serialize, separators=(",", ":"), ensure_ascii=False)


def build_deck(
    layer: data.ZoneLayer, by_zone: dict[str, int], points: Sequence[dict[str, Any]], lang: Lang, tz: tzinfo
) -> pdk.Deck:
    """District polygons shaded by open incidents, their names, and incidents as points on top."""
    top = max(by_zone.values(), default=0)
    features = []
    labels = []
    for feature in layer.geojson["features"]:
        zone_id = str(feature["properties"]["zone_id"])
        count = by_zone.get(zone_id, 0)
        name = layer.zone_name(zone_id, lang)
        features.append(
            {
                "type": "Feature",
                "geometry": feature["geometry"],
                "properties": {
                    "zone_id": zone_id,
                    "fill": zone_fill(count, top),
                    "tip_title": html.escape(name),
                    "tip_line1": html.escape(t("map.zone_tip", lang, count=count)),
                    "tip_line2": "",
                },
            }
        )
        if zone_id in layer.label_points:
            labels.append({"position": list(layer.label_points[zone_id]), "label": name})
    # Least severe first, so critical points are drawn on top.
    ordered = sorted(points, key=lambda p: -SEVERITIES.index(p["severity"]) if p["severity"] in SEVERITIES else 0)
    dots = [
        {
            "position": [round(float(p["lon"]), 6), round(float(p["lat"]), 6)],
            "color": [*SEVERITY_RGB.get(p["severity"], SEVERITY_RGB["info"]), 230],
            "radius": SEVERITY_RADIUS_PX.get(p["severity"], 5),
            "tip_title": html.escape(str(p["title"])),
            "tip_line1": html.escape(
                f"{layer.zone_name(p['zone_id'], lang, p['zone_name'])} · {severity_label(p['severity'], lang)}"
            ),
            "tip_line2": html.escape(local_time(p["last_event_at"], tz)),
        }
        for p in ordered
    ]
    layers = [
        pdk.Layer(
            "GeoJsonLayer",
            {"type": "FeatureCollection", "features": features},
            id="districts",
            pickable=True,
            stroked=True,
            filled=True,
            get_fill_color="properties.fill",
            get_line_color=[84, 110, 122, 220],
            line_width_min_pixels=1,
        ),
        pdk.Layer(
            "TextLayer",
            labels,
            id="district-names",
            get_position="position",
            get_text="label",
            get_size=13,
            size_units="'pixels'",
            get_color=[38, 50, 56, 230],
            character_set="'auto'",
            font_family=LABEL_FONTS[lang],
            font_settings={"buffer": 8},  # the default 4 clips the left edge of glyphs such as "J"
            get_text_anchor="'middle'",
            get_alignment_baseline="'center'",
        ),
        pdk.Layer(
            "ScatterplotLayer",
            dots,
            id="incidents",
            pickable=True,
            get_position="position",
            get_fill_color="color",
            get_radius="radius",
            radius_units="'pixels'",
            stroked=True,
            get_line_color=[255, 255, 255, 255],
            line_width_min_pixels=1,
        ),
    ]
    return CompactDeck(
        layers=layers,
        initial_view_state=pdk.ViewState(**WUHAN_VIEW, min_zoom=6, max_zoom=16),
        # No basemap: tiles come from a CDN the intranet cannot reach. Leaving map_style at pydeck's
        # placeholder also stops Streamlit from fetching its default Carto style.
        map_provider=None,
        tooltip={
            "html": "<b>{tip_title}</b><br/>{tip_line1}<br/>{tip_line2}",
            "style": {"fontSize": "13px", "maxWidth": "320px"},
        },
    )


def incident_frame(
    rows: Sequence[dict[str, Any]], layer: data.ZoneLayer | None, lang: Lang, tz: tzinfo
) -> pd.DataFrame:
    """The table's rows, with translated headers and values formatted for people."""
    records = []
    for r in rows:
        op = OP_SYMBOLS.get(str(r["op"]), str(r["op"]))
        district = layer.zone_name(r["zone_id"], lang, r["zone_name"]) if layer else (r["zone_name"] or "—")
        records.append(
            {
                t("col.time", lang): local_time(r["last_event_at"], tz),
                t("col.severity", lang): severity_label(str(r["severity"]), lang),
                t("col.title", lang): r["title"],
                t("col.district", lang): district,
                t("col.subject", lang): r["subject"],
                t("col.value", lang): f"{float(r['value']):g} {op} {float(r['threshold']):g}",
                t("col.count", lang): int(r["evidence_count"]),
                t("col.rule", lang): f"{r['rule_id']}@{r['rule_version']}",
            }
        )
    columns = [
        t(f"col.{c}", lang) for c in ("time", "severity", "title", "district", "subject", "value", "count", "rule")
    ]
    return pd.DataFrame.from_records(records, columns=columns)


def _severity_style(lang: Lang) -> dict[str, str]:
    return {severity_label(s, lang): f"color: rgb{SEVERITY_RGB[s]}; font-weight: 600" for s in SEVERITIES}


def legend(lang: Lang) -> None:
    """Severity colours of the map points, in the page's language."""
    chips = " ".join(
        f'<span style="white-space:nowrap;margin-right:0.8em"><span style="color:rgb{SEVERITY_RGB[s]}">&#9679;</span> '
        f"{html.escape(severity_label(s, lang))}</span>"
        for s in SEVERITIES
    )
    st.markdown(
        f"<small>{html.escape(t('map.legend_zones', lang))} &nbsp;|&nbsp; "
        f"{html.escape(t('map.legend_points', lang, limit=data.MAP_POINT_LIMIT))}{t('map.legend_sep', lang)}{chips}"
        "</small>",
        unsafe_allow_html=True,
    )


def _note_store_state(state: str, uri: str, error: Exception | None = None) -> None:
    """Log when this session's view of the store changes (not on every refresh)."""
    if st.session_state.get("_store_state") == state:
        return
    st.session_state["_store_state"] = state
    if error is None:
        logger.info("dashboard store state=%s uri=%s", state, uri)
    else:
        logger.warning("dashboard store state=%s uri=%s error=%s", state, uri, str(error).splitlines()[0])


def render_live(
    settings: Settings,
    lang: Lang,
    tz: tzinfo,
    layer: data.ZoneLayer | None,
    severities: tuple[str, ...],
    categories: tuple[str, ...],
    zones: tuple[str, ...],
) -> None:
    """KPIs, map and table from one consistent set of queries."""
    address = data.StoreAddress.from_settings(settings)
    try:
        counts = data.counts(address)
        by_zone = data.incidents_by_zone(address)
        rows = data.incidents(address, severities, categories, zones)
        points = data.incident_points(address, severities, categories, zones) if layer else []
    except StoreUnavailableError as exc:
        _note_store_state("unreachable", address.uri, exc)
        st.error(t("state.unreachable", lang, uri=address.uri), icon=":material/cloud_off:")
        return
    except QueryError as exc:
        _note_store_state("refused", address.uri, exc)
        reason = str(exc).splitlines()[0]  # DuckDB appends the failing SQL on further lines
        st.error(t("state.query_failed", lang, uri=address.uri, error=reason), icon=":material/error:")
        return
    _note_store_state("ok", address.uri)

    kpis = st.columns(4)
    kpis[0].metric(t("kpi.events", lang), f"{counts['events']:,}", border=True)
    kpis[1].metric(t("kpi.open", lang), f"{counts['open_incidents']:,}", border=True)
    kpis[2].metric(t("kpi.total", lang), f"{counts['incidents']:,}", border=True)
    kpis[3].metric(t("kpi.dead", lang), f"{counts['dead_letters']:,}", help=t("kpi.dead_help", lang), border=True)
    if counts["incidents"] == 0:
        st.info(t("state.no_incidents", lang), icon=":material/hourglass_empty:")

    if layer is not None:
        st.subheader(t("map.header", lang))
        legend(lang)
        st.pydeck_chart(build_deck(layer, by_zone, points, lang, tz), height=MAP_HEIGHT_PX)

    st.subheader(t("table.header", lang))
    if counts["incidents"] > 0 and not rows:
        st.info(t("state.no_match", lang), icon=":material/filter_alt_off:")
    elif rows:
        frame = incident_frame(rows, layer, lang, tz)
        styles = _severity_style(lang)
        styled = frame.style.map(lambda v: styles.get(v, ""), subset=[t("col.severity", lang)])
        # A fixed title width leaves room for the rule column at 1440 px with the sidebar open.
        title_column = st.column_config.TextColumn(width=TITLE_WIDTH_PX)
        st.dataframe(styled, hide_index=True, width="stretch", column_config={t("col.title", lang): title_column})
        if len(rows) >= data.TABLE_LIMIT:
            st.caption(t("table.capped", lang, limit=data.TABLE_LIMIT))
    st.caption(t("overview.updated", lang, time=local_time(datetime.now(UTC), tz)))


def filters(settings: Settings, lang: Lang, layer: data.ZoneLayer | None) -> tuple[tuple[str, ...], ...]:
    """The sidebar filters: severities, categories and zone ids (empty means all)."""
    address = data.StoreAddress.from_settings(settings)
    known = set(layer.categories) if layer else set()
    with contextlib.suppress(StoreUnavailableError, QueryError):  # the live part says what is wrong
        known |= set(data.categories(address))
    with st.sidebar:
        st.header(t("filters.header", lang))
        severities = st.multiselect(
            t("filters.severity", lang),
            SEVERITIES,
            key="filter_severity",
            format_func=lambda s: severity_label(s, lang),
            placeholder=t("filters.placeholder", lang),
        )
        categories = st.multiselect(
            t("filters.category", lang),
            sorted(known),
            key="filter_category",
            format_func=lambda c: category_label(c, lang),
            placeholder=t("filters.placeholder", lang),
        )
        zones = st.multiselect(
            t("filters.district", lang),
            layer.ids if layer else [],
            key="filter_district",
            format_func=lambda z: layer.zone_name(z, lang) if layer else z,
            placeholder=t("filters.placeholder", lang),
        )
        st.caption(t("filters.note", lang))
    return tuple(severities), tuple(categories), tuple(zones)


def main() -> None:
    require_app_shell()
    settings = get_settings()
    lang = as_lang(st.session_state.get(LANG_KEY), settings.dashboard.language)
    tz, tz_ok = city_timezone(settings)
    st.title(t("overview.title", lang))
    st.caption(
        t(
            "overview.caption",
            lang,
            seconds=f"{settings.dashboard.refresh_s:g}",
            tz=settings.dashboard.timezone if tz_ok else "UTC",
            uri=settings.store.quack_uri,
        )
    )
    if not tz_ok:
        st.warning(t("state.bad_timezone", lang, tz=settings.dashboard.timezone))
    layer: data.ZoneLayer | None = None
    try:
        layer = data.zone_layer(str(settings.rules.pack))
    except Exception as exc:  # PackError, LookupError, OSError: the page still works without a map
        logger.error("dashboard cannot load layer pack=%s error=%s", settings.rules.pack, exc)
        st.error(t("state.no_layer", lang, pack=settings.rules.pack, error=exc))
    severities, categories, zones = filters(settings, lang, layer)

    def live() -> None:
        render_live(settings, lang, tz, layer, severities, categories, zones)

    # Reruns on its own every refresh_s; the filters above stay untouched. A filter change reruns
    # the whole page, which calls the fragment again with the new values.
    st.fragment(live, run_every=settings.dashboard.refresh_s)()


main()
