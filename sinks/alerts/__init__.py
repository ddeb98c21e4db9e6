"""Alerts for downstream systems: routes, payload, formats (JSON, CloudEvents, CAP, SDM) and webhooks.

Pure and synchronous; stands on ``rules`` only. The process that runs it is ``streams.alerting``.
"""

from sinks.alerts.cap import CapOptions, to_cap
from sinks.alerts.cloudevents import CloudEventsOptions, to_binary, to_structured
from sinks.alerts.errors import AlertError, FormatError, RouteError
from sinks.alerts.payload import (
    ALERT_SCHEMA_VERSION,
    AlertPayload,
    MessageKind,
    Published,
    build_payload,
    message_id,
    message_kind,
)
from sinks.alerts.publisher import AlertPublisher, AlertRecord, FormatOptions, Publication
from sinks.alerts.routes import FORMATS, Format, Route, RouteTable, default_routes
from sinks.alerts.sdm import SdmOptions, to_sdm
from sinks.alerts.settings import AlertsSettings
from sinks.alerts.webhook import Delivery, EndpointCounters, WebhookDeadLetter, WebhookEndpoint, WebhookSink
from sinks.alerts.zones import ZoneOutlines

__all__ = [
    "ALERT_SCHEMA_VERSION",
    "FORMATS",
    "AlertError",
    "AlertPayload",
    "AlertPublisher",
    "AlertRecord",
    "AlertsSettings",
    "CapOptions",
    "CloudEventsOptions",
    "Delivery",
    "EndpointCounters",
    "Format",
    "FormatError",
    "FormatOptions",
    "MessageKind",
    "Publication",
    "Published",
    "Route",
    "RouteError",
    "RouteTable",
    "SdmOptions",
    "WebhookDeadLetter",
    "WebhookEndpoint",
    "WebhookSink",
    "ZoneOutlines",
    "build_payload",
    "default_routes",
    "message_id",
    "message_kind",
    "to_binary",
    "to_cap",
    "to_sdm",
    "to_structured",
]
