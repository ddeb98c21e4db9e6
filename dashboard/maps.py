"""The maps, offline: the pack's district polygons are the basemap (no tiles: the intranet has no CDN).

Layers carry their own tooltip lines (``tip_title``, ``tip_line1``, ``tip_line2``, HTML-escaped),
and every layer has an ``id`` so that ``st.pydeck_chart(on_select=...)`` can tell what was clicked.
Beyond ``data.MAP_POINT_LIMIT`` incidents, the store counts them per small square cell and
:func:`hexagons` bins the cells into H3 hexagons, so the page stays small and fast.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from datetime import UTC, datetime, tzinfo
from typing import Any

import h3
import pydeck as pdk
from pydeck.bindings.json_tools import default_serialize

from dashboard import data
from dashboard.i18n import Lang, t
from dashboard.ui import SEVERITY_RGB, label, local_time, severity_label, severity_rank, since
from sinks.read import SEVERITIES

# The urban core, where most incidents are, fills a 720 px map at zoom 8.7; the outer districts reach
# the edges (drag or zoom out to see all of them).
WUHAN_VIEW = {"longitude": 114.34, "latitude": 30.6, "zoom": 8.7}
MAP_HEIGHT_PX = 720
GRID_STEP_DEG = 0.005
"""Cell size of the store-side pre-aggregation (about 500 m): small against an H3 cell."""
H3_RESOLUTION = 7
"""H3 hexagons of about 5 km² (edge 1.2 km): a few hundred cover the city."""
SEVERITY_RADIUS_PX = {"critical": 9, "high": 8, "medium": 7, "low": 6, "info": 5}
ZONE_EMPTY_RGBA = (236, 239, 241, 200)
ZONE_LOW_RGB = (255, 224, 178)
ZONE_HIGH_RGB = (191, 54, 12)
SENSOR_OK_RGBA = (0, 137, 123, 150)
SENSOR_SILENT_RGBA = (106, 27, 154, 255)
TRACK_RGB = {"drone": (63, 81, 181), "robotaxi": (0, 121, 107)}
TRACK_OTHER_RGB = (93, 64, 55)
LIVE_RGB = (84, 110, 122)
CANDIDATE_RGB = (216, 27, 96)
# Map label fonts per language (canvas fonts: quoted so pydeck passes them as strings, not accessors).
LABEL_FONTS: dict[Lang, str] = {
    "zh-CN": "'Noto Sans CJK SC, Source Han Sans SC, Microsoft YaHei, PingFang SC, WenQuanYi Micro Hei, sans-serif'",
    "en": "'Helvetica Neue, Arial, Liberation Sans, DejaVu Sans, sans-serif'",
}
TOOLTIP = {
    "html": "<b>{tip_title}</b><br/>{tip_line1}<br/>{tip_line2}",
    "style": {"fontSize": "13px", "maxWidth": "340px"},
}


class CompactDeck(pdk.Deck):  # type: ignore[misc]  # pydeck is untyped
    """A Deck serialised without indentation.

    pydeck indents its JSON by 2, which makes the district GeoJSON five times larger, and 5,000
    points take 140 ms instead of 20 ms. Same document, built with pydeck's own serialiser.
    """

    def to_json(self) -> str:
        return json.dumps(self, default=default_serialize, separators=(",", ":"), ensure_ascii=False)


def _tip(title: str, line1: str = "", line2: str = "") -> dict[str, str]:
    return {"tip_title": html.escape(title), "tip_line1": html.escape(line1), "tip_line2": html.escape(line2)}


def zone_fill(count: int, top: int) -> list[int]:
    """Fill colour of a district with ``count`` open incidents, on a ramp up to ``top``."""
    if count <= 0 or top <= 0:
        return list(ZONE_EMPTY_RGBA)
    share = min(1.0, count / top)
    rgb = [round(lo + (hi - lo) * share) for lo, hi in zip(ZONE_LOW_RGB, ZONE_HIGH_RGB, strict=True)]
    return [*rgb, 190]


def district_layers(layer: data.ZoneLayer, by_zone: dict[str, int], lang: Lang, *, names: bool = True) -> list[Any]:
    """The basemap: district polygons shaded by ``by_zone`` counts, and their names."""
    top = max(by_zone.values(), default=0)
    features = []
    labels = []
    for feature in layer.geojson["features"]:
        zone_id = str(feature["properties"]["zone_id"])
        count = by_zone.get(zone_id, 0)
        name = layer.zone_name(zone_id, lang)
        props = {"zone_id": zone_id, "fill": zone_fill(count, top), **_tip(name, t("map.zone_tip", lang, count=count))}
        features.append({"type": "Feature", "geometry": feature["geometry"], "properties": props})
        if names and zone_id in layer.label_points:
            labels.append({"position": list(layer.label_points[zone_id]), "label": name})
    out = [
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
        )
    ]
    if labels:
        out.append(
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
            )
        )
    return out


def _event_time(point: dict[str, Any]) -> datetime | None:
    """An incident's last event time, from a full row or from a map point (epoch milliseconds)."""
    if "last_event_ms" in point:
        return datetime.fromtimestamp(int(point["last_event_ms"]) / 1000, UTC)
    value: datetime | None = point.get("last_event_at")
    return value


