"""MQTT payloads -> events: cityops JSON, SensorThings Observations, or a JSON field mapping.

The format of a topic is configured per topic filter (first match wins); a topic no filter
names is auto-detected: an Observation (``result`` with a Datastream, or a
``Datastreams(<id>)/Observations`` topic), else cityops JSON (``kind`` or ``events``), else
the field mapping.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from rules.crs import CRS
from rules.decode import DEFAULT_MAX_BYTES, Decoded, Rejected
from rules.formats.mapping import (
    FieldMapping,
    decode_cityops_doc,
    map_fields,
    parse_crs,
    parse_json,
    to_wgs84_records,
    validate_records,
)
from rules.formats.sensorthings import LocationCache, datastream_id_from_topic, parse_observation

__all__ = ["MqttFormat", "PayloadContext", "decode_payload", "format_for", "topic_matches"]

MqttFormat = Literal["cityops", "sensorthings", "fields"]


def topic_matches(pattern: str, topic: str) -> bool:
    """MQTT topic-filter matching (``+`` one level, ``#`` the rest)."""
    pat = pattern.split("/")
    top = topic.split("/")
    for i, part in enumerate(pat):
        if part == "#":
            return True
        if i >= len(top):
            return False
        if part != "+" and part != top[i]:
            return False
    return len(pat) == len(top)


def format_for(topic: str, formats: Mapping[str, MqttFormat]) -> MqttFormat | None:
    """The configured format of a topic (first matching filter), or None to auto-detect."""
    for pattern, fmt in formats.items():
        if topic_matches(pattern, topic):
            return fmt
    return None


@dataclass
class PayloadContext:
    """Everything decoding a payload needs (the cache learns Datastream locations)."""

    mapping: FieldMapping = field(default_factory=FieldMapping)
    cache: LocationCache = field(default_factory=LocationCache)
    metrics: Mapping[str, str] = field(default_factory=dict)
    default_crs: CRS = CRS.WGS84
    max_bytes: int = DEFAULT_MAX_BYTES


def _detect(doc: Any, topic: str) -> MqttFormat:
    if isinstance(doc, dict) and "result" in doc and ("Datastream" in doc or datastream_id_from_topic(topic)):
        return "sensorthings"
    if isinstance(doc, list) or (isinstance(doc, dict) and ("kind" in doc or "events" in doc)):
        return "cityops"
    return "fields"


def decode_payload(
    topic: str, payload: bytes, fmt: MqttFormat | None, ctx: PayloadContext, *, received_at: datetime
) -> Decoded:
    """One MQTT message as events (WGS-84) and rejections."""
    doc = parse_json(payload, max_bytes=ctx.max_bytes)
    if isinstance(doc, Rejected):
        return Decoded([], [doc])
    fmt = fmt or _detect(doc, topic)
    if fmt == "cityops":
        return decode_cityops_doc(doc, payload, ctx.default_crs)
    if fmt == "sensorthings":
        got = parse_observation(
            doc,
            cache=ctx.cache,
            metrics=ctx.metrics,
            default_crs=ctx.default_crs,
            received_at=received_at,
            raw=payload,
            topic_datastream=datastream_id_from_topic(topic),
        )
        return Decoded([], [got]) if isinstance(got, Rejected) else Decoded([got], [])
    if not isinstance(doc, dict):
        return Decoded(
            [],
            [Rejected(f"expected a JSON object for the field mapping, got {type(doc).__name__}", "invalid", payload)],
        )
    record, declared = map_fields(doc, ctx.mapping, topic)
    crs = parse_crs(declared, ctx.default_crs)
    if not isinstance(crs, CRS):
        return Decoded([], [Rejected(crs, "invalid", payload)])
    to_wgs84_records([record], [crs])
    return validate_records([(None, record, doc)], payload)
