"""The alert payload: an incident snapshot plus the kind of message it is for a subscriber.

An alert is what downstream systems receive on the route topics and webhooks. It wraps the
incident (``rules.model.Incident``, unchanged) in a small envelope that says whether this is the
first message about the incident (``new``), a later one (``update``: new evidence, an escalation or
a state change) or its end (``resolved``). The incident is nested, not flattened, because the
incident already has a field called ``kind`` (the rule kind) and keeps its own ``schema_version``.

Compatibility rule (``schema_version`` is ``MAJOR.MINOR``, independent of the incident's):

- A minor version only adds fields, to the envelope or to the nested incident. Consumers must
  ignore fields they do not know, and must treat a ``kind`` they do not know as ``update``.
- Removing or renaming a field, changing its type or meaning, or a new major version of the
  nested incident needs a new major ``schema_version``. A field is never removed without one.

Message ids are deterministic per ``(incident id, revision, status)``: a redelivered snapshot gives
the same id (and the same bytes), so subscribers can drop duplicates by id.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from rules.lifecycle import ACTIVE, STATUSES
from rules.model import Incident

ALERT_SCHEMA_VERSION: Literal["1.0"] = "1.0"

MessageKind = Literal["new", "update", "resolved"]
MESSAGE_KINDS: tuple[MessageKind, ...] = ("new", "update", "resolved")

#: Statuses after which an incident needs no more action: ``resolved`` and ``closed``.
RESOLVED_STATUSES: frozenset[str] = frozenset(STATUSES) - ACTIVE


def as_utc(value: datetime) -> datetime:
    """An aware UTC datetime (naive values are taken as UTC, which is what the engine writes)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def is_resolved(status: str) -> bool:
    """True for a status after which the incident needs no more action."""
    return status in RESOLVED_STATUSES


def message_id(incident_id: str, revision: int, status: str) -> str:
    """The deterministic id of the message for one snapshot, e.g. ``878f8b16f83bb13b30a31d48.r2.open``.

    Used as the CloudEvents ``id``, the CAP ``identifier`` and the webhook idempotency key. It has no
    spaces, commas, ``<`` or ``&`` (CAP forbids them in identifiers).
    """
    return f"{incident_id}.r{revision}.{status}"


def resolved_at(incident: Incident) -> datetime | None:
    """When the incident's condition cleared, if the incident model carries it (``resolved_at``)."""
    value = getattr(incident, "resolved_at", None)
    return value if isinstance(value, datetime) else None


def sent_at(incident: Incident) -> datetime:
    """The time of a snapshot: the event time it describes, never the wall clock.

    ``resolved_at`` for a resolved incident when known, else ``last_event_at``. Using event time
    keeps a redelivered message byte-identical, which CAP needs (a message is identified by
    sender, identifier and sent together).
    """
    when = resolved_at(incident) if is_resolved(incident.status) else None
    return as_utc(when or incident.last_event_at)


@dataclass(frozen=True)
class Published:
    """What the publisher last sent for one incident: enough to decide the next kind and to reference it."""

    revision: int
    status: str
    message_id: str
    sent: datetime
    kind: MessageKind

    @property
    def resolved(self) -> bool:
        return is_resolved(self.status)


def message_kind(previous: Published | None, incident: Incident) -> MessageKind | None:
    """The kind of message to send for ``incident``, or None when there is nothing new to say.

    - Nothing published yet: ``resolved`` if the incident is already resolved, else ``new``.
    - An older revision than the one published (a stale or merged input): None.
    - The same revision and status (a redelivery): None.
    - Resolved now, active before: ``resolved``; resolved before and still (e.g. closed): None.
    - Active now, resolved before (reopened, or the rule fired again): ``new``.
    - Active before and now, with a higher revision or another status: ``update``.

    A changed severity without a new revision is not detected: escalations come with a revision.
    """
    resolved = is_resolved(incident.status)
    if previous is None:
        return "resolved" if resolved else "new"
    if incident.revision < previous.revision:
        return None
    if incident.revision == previous.revision and incident.status == previous.status:
        return None
    if resolved:
        return None if previous.resolved else "resolved"
    if previous.resolved:
        return "new"
    return "update"


class AlertPayload(BaseModel):
    """One alert message: the ``json`` route format, the CloudEvents ``data`` and the webhook body."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal["1.0"] = Field(
        default=ALERT_SCHEMA_VERSION, description="Version of the alert envelope, MAJOR.MINOR (see docs/alerts.md)."
    )
    kind: MessageKind = Field(
        description="new: first message about an active incident; update: new evidence, escalation or state "
        "change; resolved: the incident needs no more action. Treat an unknown kind as update."
    )
    message_id: str = Field(description="Deterministic per (incident id, revision, status): drop duplicates by it.")
    previous_message_id: str | None = Field(
        default=None, description="The previous message about this incident, when the publisher knows it."
    )
    sent: AwareDatetime = Field(description="Event time of this snapshot (UTC), not the wall clock.")
    incident: Incident = Field(description="The incident snapshot, exactly as on the incidents topic.")


def build_payload(kind: MessageKind, incident: Incident, previous: Published | None) -> AlertPayload:
    """The alert for ``incident`` given the previous message about it."""
    return AlertPayload(
        kind=kind,
        message_id=message_id(incident.id, incident.revision, incident.status),
        previous_message_id=previous.message_id if previous is not None else None,
        sent=sent_at(incident),
        incident=incident,
    )


def published(payload: AlertPayload) -> Published:
    """The state to remember after sending ``payload``."""
    inc = payload.incident
    return Published(inc.revision, inc.status, payload.message_id, payload.sent, payload.kind)
