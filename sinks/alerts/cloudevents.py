"""CloudEvents 1.0 over Kafka (Kafka protocol binding 1.0.2), binary and structured content modes.

- **Binary** (default): the value is the alert payload JSON (``content-type: application/json``);
  every other attribute is a ``ce_<name>`` header, UTF-8.
- **Structured**: the value is the whole event in the JSON event format
  (``content-type: application/cloudevents+json; charset=UTF-8``); the ``data`` member holds the
  alert payload.

Attributes: ``specversion`` 1.0; ``id`` = the deterministic message id (incident id, revision,
status), so a redelivery is idempotent for a subscriber that drops duplicate ``source`` + ``id``;
``source`` = ``{source_base}/packs/{pack}/rules/{rule_id}``; ``type`` =
``org.cityops.incident.{new|update|resolved}``; ``subject`` = the incident id; ``time`` = the
snapshot's event time (UTC, RFC 3339); ``dataschema`` = the alert payload schema URI;
``partitionkey`` (Partitioning extension) = the incident id, which is also the Kafka key.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from sinks.alerts.payload import AlertPayload

SPECVERSION = "1.0"
DATA_CONTENT_TYPE = "application/json"
STRUCTURED_CONTENT_TYPE = "application/cloudevents+json; charset=UTF-8"
TYPE_PREFIX = "org.cityops.incident"

Headers = list[tuple[str, bytes]]


class CloudEventsOptions(BaseModel):
    """How cityops names itself in CloudEvents attributes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source_base: str = Field(
        default="/cityops", min_length=1, description="URI-reference prefix of 'source' (e.g. your deployment's URN)."
    )
    dataschema: str = Field(
        default="urn:cityops:schema:alert-payload:1.0",
        min_length=1,
        description="Absolute URI of the data schema (docs/schemas/alert-payload.schema.json).",
    )


def rfc3339(payload: AlertPayload) -> str:
    """``sent`` as RFC 3339 UTC with a ``Z`` suffix."""
    return payload.sent.isoformat().replace("+00:00", "Z")


def attributes(payload: AlertPayload, options: CloudEventsOptions) -> dict[str, str]:
    """The context attributes of the event for ``payload`` (``datacontenttype`` included), as strings."""
    inc = payload.incident
    return {
        "specversion": SPECVERSION,
        "id": payload.message_id,
        "source": f"{options.source_base}/packs/{inc.pack}/rules/{inc.rule_id}",
        "type": f"{TYPE_PREFIX}.{payload.kind}",
        "subject": inc.id,
        "time": rfc3339(payload),
        "datacontenttype": DATA_CONTENT_TYPE,
        "dataschema": options.dataschema,
        "partitionkey": inc.id,
    }


def data_bytes(payload: AlertPayload) -> bytes:
    """The event data: the alert payload JSON, UTF-8."""
    return payload.model_dump_json().encode()


def to_binary(payload: AlertPayload, options: CloudEventsOptions | None = None) -> tuple[Headers, bytes]:
    """Binary content mode: ``ce_*`` headers plus ``content-type``, and the payload JSON as the value."""
    attrs = attributes(payload, options or CloudEventsOptions())
    headers: Headers = [("content-type", attrs.pop("datacontenttype").encode())]
    headers.extend((f"ce_{name}", value.encode("utf-8")) for name, value in attrs.items())
    return headers, data_bytes(payload)


def to_structured(payload: AlertPayload, options: CloudEventsOptions | None = None) -> tuple[Headers, bytes]:
    """Structured content mode: the JSON event format as the value, ``application/cloudevents+json``."""
    event: dict[str, Any] = dict(attributes(payload, options or CloudEventsOptions()))
    event["data"] = payload.model_dump(mode="json")
    value = json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode()
    return [("content-type", STRUCTURED_CONTENT_TYPE.encode())], value
