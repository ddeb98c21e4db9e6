"""Status of an Open311 request, derived from the incidents it fed (read through Quack).

``open`` while no incident holds the report's event id as evidence, or while one is active;
``closed`` once every such incident is resolved or closed. Incidents keep at most 20 event ids
as evidence, so a report beyond the first 20 of a window reads as ``open``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import orjson

from rules.formats.open311 import RequestRecord, Service
from sinks.read import StoreReader

logger = logging.getLogger(__name__)

CLOSED = frozenset({"resolved", "closed"})

_EVENT_SQL = "SELECT id, ts, lon, lat, payload FROM events WHERE id = $id LIMIT 1"
_INCIDENTS_SQL = (
    "SELECT id, status, title, updated_at FROM incidents "
    "WHERE list_contains(json_extract_string(evidence, '$.event_ids[*]'), $id) "
    "ORDER BY updated_at DESC, id LIMIT 50"
)


@dataclass(frozen=True)
class RequestStatus:
    """Status of one request and why."""

    status: Literal["open", "closed"]
    notes: str | None
    updated: datetime | None


def derive_status(incidents: list[dict[str, object]]) -> RequestStatus:
    """``closed`` only when there are incidents and all of them are resolved or closed."""
    if not incidents:
        return RequestStatus("open", None, None)
    stamps = [i["updated_at"] for i in incidents if isinstance(i.get("updated_at"), datetime)]
    updated = max(stamps) if stamps else None  # type: ignore[type-var]
    notes = "; ".join(f"incident '{i['title']}' is {i['status']}" for i in incidents[:3])
    status: Literal["open", "closed"] = "closed" if all(str(i["status"]) in CLOSED for i in incidents) else "open"
    return RequestStatus(status, notes, updated if isinstance(updated, datetime) else None)


class StatusReader:
    """Looks requests and their incidents up in the store (blocking: call from a worker thread)."""

    def __init__(self, reader: StoreReader, services: dict[str, Service]) -> None:
        self.reader = reader
        self.services = services

    def incidents_for(self, event_id: str) -> list[dict[str, object]]:
        return self.reader.rows(_INCIDENTS_SQL, {"id": event_id})

    def status(self, event_id: str) -> RequestStatus:
        return derive_status(self.incidents_for(event_id))

    def request(self, event_id: str) -> RequestRecord | None:
        """The request as the store archived its event (None when the store has not seen it)."""
        rows = self.reader.rows(_EVENT_SQL, {"id": event_id})
        if not rows:
            return None
        row = rows[0]
        payload = orjson.loads(row["payload"]) if isinstance(row["payload"], str | bytes) else {}
        code = str(payload.get("category", ""))
        service = self.services.get(code)
        return RequestRecord(
            service_request_id=event_id,
            service_code=code,
            service_name=service.service_name if service else None,
            description=payload.get("description"),
            requested_datetime=row["ts"],
            lat=float(row["lat"]),
            long=float(row["lon"]),
        )
