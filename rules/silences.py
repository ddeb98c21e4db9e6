"""Geo-scoped silences and maintenance windows.

A silence is a zone (or polygon) plus a time range plus a rule filter. It suppresses
notifications for matching incidents; the store still records and counts them (``silenced``).
"""

from __future__ import annotations

import fnmatch
from datetime import datetime
from functools import cached_property
from typing import Literal

import shapely
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from rules.model import Incident


class Silence(BaseModel):
    """A silence, as sent on the silences topic (compacted, keyed by silence id)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal["1.0"] = "1.0"
    silence_id: str = Field(min_length=4, max_length=64)
    starts_at: AwareDatetime
    ends_at: AwareDatetime
    zones: list[str] = Field(default_factory=list, description="Zone ids; empty with no polygon means everywhere.")
    polygon_wkt: str | None = Field(default=None, description="A WGS-84 polygon in WKT, e.g. along a street.")
    rules: list[str] = Field(default_factory=lambda: ["*"], description="Rule id globs, e.g. 'flood.*'.")
    created_by: str = Field(min_length=1, max_length=128)
    reason: str = Field(default="", max_length=2000)
    expired: bool = Field(default=False, description="True once expired by an operator before ends_at.")

    @model_validator(mode="after")
    def _check(self) -> Silence:
        if self.ends_at <= self.starts_at:
            raise ValueError("a silence must end after it starts")
        if self.polygon_wkt is not None:
            geom = shapely.from_wkt(self.polygon_wkt)
            if geom.geom_type not in ("Polygon", "MultiPolygon") or not geom.is_valid:
                raise ValueError("polygon_wkt must be a valid Polygon or MultiPolygon")
        return self

    @cached_property
    def _geom(self) -> shapely.Geometry | None:
        return shapely.from_wkt(self.polygon_wkt) if self.polygon_wkt else None

    def active_at(self, at: datetime) -> bool:
        return not self.expired and self.starts_at <= at < self.ends_at

    def matches(self, incident: Incident) -> bool:
        """Whether this silence covers the incident (its first event time, place and rule)."""
        if not self.active_at(incident.first_event_at):
            return False
        if not any(fnmatch.fnmatchcase(incident.rule_id, pattern) for pattern in self.rules):
            return False
        if self.zones and incident.zone_id not in self.zones:
            return False
        geom = self._geom
        return geom is None or bool(shapely.contains_xy(geom, incident.lon, incident.lat))


def silenced_by(incident: Incident, silences: list[Silence]) -> list[str]:
    """Ids of the silences covering an incident."""
    return [s.silence_id for s in silences if s.matches(incident)]
