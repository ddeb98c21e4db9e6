"""Settings of the ingest gateways (composed into the root Settings as ``gateway``).

Every field is an environment variable: ``CITYOPS_GATEWAY__HTTP__PORT=8080``,
``CITYOPS_GATEWAY__HTTP__API_KEYS='["k1","k2"]'``, ``CITYOPS_GATEWAY__MQTT__TOPICS='["sensors/#"]'``.
"""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import BaseModel, Field, SecretStr

from rules.crs import CRS
from rules.formats.mapping import FieldMapping
from rules.formats.mqtt_payload import MqttFormat
from rules.formats.open311 import ServiceSpec

__all__ = ["GatewaySettings", "HttpGatewaySettings", "MqttGatewaySettings", "SourceCRS", "is_loopback"]

#: Background categories the demo scenario reports, offered as Open311 services besides the pack's.
DEFAULT_SERVICES = [
    ServiceSpec(code="noise", name="Noise", group="environment"),
    ServiceSpec(code="road_damage", name="Road damage", group="street"),
    ServiceSpec(code="streetlight", name="Streetlight out", group="street"),
    ServiceSpec(code="illegal_parking", name="Illegal parking", group="traffic"),
]


class SourceCRS(BaseModel):
    """The coordinate system each source declares; a payload may override it (``crs`` field/header)."""

    open311: CRS = CRS.WGS84
    sensorthings: CRS = CRS.WGS84
    cloudevents: CRS = CRS.WGS84
    mqtt: CRS = CRS.WGS84


class HttpGatewaySettings(BaseModel):
    """The HTTP gateway: Open311 GeoReport v2, SensorThings Observations and CloudEvents."""

    host: str = Field(default="127.0.0.1", description="Address to bind; non-loopback needs api_keys.")
    port: int = Field(default=8080, ge=0, le=65535, description="0 picks a free port.")
    api_keys: list[SecretStr] = Field(
        default_factory=list, description="Accepted api_key values; empty = open (loopback only)."
    )
    rate_per_s: float = Field(default=50.0, gt=0, description="Token-bucket refill per API key (or client address).")
    rate_burst: int = Field(default=200, ge=1, description="Token-bucket size per key.")
    max_payload_bytes: int = Field(default=1_048_576, ge=1024, description="Larger request bodies get 413.")
    max_events_per_request: int = Field(default=5000, ge=1, description="Larger batches get 413.")
    services: list[ServiceSpec] = Field(
        default_factory=lambda: list(DEFAULT_SERVICES),
        description="Open311 services offered besides the rule pack's report categories.",
    )
    jurisdiction_id: str | None = Field(default=None, description="When set, other jurisdiction_id values get 404.")


class MqttGatewaySettings(BaseModel):
    """The MQTT bridge: topics on an MQTT broker -> envelopes on the raw Kafka topic."""

    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    client_id: str = Field(default="cityops-mqtt-bridge", description="Fixed, so that the session survives restarts.")
    username: str | None = None
    password: SecretStr | None = None
    topics: list[str] = Field(
        default_factory=lambda: ["cityops/events/#", "v1.1/#", "sensors/#"],
        description="Topic filters to subscribe to.",
    )
    qos: Literal[0, 1] = Field(default=1, description="1 = at least once (acknowledged after the Kafka ack).")
    formats: dict[str, MqttFormat] = Field(
        default_factory=lambda: {  # type: ignore[arg-type]
            "cityops/events/#": "cityops",
            "v1.1/#": "sensorthings",
            "sensors/#": "fields",
        },
        description="Payload format per topic filter (first match wins; unmatched topics: auto-detect).",
    )
    mapping: FieldMapping = Field(default_factory=FieldMapping, description="JSON paths for the 'fields' format.")
    batch_max: int = Field(default=500, ge=1, description="Events per Kafka envelope.")
    batch_linger_s: float = Field(default=0.05, ge=0, description="How long to wait to fill a batch.")
    max_unacked: int = Field(default=1000, ge=1, description="MQTT messages awaiting Kafka; beyond, stop reading.")
    keepalive_s: int = Field(default=30, ge=5)
    reconnect_max_s: float = Field(default=10.0, gt=0, description="Longest wait between reconnect attempts.")


class GatewaySettings(BaseModel):
    """Ingest gateways: HTTP (Open311, SensorThings, CloudEvents) and the MQTT bridge."""

    http: HttpGatewaySettings = Field(default_factory=HttpGatewaySettings)
    mqtt: MqttGatewaySettings = Field(default_factory=MqttGatewaySettings)
    crs: SourceCRS = Field(default_factory=SourceCRS)
    sensorthings_metrics: dict[str, str] = Field(
        default_factory=lambda: {
            "water level": "water_level_cm",
            "water_level": "water_level_cm",
            "pm2.5": "pm25",
            "pm25": "pm25",
            "noise": "noise_db",
        },
        description="Datastream or ObservedProperty name (lower case) -> metric; others are slugified.",
    )
    datastream_cache_size: int = Field(default=10_000, ge=1, description="Datastream locations kept (LRU).")
    max_in_flight: int = Field(default=1000, ge=1, description="Kafka records awaiting an ack; beyond, 503.")
    ack_timeout_s: float = Field(default=10.0, gt=0, description="Longest wait for a Kafka ack before 503.")
    retry_after_s: int = Field(default=1, ge=1, description="Retry-After sent with 503 and as the 429 floor.")
    linger_ms: int = Field(default=2, ge=0, description="Kafka producer linger.")
    envelope_max_bytes: int = Field(
        default=262_144,
        ge=1024,
        description="Largest raw-topic envelope a gateway sends; a larger batch is split. Well under the worker's "
        "max_message_bytes: the worker's enriched envelope of the same events is larger (their zones), and one "
        "over the producer's limit is dead-lettered whole.",
    )


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
