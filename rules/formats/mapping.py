"""Shared pieces of the input formats: safe JSON parsing, JSON paths, CRS handling, validation.

Every format module (Open311, SensorThings, CloudEvents, MQTT field mappings) builds plain event
dicts in the coordinates of its source, converts them to WGS-84 here in one vectorised call, and
validates them as :mod:`rules.model` events. Nothing here raises on bad input: problems come
back as :class:`rules.decode.Rejected` with a reason a person can read.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rules.crs import CRS, to_wgs84
from rules.decode import DEFAULT_MAX_BYTES, Decoded, Rejected, decode_one
from rules.decode import _describe as describe_validation
from rules.model import Reading, Report, Track

__all__ = [
    "AnyEvent",
    "FieldMapping",
    "JsonPath",
    "decode_cityops",
    "decode_cityops_doc",
    "describe_validation",
    "map_fields",
    "parse_crs",
    "parse_json",
    "to_wgs84_records",
    "validate_records",
]

AnyEvent = Reading | Report | Track
_NON_FINITE = re.compile(rb"[:\[,]\s*-?(NaN|Infinity)\b")
_TOKEN = re.compile(r"\.?([^.\[\]]+)|\[(-?\d+)\]")
MAX_TEXT = 200  # longest quoted snippet of a bad value in a reason


def snippet(value: Any) -> str:
    """A short, safe rendering of a bad value for an error message."""
    text = repr(value)
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + "..."


def parse_json(raw: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Any | Rejected:
    """Parse JSON bytes; a Rejected (oversized or bad_json, with the reason) instead of raising."""
    if len(raw) > max_bytes:
        return Rejected(f"payload of {len(raw)} bytes exceeds the limit of {max_bytes}", "oversized", raw)
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        hint = " (NaN and Infinity are not JSON numbers)" if _NON_FINITE.search(raw) else ""
        return Rejected(f"not valid JSON{hint}: {exc}", "bad_json", raw)


def parse_crs(value: Any, default: CRS) -> CRS | str:
    """The CRS a payload declares (``None`` = the source's default), or the reason it is not one."""
    if value is None or value == "":
        return default
    if isinstance(value, CRS):
        return value
    if isinstance(value, str) and len(value) <= 16:
        try:
            return CRS(value)
        except ValueError:
            pass
    return f"crs: unknown coordinate system {snippet(value)} (expected WGS84, GCJ02 or BD09)"


class JsonPath:
    """A dotted path into parsed JSON: ``a.b[0].c`` (a leading ``$.`` is allowed).

    ``topic[N]`` at the start picks level N of the MQTT topic instead of the payload.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        body = text[2:] if text.startswith("$.") else text
        self.topic_level: int | None = None
        match = re.fullmatch(r"topic\[(-?\d+)\]", body)
        if match:
            self.topic_level = int(match.group(1))
            self.parts: list[str | int] = []
            return
        parts: list[str | int] = []
        pos = 0
        while pos < len(body):
            m = _TOKEN.match(body, pos)
            if m is None or m.end() == pos:
                raise ValueError(f"not a JSON path: {text!r} (expected e.g. 'data.position[0]')")
            parts.append(m.group(1) if m.group(1) is not None else int(m.group(2)))
            pos = m.end()
        if not parts:
            raise ValueError(f"empty JSON path {text!r}")
        self.parts = parts

    def get(self, doc: Any, topic: str = "") -> Any:
        """The value at this path, or None when any step is missing or of the wrong type."""
        if self.topic_level is not None:
            levels = topic.split("/")
            try:
                return levels[self.topic_level] or None
            except IndexError:
                return None
        node = doc
        for part in self.parts:
            if isinstance(part, int):
                if not isinstance(node, list) or not -len(node) <= part < len(node):
                    return None
                node = node[part]
            else:
                if not isinstance(node, dict):
                    return None
                node = node.get(part)
                if node is None:
                    return None
        return node


class FieldMapping(BaseModel):
    """How to read a reading out of arbitrary JSON: one JSON path per field.

    A value starting with ``=`` is a constant (``"=water_level_cm"``); ``topic[N]`` takes
    level N of the MQTT topic (``sensors/wl-17/level`` -> ``topic[1]`` is ``wl-17``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    lon: str = Field(default="lon", description="Longitude path.")
    lat: str = Field(default="lat", description="Latitude path.")
    value: str = Field(default="value", description="Measured value path.")
    sensor_id: str = Field(default="sensor_id", description="Sensor id path (or topic[N]).")
    metric: str = Field(default="metric", description="Metric path, or a constant such as '=pm25'.")
    ts: str = Field(default="ts", description="Timestamp path (ISO 8601 with offset, or Unix seconds/ms).")
    id: str | None = Field(default=None, description="Event id path; default: sensor_id-ts.")
    unit: str | None = Field(default=None, description="Unit path (optional).")
    crs: str | None = Field(default="crs", description="Path of a per-payload CRS override (optional).")


@lru_cache(maxsize=256)
def compile_path(text: str) -> JsonPath:
    """A parsed JsonPath (cached: mappings reuse a handful of paths)."""
    return JsonPath(text)


def _pick(spec: str | None, doc: Any, topic: str) -> Any:
    if spec is None:
        return None
    if spec.startswith("="):
        return spec[1:]
    return compile_path(spec).get(doc, topic)


def map_fields(doc: Any, mapping: FieldMapping, topic: str = "") -> tuple[dict[str, Any], Any]:
    """A reading dict (in the payload's CRS) and the payload's CRS declaration, by JSON paths."""
    record: dict[str, Any] = {"kind": "reading"}
    for name in ("lon", "lat", "value", "sensor_id", "metric", "ts", "unit"):
        value = _pick(getattr(mapping, name), doc, topic)
        if value is not None:
            record[name] = value
    event_id = _pick(mapping.id, doc, topic)
    if event_id is None and isinstance(record.get("sensor_id"), str) and record.get("ts") is not None:
        event_id = f"{record['sensor_id']}-{record['ts']}"
    if event_id is not None:
        record["id"] = event_id if isinstance(event_id, str) else str(event_id)[:128]
    return record, _pick(mapping.crs, doc, topic)


def _finite_pair(record: dict[str, Any]) -> tuple[float, float] | None:
    lon, lat = record.get("lon"), record.get("lat")
    if isinstance(lon, bool) or isinstance(lat, bool):
        return None
    if not isinstance(lon, int | float) or not isinstance(lat, int | float):
        return None
    x, y = float(lon), float(lat)
    if not (math.isfinite(x) and math.isfinite(y) and -180 <= x <= 180 and -90 <= y <= 90):
        return None
    return x, y


def to_wgs84_records(records: Sequence[dict[str, Any]], crs: Sequence[CRS]) -> None:
    """Convert each record's lon/lat from its CRS to WGS-84 in place, one vectorised call per CRS.

    Records whose coordinates are not finite in-range numbers are left alone, so that validation
    names the problem with the value the sender sent.
    """
    for system in (CRS.GCJ02, CRS.BD09):
        idx = [i for i, c in enumerate(crs) if c is system]
        pairs = [(i, p) for i in idx if (p := _finite_pair(records[i])) is not None]
        if not pairs:
            continue
        lons = np.array([p[0] for _, p in pairs], dtype=np.float64)
        lats = np.array([p[1] for _, p in pairs], dtype=np.float64)
        wx, wy = to_wgs84(lons, lats, system)
        for (i, _), x, y in zip(pairs, wx.tolist(), wy.tolist(), strict=True):
            records[i]["lon"] = x
            records[i]["lat"] = y


def original_of(record: Any, fallback: bytes) -> bytes:
    """The bytes to dead-letter for one record: its compact JSON, or ``fallback`` if it cannot be encoded."""
    try:
        return orjson.dumps(record)
    except (orjson.JSONEncodeError, TypeError):
        return fallback


def validate_records(records: Iterable[tuple[int | None, Any, Any]], raw: bytes) -> Decoded:
    """Validate ``(index, record, as sent)`` triples as events; bad ones become Rejected.

    The original bytes of a rejected record are ``raw`` for a whole message (index None), else
    the record as sent, re-encoded (``raw`` when it is too deep to re-encode).
    """
    events: list[AnyEvent] = []
    rejected: list[Rejected] = []
    for index, record, sent in records:
        try:
            events.append(decode_one(record))
        except ValidationError as exc:
            original = raw if index is None else original_of(sent, raw)
            rejected.append(Rejected(describe_validation(exc), "invalid", original, index))
    return Decoded(events, rejected)


def decode_cityops_doc(doc: Any, raw: bytes, default_crs: CRS) -> Decoded:
    """Our own event JSON (object, array or envelope, see docs/events.md), already parsed.

    A ``crs`` member on the envelope or on an event declares the coordinates' CRS (default:
    the source's); it is removed and the coordinates are converted to WGS-84.
    """
    envelope_crs: Any = None
    if isinstance(doc, dict) and "events" in doc and "kind" not in doc:
        envelope_crs = doc.get("crs")
        doc = doc["events"]
        if not isinstance(doc, list):
            return Decoded([], [Rejected("envelope field 'events' must be a list", "bad_envelope", raw)])
    base = parse_crs(envelope_crs, default_crs)
    if not isinstance(base, CRS):
        return Decoded([], [Rejected(base, "invalid", raw)])
    if isinstance(doc, dict):
        items: list[Any] = [doc]
        single = True
    elif isinstance(doc, list):
        items, single = doc, False
    else:
        return Decoded([], [Rejected(f"expected an event object or a list, got {type(doc).__name__}", "invalid", raw)])
    todo: list[tuple[int | None, Any, Any]] = []
    systems: list[CRS] = []
    bad: list[Rejected] = []
    for i, item in enumerate(items):
        index = None if single else i
        record = item
        system: CRS | str = base
        if isinstance(item, dict) and "crs" in item:
            record = {k: v for k, v in item.items() if k != "crs"}
            system = parse_crs(item["crs"], base)
        if not isinstance(system, CRS):
            bad.append(Rejected(system, "invalid", raw if index is None else original_of(item, raw), index))
            continue
        todo.append((index, record, item))
        systems.append(system)
    if any(s is not CRS.WGS84 for s in systems):
        todo = [(i, dict(r), s) if isinstance(r, dict) else (i, r, s) for i, r, s in todo]
        to_wgs84_records([r if isinstance(r, dict) else {} for _, r, _ in todo], systems)
    out = validate_records(todo, raw)
    return Decoded(out.events, bad + out.rejected)


def decode_cityops(raw: bytes, *, default_crs: CRS = CRS.WGS84, max_bytes: int = DEFAULT_MAX_BYTES) -> Decoded:
    """Like :func:`rules.decode.decode_message`, plus the per-payload ``crs`` declaration."""
    doc = parse_json(raw, max_bytes=max_bytes)
    if isinstance(doc, Rejected):
        return Decoded([], [doc])
    return decode_cityops_doc(doc, raw, default_crs)
