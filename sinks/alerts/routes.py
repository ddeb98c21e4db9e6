"""Alert routes: which incidents go to which topic, in which format.

A route matches on category, minimum severity, zone ids and pack; an empty list matches anything.
Every record's key is the incident id, so all messages about one incident land on one partition of
each route topic, in order.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from rules.model import Incident
from sinks.alerts.errors import RouteError

logger = logging.getLogger(__name__)

Format = Literal["json", "cloudevents-binary", "cloudevents-structured", "cap", "sdm-alert"]
FORMATS: tuple[Format, ...] = ("json", "cloudevents-binary", "cloudevents-structured", "cap", "sdm-alert")
Severity = Literal["info", "low", "medium", "high", "critical"]
SEVERITY_RANK: dict[str, int] = {"info": 0, "low": 1, "medium": 2, "high": 3, "critical": 4}

_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


class Route(BaseModel):
    """One alert route: a filter, a topic and a format."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="Unique name, used in logs and counters.")
    topic: str = Field(
        description="Topic name; '{prefix}' is replaced by the Kafka topic prefix, e.g. '{prefix}.alerts.flood'."
    )
    format: Format = Field(
        default="json", description="json, cloudevents-binary, cloudevents-structured, cap or sdm-alert."
    )
    categories: list[str] = Field(default_factory=list, description="Incident categories; empty = any.")
    min_severity: Severity | None = Field(default=None, description="Lowest severity that matches; null = any.")
    zone_ids: list[str] = Field(default_factory=list, description="Zone ids (incident zone_id); empty = any.")
    packs: list[str] = Field(default_factory=list, description="Rule packs; empty = any.")
    enabled: bool = True

    @field_validator("topic")
    @classmethod
    def _topic_chars(cls, value: str) -> str:
        if not _TOPIC.match(value.replace("{prefix}", "p")):
            raise ValueError(f"topic {value!r} may only use letters, digits, '.', '_', '-' and '{{prefix}}'")
        return value

    def topic_name(self, prefix: str) -> str:
        """The topic with the Kafka prefix filled in."""
        return self.topic.replace("{prefix}", prefix)

    def matches(self, incident: Incident) -> bool:
        """True when every non-empty filter of this route accepts the incident (disabled routes never match)."""
        if not self.enabled:
            return False
        if self.categories and incident.category not in self.categories:
            return False
        if self.min_severity is not None and SEVERITY_RANK[incident.severity] < SEVERITY_RANK[self.min_severity]:
            return False
        if self.zone_ids and incident.zone_id not in self.zone_ids:
            return False
        return not (self.packs and incident.pack not in self.packs)


def default_routes() -> list[Route]:
    """Every incident as JSON, floods as binary CloudEvents, high and critical as CAP."""
    return [
        Route(name="all", topic="{prefix}.alerts.all", format="json"),
        Route(name="flood", topic="{prefix}.alerts.flood", format="cloudevents-binary", categories=["flood"]),
        Route(name="critical", topic="{prefix}.alerts.critical", format="cap", min_severity="high"),
    ]


class RouteTable:
    """The configured routes, with topic names resolved for one topic prefix."""

    def __init__(self, routes: Iterable[Route], prefix: str) -> None:
        self.routes: tuple[Route, ...] = tuple(routes)
        self.prefix = prefix
        names = [r.name for r in self.routes]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise RouteError(f"alert routes: duplicate route names {dupes}")
        self.topics: dict[str, str] = {r.name: r.topic_name(prefix) for r in self.routes}
        formats_by_topic: dict[str, set[str]] = {}
        for r in self.routes:
            formats_by_topic.setdefault(self.topics[r.name], set()).add(r.format)
        mixed = sorted(t for t, f in formats_by_topic.items() if len(f) > 1)
        if mixed:
            raise RouteError(f"alert routes: topic(s) {mixed} would carry more than one format")

    def route(self, incident: Incident) -> list[Route]:
        """The enabled routes whose filters accept ``incident``, in configuration order."""
        return [r for r in self.routes if r.matches(incident)]

    def topic(self, route: Route) -> str:
        return self.topics[route.name]

    def enabled_topics(self) -> list[str]:
        """Distinct topics of the enabled routes, in configuration order."""
        return list(dict.fromkeys(self.topics[r.name] for r in self.routes if r.enabled))

    def names(self) -> Sequence[str]:
        return [r.name for r in self.routes]