def incident_layer(points: Sequence[dict[str, Any]], layer: data.ZoneLayer | None, lang: Lang, tz: tzinfo) -> Any:
    """Incidents as dots coloured by severity (critical drawn last, on top); each carries its ``id``."""
    ordered = sorted(points, key=lambda p: -severity_rank(str(p["severity"])))
    dots = [
        {
            "id": str(p["id"]),
            "position": [round(float(p["lon"]), 6), round(float(p["lat"]), 6)],
            "color": [*SEVERITY_RGB.get(str(p["severity"]), SEVERITY_RGB["info"]), 230],
            "radius": SEVERITY_RADIUS_PX.get(str(p["severity"]), 5),
            **_tip(
                str(p["title"]),
                f"{layer.zone_name(p['zone_id'], lang, p['zone_name']) if layer else p['zone_name'] or '—'}"
                f" · {severity_label(str(p['severity']), lang)}",
                local_time(_event_time(p), tz),
            ),
        }
        for p in ordered
    ]
    return pdk.Layer(
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
    )


def hexagons(cells: Sequence[dict[str, Any]], step_deg: float = GRID_STEP_DEG) -> list[dict[str, Any]]:
    """Store grid cells (``gx``, ``gy``, ``n``, ``worst``) binned into H3 cells, most incidents first."""
    acc: dict[str, list[int]] = {}
    for cell in cells:
        lat, lon = float(cell["gy"]) * step_deg, float(cell["gx"]) * step_deg
        hex_id = h3.latlng_to_cell(lat, lon, H3_RESOLUTION)
        n, worst = acc.get(hex_id, [0, len(SEVERITIES)])
        acc[hex_id] = [n + int(cell["n"]), min(worst, int(cell["worst"]))]
    return [{"h3": k, "n": v[0], "worst": v[1]} for k, v in sorted(acc.items(), key=lambda kv: -kv[1][0])]


def hexagon_layer(hexes: Sequence[dict[str, Any]], lang: Lang) -> Any:
    """H3 hexagons: colour of the worst severity inside, more opaque with more incidents."""
    top = max((h["n"] for h in hexes), default=1)
    polys = []
    for h in hexes:
        severity = SEVERITIES[min(int(h["worst"]), len(SEVERITIES) - 1)]
        alpha = 90 + round(150 * min(1.0, int(h["n"]) / top) ** 0.5)
        ring = [[round(lon, 5), round(lat, 5)] for lat, lon in h3.cell_to_boundary(h["h3"])]
        polys.append(
            {
                "polygon": ring,
                "color": [*SEVERITY_RGB[severity], alpha],
                **_tip(
                    t("map.cell_tip", lang, count=f"{int(h['n']):,}"),
                    t("map.cell_worst", lang, severity=severity_label(severity, lang)),
                ),
            }
        )
    return pdk.Layer(
        "PolygonLayer",
        polys,
        id="incident-cells",
        pickable=True,
        stroked=True,
        filled=True,
        get_polygon="polygon",
        get_fill_color="color",
        get_line_color=[255, 255, 255, 200],
        line_width_min_pixels=1,
    )


