"""Settings section of the alert sinks (composed into the root Settings as ``alerts``).

Every field is an environment variable, e.g.
``CITYOPS_ALERTS__ROUTES='[{"name": "all", "topic": "{prefix}.alerts.all", "format": "json"}]'``,
``CITYOPS_ALERTS__TIMEZONE=Asia/Shanghai``, ``CITYOPS_ALERTS__CAP__SENDER=ops@city.example``.
"""

from __future__ import annotations

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, Field, field_validator

from sinks.alerts.cap import CapOptions
from sinks.alerts.cloudevents import CloudEventsOptions
from sinks.alerts.publisher import FormatOptions
from sinks.alerts.routes import Route, default_routes
from sinks.alerts.sdm import SdmOptions
from sinks.alerts.webhook import WebhookEndpoint


class AlertsSettings(BaseModel):
    """Alert routes, formats and webhooks (the ``cityops alerts`` process)."""

    routes: list[Route] = Field(
        default_factory=default_routes, description="Alert routes (JSON list); see docs/alerts.md."
    )
    webhooks: list[WebhookEndpoint] = Field(default_factory=list, description="Webhook endpoints (JSON list).")
    timezone: str = Field(default="Asia/Shanghai", description="City timezone for CAP times.")
    cloudevents: CloudEventsOptions = Field(default_factory=CloudEventsOptions)
    cap: CapOptions = Field(default_factory=CapOptions)
    sdm: SdmOptions = Field(default_factory=SdmOptions)
    deadletter_topic: str = Field(
        default="{prefix}.deadletter", description="Where undeliverable webhooks and unreadable incidents go."
    )
    max_tracked_incidents: int = Field(
        default=100_000, ge=1, description="Incidents whose last alert is remembered (LRU)."
    )
    zone_outlines: bool = Field(default=True, description="CAP areas use the pack's zone polygons when known.")
    batch_max_records: int = Field(default=500, ge=1)
    coalesce: bool = Field(
        default=True,
        description="Within one polled batch, publish only the last of consecutive snapshots of an incident "
        "with the same status (subscribers upsert by id and keep the highest revision); a backlog then shrinks "
        "as it grows. Off: one alert per revision.",
    )
    poll_timeout_ms: int = Field(default=200, ge=1)
    producer_batch_bytes: int = Field(
        default=262_144,
        ge=1,
        description="Producer batch size (bytes) of the alerts process. Alert topics are read from committed "
        "offsets, never from the end offsets that Tansu gets wrong for batched records, so they are produced in "
        "batches (unlike kafka.producer_max_batch_size); a size of 1 costs one broker round trip per alert, "
        "about 600 alerts/s.",
    )
    stats_interval_s: float = Field(default=30.0, gt=0, description="How often counters are logged.")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown timezone {value!r} (use an IANA name such as Asia/Shanghai)") from exc
        return value

    def format_options(self) -> FormatOptions:
        return FormatOptions(ZoneInfo(self.timezone), self.cloudevents, self.cap, self.sdm)

    def deadletter_topic_name(self, prefix: str) -> str:
        return self.deadletter_topic.replace("{prefix}", prefix)
