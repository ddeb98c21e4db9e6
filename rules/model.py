"""Domain models: the events cityops consumes and the incidents it produces.

Every model here is a wire format. Events are frozen facts; timestamps are timezone-aware and
normalised to UTC. The JSON Schema of each model is generated into ``docs/schemas/``.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

Lon = Annotated[float, Field(ge=-180.0, le=180.0, description="Longitude in degrees, WGS-84.")]
Lat = Annotated[float, Field(ge=-90.0, le=90.0, description="Latitude in degrees, WGS-84.")]
Ident = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[^\s]+$")]
Label = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]

EVENT_SCHEMA_VERSION = 1
INCIDENT_SCHEMA_VERSION: Literal["1.0"] = "1.0"


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


class _Event(BaseModel):
    """Fields shared by every event kind."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    id: Ident = Field(description="Globally unique event id, chosen by the producer. Used for dedup.")
    ts: AwareDatetime = Field(description="Event time (when it happened), ISO 8601 with offset.")
    lon: Lon
    lat: Lat
    source: str | None = Field(default=None, max_length=128, description="Producing system.")

    @field_validator("ts")
    @classmethod
    def _to_utc(cls, value: datetime) -> datetime:
        return _utc(value)

    @property
    def subject(self) -> str:
        """The entity this event is about (sensor, report, tracked object)."""
        raise NotImplementedError


class Reading(_Event):
    """A measurement from a fixed IoT sensor."""

    kind: Literal["reading"] = "reading"
    sensor_id: Ident
    metric: Label = Field(description="What is measured, e.g. water_level_cm, pm25, noise_db.")
    value: float = Field(description="The measured value; must be finite.")
    unit: str | None = Field(default=None, max_length=32)

    @property
    def subject(self) -> str:
        return self.sensor_id


class Report(_Event):
    """A citizen report (311 / 12345 hotline style)."""

    kind: Literal["report"] = "report"
    category: Label = Field(description="Service category, e.g. illegal_dumping, waterlogging.")
    description: str | None = Field(default=None, max_length=4000)
    channel: str | None = Field(default=None, max_length=32, description="phone, app, web, ...")

    @property
    def subject(self) -> str:
        return self.id


class Track(_Event):
    """A position fix of a moving object (drone, vehicle)."""

    kind: Literal["track"] = "track"
    object_id: Ident
    object_type: Label = Field(description="drone, robotaxi, bus, ...")
    alt_m: float | None = Field(default=None, ge=-500.0, le=20000.0)
    speed_mps: float | None = Field(default=None, ge=0.0, le=1000.0)
    heading: float | None = Field(default=None, ge=0.0, le=360.0)

    @property
    def subject(self) -> str:
        return self.object_id


Event = Annotated[Reading | Report | Track, Field(discriminator="kind")]
EVENT_KINDS: tuple[str, ...] = ("reading", "report", "track")


def event_value(event: Reading | Report | Track, field: str) -> float | None:
    """Return a numeric field of an event, or None when the event has no such finite number."""
    raw: Any = getattr(event, field, None)
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        return None
    value = float(raw)
    return value if math.isfinite(value) else None


class Enriched(BaseModel):
    """An event plus the zones it falls in, per layer. This is what the detect stage consumes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event: Event
    zones: dict[str, list[str]] = Field(default_factory=dict, description="layer -> zone ids")

    def primary_zone(self, layer: str) -> str | None:
        ids = self.zones.get(layer)
        return ids[0] if ids else None


class Evidence(BaseModel):
    """What made an incident fire: bounded, deterministic list of contributing events."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_ids: list[str] = Field(description="Contributing event ids, earliest first (capped).")
    values: list[float] = Field(default_factory=list, description="Their values, same order.")
    count: int = Field(description="How many events contributed in total.")


class Incident(BaseModel):
    """A governance incident: the versioned payload on the alert topic and in the store.

    Compatibility rule: fields are only ever added in a minor version; removing or renaming a field
    needs a new major ``schema_version``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal["1.0"] = "1.0"
    id: str = Field(description="Deterministic: hash of pack, rule, subject and window.")
    revision: int = Field(ge=1, description="Grows with every event applied; the store keeps the highest.")
    pack: str
    pack_version: str
    rule_id: str
    rule_version: int
    kind: str = Field(description="Rule kind that fired: threshold, window, ...")
    title: str
    severity: Literal["info", "low", "medium", "high", "critical"]
    category: str
    status: Literal["open", "resolved"] = Field(
        default="open", description="The rule's view: resolved = condition cleared."
    )
    subject: str = Field(description="What the incident is about: a sensor, zone or object id.")
    layer: str | None = None
    zone_id: str | None = None
    zone_name: str | None = None
    window_start: datetime
    window_end: datetime
    first_event_at: datetime
    last_event_at: datetime
    lon: float
    lat: float
    value: float = Field(description="The observed value (max reading, or aggregate).")
    threshold: float
    op: str
    certainty: Literal["observed", "likely", "possible"] = Field(
        default="likely", description="observed = corroborated by independent sources (correlation rules)."
    )
    resolved_at: datetime | None = Field(default=None, description="Event time the condition cleared.")
    details: dict[str, Any] = Field(default_factory=dict, description="Kind-specific facts (nearest feature, ...).")
    evidence: Evidence


class DeadLetterRecord(BaseModel):
    """What the dead-letter topic carries: why a record failed, where it came from, its bytes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal["1.0"] = "1.0"
    reason: str
    kind: str = Field(description="bad_json, invalid, oversized, bad_envelope, late, poison")
    source: str = Field(description="topic[partition]@offset of the original message (#index in a batch).")
    original_b64: str = Field(description="The original bytes, base64 (the first 256 KiB when truncated).")
    original_size: int = Field(default=0, ge=0, description="Size of the original in bytes.")
    original_sha256: str = Field(default="", description="SHA-256 of the whole original, hex.")
    truncated: bool = Field(default=False, description="True when original_b64 holds only a prefix.")
    failed_at: AwareDatetime
