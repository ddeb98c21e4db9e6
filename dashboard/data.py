"""The dashboard's cached access to the store (through ``sinks.read``) and to the pack's zone layers.

One ``StoreReader`` per store address lives in ``st.cache_resource``; query results live in
``st.cache_data`` for a short TTL, so many open browser tabs cost the store one query per TTL.
Errors are never cached: a store that comes back is seen on the next refresh.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, ParamSpec, TypeVar, cast

import numpy as np
import shapely
import streamlit as st
from numpy.typing import NDArray

from rules.pack import LoadedPack, load_pack
from sinks.read import IncidentFilter, StoreReader
from streams.logs import setup_logging
from streams.settings import Settings

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

LIVE_TTL_S = 1.0
"""How long live numbers are shared between sessions (well under any sensible refresh interval)."""
LIST_TTL_S = 30.0
"""How long slow-moving lists (categories) are cached."""
SLOW_TTL_S = 10.0
"""How long analytics over days of incidents are shared (they move slowly)."""
LABEL_MIN_AREA_KM2 = 110.0
"""Zones smaller than this get no name on the map (their names would overlap at city zoom; the
tooltip still names them)."""
MAP_POINT_LIMIT = 2_000
"""Up to this many matching incidents the map draws each one; beyond it, H3 cells. Keeps the pydeck JSON
small (about 150 bytes a point) and the points query within 50 ms over a million incidents."""
TABLE_LIMIT = 200
"""Incidents listed per queue page."""


def cache_data(ttl: float) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """``st.cache_data(ttl=...)`` with the signature kept for the type checker."""
    return cast("Callable[[Callable[P, R]], Callable[P, R]]", st.cache_data(ttl=ttl, show_spinner=False))


def cache_resource() -> Callable[[Callable[P, R]], Callable[P, R]]:
    """``st.cache_resource`` with the signature kept for the type checker."""
    return cast("Callable[[Callable[P, R]], Callable[P, R]]", st.cache_resource(show_spinner=False))


def approx_area_km2(geoms: NDArray[np.object_]) -> NDArray[np.float64]:
    """Areas of WGS-84 polygons in km², scaled at each one's centroid latitude (plenty for labels)."""
    lat = shapely.get_y(shapely.centroid(geoms))
    km_per_deg = 111.32
    return np.asarray(shapely.area(geoms) * km_per_deg**2 * np.cos(np.radians(lat)), dtype=np.float64)


@dataclass(frozen=True)
class StoreAddress:
    """Where the store's Quack endpoint is, and the token to use. Hashable: a cache key."""

    uri: str
    token: str

    @classmethod
    def from_settings(cls, settings: Settings) -> StoreAddress:
        return cls(settings.store.quack_uri, settings.store.token.get_secret_value())

    def __repr__(self) -> str:  # keeps the token out of logs and tracebacks
        return f"StoreAddress(uri={self.uri!r}, token='********')"


@dataclass(frozen=True)
class ZoneLayer:
    """A pack layer prepared for the map: WGS-84 GeoJSON plus zone names in both languages."""

    name: str
    ids: tuple[str, ...]
    names_zh: dict[str, str]
    names_en: dict[str, str]
    geojson: dict[str, Any]
    label_points: dict[str, tuple[float, float]]
    categories: tuple[str, ...]
    other_names: dict[str, tuple[str, str]] = field(default_factory=dict)
    """Zones of the pack's other layers (no-fly zones, schools...): id -> (name, English name or "")."""

    def zone_name(self, zone_id: str | None, lang: str, fallback: str | None = None) -> str:
        """The zone's name in ``lang``, for a district or a zone of another layer of the pack.

        English uses the layer's ``name_en``; a zone without one is named by its id, which is ASCII,
        rather than by a Chinese name. Unknown zones get ``fallback`` (the name the worker stored).
        """
        if zone_id is None:
            return fallback or "—"
        names = self.names_en if lang == "en" else self.names_zh
        if zone_id in names:
            return names[zone_id]
        if zone_id in self.other_names:
            zh, en = self.other_names[zone_id]
            return (en or zone_id) if lang == "en" else (zh or zone_id)
        if lang == "en" and zone_id in self.names_zh:
            return zone_id
        return fallback or zone_id