def sensor_layer(sensors: Sequence[dict[str, Any]], at: datetime, silent_after_s: float, lang: Lang, tz: tzinfo) -> Any:
    """Fixed sensors: small teal dots when reporting, large purple ones when silent (drawn on top)."""
    dots = []
    for s in sensors:
        quiet = since(s["last_seen"], at) or 0.0
        silent = quiet > silent_after_s
        dots.append(
            {
                "position": [round(float(s["lon"]), 6), round(float(s["lat"]), 6)],
                "color": list(SENSOR_SILENT_RGBA if silent else SENSOR_OK_RGBA),
                "radius": 7 if silent else 3,
                "silent": silent,
                **_tip(
                    f"{s['subject']} · {label('metric', s['metric'], lang)}",
                    t("map.sensor_silent" if silent else "map.sensor_ok", lang),
                    t("map.last_seen", lang, time=local_time(s["last_seen"], tz)),
                ),
            }
        )
    dots.sort(key=lambda d: bool(d["silent"]))
    return pdk.Layer(
        "ScatterplotLayer",
        dots,
        id="sensors",
        pickable=True,
        get_position="position",
        get_fill_color="color",
        get_radius="radius",
        radius_units="'pixels'",
        stroked=True,
        get_line_color=[255, 255, 255, 220],
        line_width_min_pixels=1,
    )


def track_layers(tracks: Sequence[dict[str, Any]], lang: Lang, tz: tzinfo) -> list[Any]:
    """Active drone and vehicle tracks: their recent path and a head at the latest fix."""
    paths, heads = [], []
    for tr in tracks:
        rgb = TRACK_RGB.get(str(tr["object_type"]), TRACK_OTHER_RGB)
        path = [[round(float(x), 6), round(float(y), 6)] for x, y in tr["path"]]
        alt = f" · {float(tr['alt_m']):.0f} m" if tr.get("alt_m") is not None else ""
        tip = _tip(
            f"{tr['subject']} · {label('object', tr['object_type'], lang)}{alt}",
            t("map.last_seen", lang, time=local_time(tr["last_seen"], tz)),
        )
        paths.append({"path": path, "color": [*rgb, 200], **tip})
        heads.append({"position": path[-1], "color": [*rgb, 255], **tip})
    return [
        pdk.Layer(
            "PathLayer",
            paths,
            id="tracks",
            pickable=True,
            get_path="path",
            get_color="color",
            get_width=3,
            width_units="'pixels'",
            cap_rounded=True,
            joint_rounded=True,
        ),
        pdk.Layer(
            "ScatterplotLayer",
            heads,
            id="track-heads",
            pickable=True,
            get_position="position",
            get_fill_color="color",
            get_radius=6,
            radius_units="'pixels'",
            stroked=True,
            get_line_color=[255, 255, 255, 255],
            line_width_min_pixels=2,
        ),
    ]


def points_layer(layer_id: str, points: Sequence[dict[str, Any]], rgb: tuple[int, int, int], radius: int) -> Any:
    """Plain dots of one colour (backtests, evidence); items carry their own tooltip lines."""
    return pdk.Layer(
        "ScatterplotLayer",
        list(points),
        id=layer_id,
        pickable=True,
        get_position="position",
        get_fill_color=[*rgb, 210],
        get_radius=radius,
        radius_units="'pixels'",
        stroked=True,
        get_line_color=[255, 255, 255, 255],
        line_width_min_pixels=1,
    )


def deck(layers: list[Any], view: dict[str, float] | None = None) -> CompactDeck:
    """A deck without a basemap: tiles come from a CDN the intranet cannot reach. Leaving
    ``map_style`` at pydeck's placeholder also stops Streamlit from fetching its default Carto style
    (and a dict ``map_style`` crashes in the browser)."""
    return CompactDeck(
        layers=layers,
        initial_view_state=pdk.ViewState(**(view or WUHAN_VIEW), min_zoom=6, max_zoom=17),
        map_provider=None,
        tooltip=TOOLTIP,
    )
