"""From an incident snapshot to the alert records to produce: routes, message kind, formats.

Pure apart from its memory of what it last published per incident (a bounded, least recently
used dict). Every record is keyed by the incident id. The memory is per process: after a restart,
a rebalance, or an eviction from the dict, the next message about a known incident is ``new``
again (with the same deterministic ids for a redelivered snapshot), so subscribers upsert by
incident id and drop duplicate message ids.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar
from zoneinfo import ZoneInfo

from rules.model import Incident
from sinks.alerts import cap, cloudevents, sdm
from sinks.alerts.payload import AlertPayload, MessageKind, Published, build_payload, message_kind, published
from sinks.alerts.routes import Format, Route, RouteTable

T = TypeVar("T")

logger = logging.getLogger(__name__)

Headers = list[tuple[str, bytes]]
#: (layer, zone id) -> exterior rings of (lon, lat), or None when unknown.
ZoneLookup = Callable[[str | None, str | None], Sequence[cap.Ring] | None]


@dataclass(frozen=True)
class FormatOptions:
    """Options of every output format, and the city's timezone (CAP times)."""

    tz: ZoneInfo = field(default_factory=lambda: ZoneInfo("Asia/Shanghai"))
    cloudevents: cloudevents.CloudEventsOptions = field(default_factory=cloudevents.CloudEventsOptions)
    cap: cap.CapOptions = field(default_factory=cap.CapOptions)
    sdm: sdm.SdmOptions = field(default_factory=sdm.SdmOptions)


@dataclass(frozen=True)
class AlertRecord:
    """One Kafka record to produce."""

    topic: str
    key: bytes
    headers: Headers
    value: bytes
    route: str
    format: Format


@dataclass(frozen=True)
class Publication:
    """What one incident snapshot turned into."""

    incident_id: str
    kind: MessageKind | None
    payload: AlertPayload | None
    previous: Published | None
    routes: tuple[str, ...] = ()
    records: tuple[AlertRecord, ...] = ()


def render(
    fmt: Format,
    payload: AlertPayload,
    previous: Published | None,
    options: FormatOptions,
    zone_rings: Sequence[cap.Ring] | None = None,
) -> tuple[Headers, bytes]:
    """Headers and value of ``payload`` in format ``fmt``."""
    if fmt == "json":
        return [("content-type", b"application/json")], payload.model_dump_json().encode()
    if fmt == "cloudevents-binary":
        return cloudevents.to_binary(payload, options.cloudevents)
    if fmt == "cloudevents-structured":
        return cloudevents.to_structured(payload, options.cloudevents)
    if fmt == "cap":
        xml = cap.to_cap(payload, previous, tz=options.tz, options=options.cap, zone_rings=zone_rings)
        return [("content-type", cap.CONTENT_TYPE.encode())], xml
    return [("content-type", b"application/json")], sdm.to_sdm_bytes(payload, options.sdm)


class AlertPublisher:
    """Turns incident snapshots into alert records for the matching routes."""

    def __init__(
        self,
        routes: RouteTable,
        options: FormatOptions | None = None,
        *,
        zones: ZoneLookup | None = None,
        max_tracked: int = 100_000,
    ) -> None:
        if max_tracked < 1:
            raise ValueError("max_tracked must be at least 1")
        self.routes = routes
        self.options = options or FormatOptions()
        self.zones = zones
        self.max_tracked = max_tracked
        self._last: OrderedDict[str, Published] = OrderedDict()

    def last(self, incident_id: str) -> Published | None:
        """What was last published for an incident (None when unknown or evicted)."""
        return self._last.get(incident_id)

    def restore(self, incident_id: str, state: Published | None) -> None:
        """Put back what ``last`` returned before a batch whose alerts were not delivered."""
        if state is None:
            self._last.pop(incident_id, None)
        else:
            self._remember(incident_id, state)

    def __len__(self) -> int:
        return len(self._last)

    def _remember(self, incident_id: str, state: Published) -> None:
        self._last[incident_id] = state
        self._last.move_to_end(incident_id)
        while len(self._last) > self.max_tracked:
            self._last.popitem(last=False)

    def publish(self, incident: Incident) -> Publication:
        """The records to produce for ``incident`` (none for a duplicate or stale snapshot)."""
        previous = self._last.get(incident.id)
        kind = message_kind(previous, incident)
        if kind is None:
            return Publication(incident.id, None, None, previous)
        payload = build_payload(kind, incident, previous)
        matched: list[Route] = self.routes.route(incident)
        records: list[AlertRecord] = []
        seen_topics: set[str] = set()
        rings: Sequence[cap.Ring] | None = None
        if self.zones is not None and any(r.format == "cap" for r in matched):
            rings = self.zones(incident.layer, incident.zone_id)
        key = incident.id.encode()
        for route in matched:
            topic = self.routes.topic(route)
            if topic in seen_topics:
                continue  # two routes to one topic: one record
            seen_topics.add(topic)
            headers, value = render(route.format, payload, previous, self.options, rings)
            records.append(AlertRecord(topic, key, headers, value, route.name, route.format))
        self._remember(incident.id, published(payload))
        return Publication(incident.id, kind, payload, previous, tuple(r.name for r in matched), tuple(records))


def coalesce(items: Sequence[tuple[T, Incident]]) -> list[tuple[T, Incident]]:
    """Collapse each run of an incident's consecutive snapshots with the same status to its last one.

    ``items`` are (tag, snapshot) in the order they were read. Per incident, a snapshot replaces the
    one kept before it when both have the same status and it is not older, so an open incident
    updated ten times in a batch gives one alert with the newest revision, while open → resolved →
    open keeps all three transitions. Each kept item takes the place of the last one it replaced;
    the order of one incident's items is kept.
    """
    kept: list[tuple[T, Incident] | None] = []
    latest: dict[str, int] = {}
    for tag, incident in items:
        at = latest.get(incident.id)
        if at is not None:
            before = kept[at]
            if before is not None and before[1].status == incident.status and incident.revision >= before[1].revision:
                kept[at] = None
        latest[incident.id] = len(kept)
        kept.append((tag, incident))
    return [item for item in kept if item is not None]