@cache_resource()
def configure_logging(level: str, json: bool) -> bool:
    """Structured logging for the Streamlit process, once per process.

    Under ``AppTest`` the app runs inside the test process, whose logging belongs to pytest.
    """
    if st.get_option("global.appTest"):
        return False
    setup_logging(level, json=json)
    logging.getLogger("streamlit").setLevel(max(logging.WARNING, logging.getLevelName(level)))
    logger.info("dashboard logging configured level=%s json=%s", level, json)
    return True


@cache_resource()
def reader(address: StoreAddress) -> StoreReader:
    """The process-wide Quack client for one store address."""
    logger.info("dashboard store reader created uri=%s", address.uri)
    return StoreReader(address.uri, address.token)


@cache_resource()
def zone_layer(pack_path: str, preferred: str = "districts") -> ZoneLayer:
    """The pack's ``preferred`` layer (or its first one) as map-ready GeoJSON.

    Raises:
        rules.errors.PackError: when the pack or its layers cannot be loaded.
        LookupError: when the pack has no layer at all.
    """
    pack = load_pack(Path(pack_path))
    if not pack.layers:
        raise LookupError(f"rule pack {pack_path} declares no layers")
    name = preferred if preferred in pack.layers else next(iter(pack.layers))
    layer = pack.layers[name]
    names_en = {zid: str(props.get("name_en") or "") for zid, props in zip(layer.ids, layer.properties, strict=True)}
    categories = tuple(sorted({rule.category for rule in pack.spec.rules}))
    inside = shapely.point_on_surface(layer.geoms)
    big = approx_area_km2(layer.geoms) >= LABEL_MIN_AREA_KM2
    labels = {
        zid: (round(float(p.x), 5), round(float(p.y), 5))
        for zid, p, keep in zip(layer.ids, inside, big, strict=True)
        if keep
    }
    other_names = {
        zid: (str(zh), str(props.get("name_en") or ""))
        for other_name, other in pack.layers.items()
        if other_name != name
        for zid, zh, props in zip(other.ids, other.names, other.properties, strict=True)
    }
    logger.info("dashboard layer loaded pack=%s layer=%s zones=%d", pack_path, name, len(layer.ids))
    return ZoneLayer(
        name=name,
        ids=layer.ids,
        names_zh=dict(zip(layer.ids, layer.names, strict=True)),
        names_en={k: v for k, v in names_en.items() if v},
        geojson=layer.to_geojson(),
        label_points=labels,
        categories=categories,
        other_names=other_names,
    )


@cache_resource()
def pack(pack_path: str, mtime_ns: int) -> LoadedPack:
    """A rule pack, loaded once per file version (``mtime_ns`` is the cache key of the version).

    Raises:
        rules.errors.PackError: when the pack is invalid.
    """
    logger.info("dashboard pack loaded path=%s", pack_path)
    return load_pack(Path(pack_path))


def current_pack(pack_path: Path) -> LoadedPack:
    """The pack at ``pack_path`` as it is on disk now."""
    return pack(str(pack_path), pack_path.stat().st_mtime_ns)


@cache_data(LIVE_TTL_S)
def counts(address: StoreAddress) -> dict[str, int]:
    """``StoreReader.counts()``: events, incidents, open_incidents, dead_letters."""
    return reader(address).counts()


@cache_data(LIVE_TTL_S)
def zone_counts(address: StoreAddress, flt: IncidentFilter) -> dict[str, int]:
    return reader(address).zone_counts(flt)


@cache_data(LIVE_TTL_S)
def queue(address: StoreAddress, flt: IncidentFilter, sort: str, limit: int = TABLE_LIMIT) -> list[dict[str, Any]]:
    return reader(address).queue(flt, sort=sort, limit=limit)


