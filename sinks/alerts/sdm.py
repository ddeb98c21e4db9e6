"""Smart Data Models ``Alert`` (dataModel.Alert), key-values representation.

Key-values is the plain JSON shape that ``schema.json`` of the data model describes (normalized
NGSI wraps each attribute in ``{"type", "value"}``). An NGSI-LD broker accepts it with
``?options=keyValues`` and the data model's ``@context`` sent in a ``Link`` header; cityops does
not add ``@context`` to the message.

- ``id``: ``urn:ngsi-ld:Alert:cityops:<incident id>`` (the entity is the incident: later messages
  update the same entity).
- ``category`` / ``subCategory``: mapped from the incident category (configurable); ``severity``:
  ``info`` becomes ``informational``, the rest are the same words.
- ``dateIssued``: the snapshot's event time; ``validFrom``: first event; ``validTo``: when it
  resolved, else the end of the incident's window; all RFC 3339 UTC.
- ``alertSource``: ``urn:ngsi-ld:cityops:rule:<pack>:<rule id>``.
- ``data``: cityops facts (incident id, revision, status, message kind and id, rule, value...).
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from sinks.alerts.payload import AlertPayload, as_utc, resolved_at

SdmCategory = Literal["traffic", "naturalDisaster", "weather", "environment", "health", "security", "agriculture"]

SEVERITY = {"info": "informational", "low": "low", "medium": "medium", "high": "high", "critical": "critical"}

_UNSAFE = re.compile(r"[^\w\-.:]")


class SdmMapping(BaseModel):
    """The Smart Data Models category (and optional subCategory) of an incident category."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    category: SdmCategory
    sub_category: str | None = None


def _default_categories() -> dict[str, SdmMapping]:
    return {
        "flood": SdmMapping(category="weather", sub_category="flood"),
        "air_quality": SdmMapping(category="environment", sub_category="airPollution"),
        "water_quality": SdmMapping(category="environment", sub_category="waterPollution"),
        "sanitation": SdmMapping(category="environment"),
        "noise": SdmMapping(category="environment"),
        "airspace": SdmMapping(category="security"),
        "traffic": SdmMapping(category="traffic"),
    }


class SdmOptions(BaseModel):
    """Category mapping and provider name for Smart Data Models alerts."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    categories: dict[str, SdmMapping] = Field(
        default_factory=_default_categories, description="Incident category -> SDM category and subCategory."
    )
    default_category: SdmCategory = Field(default="security", description="For incident categories not mapped.")
    data_provider: str = "cityops"


def _iso(value: datetime) -> str:
    return as_utc(value).isoformat().replace("+00:00", "Z")


def _safe(value: str) -> str:
    return _UNSAFE.sub("-", value)


def entity_id(incident_id: str) -> str:
    """The NGSI-LD entity id of an incident's alert."""
    return f"urn:ngsi-ld:Alert:cityops:{_safe(incident_id)}"


def to_sdm(payload: AlertPayload, options: SdmOptions | None = None) -> dict[str, Any]:
    """The key-values ``Alert`` entity for one alert message."""
    opts = options or SdmOptions()
    inc = payload.incident
    mapping = opts.categories.get(inc.category, SdmMapping(category=opts.default_category))
    ended = resolved_at(inc) if payload.kind == "resolved" else None
    where = inc.zone_name or inc.zone_id or inc.subject
    entity: dict[str, Any] = {
        "id": entity_id(inc.id),
        "type": "Alert",
        "category": mapping.category,
        "severity": SEVERITY[inc.severity],
        "location": {"type": "Point", "coordinates": [inc.lon, inc.lat]},
        "dateIssued": _iso(payload.sent),
        "validFrom": _iso(inc.first_event_at),
        "validTo": _iso(ended or inc.window_end),
        "name": inc.title,
        "description": f"{inc.title} ({where}): {inc.subject} {inc.value:g} {inc.op} {inc.threshold:g}",
        "alertSource": f"urn:ngsi-ld:cityops:rule:{_safe(inc.pack)}:{_safe(inc.rule_id)}",
        "dataProvider": opts.data_provider,
        "data": {
            "incidentId": inc.id,
            "revision": inc.revision,
            "status": inc.status,
            "messageKind": payload.kind,
            "messageId": payload.message_id,
            "pack": inc.pack,
            "ruleId": inc.rule_id,
            "category": inc.category,
            "zoneId": inc.zone_id,
            "value": inc.value,
            "threshold": inc.threshold,
            "op": inc.op,
            "evidenceCount": inc.evidence.count,
        },
    }
    if mapping.sub_category:
        entity["subCategory"] = mapping.sub_category
    return entity


def to_sdm_bytes(payload: AlertPayload, options: SdmOptions | None = None) -> bytes:
    """``to_sdm`` as compact UTF-8 JSON."""
    return json.dumps(to_sdm(payload, options), ensure_ascii=False, separators=(",", ":")).encode()