@cache_data(LIVE_TTL_S)
def count(address: StoreAddress, flt: IncidentFilter) -> int:
    return reader(address).count(flt)


@cache_data(LIVE_TTL_S)
def points(address: StoreAddress, flt: IncidentFilter, limit: int = MAP_POINT_LIMIT) -> list[dict[str, Any]]:
    return reader(address).points(flt, limit=limit)


@cache_data(LIVE_TTL_S)
def grid(address: StoreAddress, flt: IncidentFilter, step_deg: float) -> list[dict[str, Any]]:
    return reader(address).grid(flt, step_deg=step_deg)


@cache_data(LIVE_TTL_S)
def blind_zones(address: StoreAddress) -> list[dict[str, Any]]:
    return reader(address).blind_zones()


@cache_data(LIVE_TTL_S)
def sensors(address: StoreAddress, since: datetime) -> list[dict[str, Any]]:
    return reader(address).sensors(since)


@cache_data(LIVE_TTL_S)
def tracks(address: StoreAddress, since: datetime, active_since: datetime) -> list[dict[str, Any]]:
    return reader(address).tracks(since, active_since)


@cache_data(LIST_TTL_S)
def distinct(address: StoreAddress, column: str) -> list[str]:
    """Values present in the store (categories, packs)."""
    return reader(address).distinct(column)


def categories(address: StoreAddress) -> list[str]:
    """Categories present in the store."""
    return distinct(address, "category")


@cache_data(LIVE_TTL_S)
def incident(address: StoreAddress, incident_id: str) -> dict[str, Any] | None:
    return reader(address).incident(incident_id)


@cache_data(LIVE_TTL_S)
def history(address: StoreAddress, incident_id: str) -> list[dict[str, Any]]:
    return reader(address).history(incident_id)


@cache_data(LIVE_TTL_S)
def evidence_events(address: StoreAddress, incident_id: str) -> list[dict[str, Any]]:
    return reader(address).evidence_events(incident_id)


@cache_data(SLOW_TTL_S)
def over_time(
    address: StoreAddress, since: datetime, until: datetime, bucket: str, by: str, tz: str
) -> list[dict[str, Any]]:
    return reader(address).over_time(since, until, bucket=bucket, by=by, tz=tz)


@cache_data(SLOW_TTL_S)
def response_times(address: StoreAddress, since: datetime, until: datetime) -> list[dict[str, Any]]:
    return reader(address).response_times(since, until)


@cache_data(SLOW_TTL_S)
def top_locations(address: StoreAddress, since: datetime, until: datetime) -> list[dict[str, Any]]:
    return reader(address).top_locations(since, until)


@cache_data(LIVE_TTL_S)
def intake(address: StoreAddress, since: datetime) -> list[dict[str, Any]]:
    return reader(address).intake(since)


@cache_data(SLOW_TTL_S)
def rule_hits(address: StoreAddress, since: datetime | None) -> list[dict[str, Any]]:
    return reader(address).rule_hits(since)


@cache_data(SLOW_TTL_S)
def pack_versions(address: StoreAddress) -> list[dict[str, Any]]:
    return reader(address).pack_versions()


@cache_data(LIVE_TTL_S)
def health(address: StoreAddress) -> dict[str, Any]:
    return reader(address).health()


@cache_data(LIVE_TTL_S)
def dead_letters(address: StoreAddress, limit: int = 100) -> list[dict[str, Any]]:
    return reader(address).dead_letters(limit)


@cache_data(LIVE_TTL_S)
def dead_letter_kinds(address: StoreAddress) -> list[dict[str, Any]]:
    return reader(address).dead_letter_kinds()


@cache_data(LIVE_TTL_S)
def silences(address: StoreAddress) -> list[dict[str, Any]]:
    return reader(address).silences()


def ping_ms(address: StoreAddress) -> float | None:
    """Round trip of ``SELECT 1`` in milliseconds, or None when the store does not answer (never cached)."""
    began = time.perf_counter()
    ok = reader(address).ping()
    return (time.perf_counter() - began) * 1000 if ok else None
