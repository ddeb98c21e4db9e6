"""Open311 GeoReport v2: services from the rule pack, service requests in, request status out.

Field names follow the spec (``service_code``, ``lat``/``long``, ``address_string``,
``description``, ``media_url``, ``requested_datetime``). Accepted requests become ``report``
events whose ``category`` is the service code. Personal fields (email, phone, names, device and
account ids) are never copied into events.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import shapely
from pydantic import BaseModel, ConfigDict, Field

from rules.crs import CRS
from rules.decode import Rejected
from rules.formats.mapping import parse_crs, snippet, to_wgs84_records, validate_records
from rules.geo import Layer
from rules.model import Label, Report
from rules.pack import Pack

__all__ = [
    "Gazetteer",
    "Open311Context",
    "RequestRecord",
    "Service",
    "ServiceSpec",
    "error_body",
    "parse_service_request",
    "post_response",
    "request_view",
    "service_definition",
    "services_from_pack",
]

MAX_DESCRIPTION = 4000
MAX_URL = 2048
_URL = re.compile(r"^https?://[^\s/$.?#][^\s]*$", re.IGNORECASE)


class ServiceSpec(BaseModel):
    """A configured Open311 service (besides the rule pack's report categories)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    code: Label = Field(description="service_code = the report category, e.g. noise.")
    name: str = Field(min_length=1, max_length=200)
    description: str | None = None
    group: str | None = None
    keywords: str | None = None


class Service(BaseModel):
    """One entry of GET /services.json (GeoReport v2 ``service``)."""

    model_config = ConfigDict(frozen=True)

    service_code: str
    service_name: str
    description: str | None = None
    metadata: bool = False
    type: Literal["realtime", "batch", "blackbox"] = "realtime"
    keywords: str | None = None
    group: str | None = None


def _humanise(code: str) -> str:
    return code.replace("_", " ").replace("-", " ").strip().capitalize() or code


def services_from_pack(spec: Pack, extra: Sequence[ServiceSpec] = ()) -> list[Service]:
    """The services: every ``match.category`` of the pack's report rules, then ``extra`` ones."""
    titles: dict[str, list[str]] = {}
    groups: dict[str, str] = {}
    for rule in spec.rules:
        match = getattr(rule, "match", None)
        if match is None or getattr(match, "kind", None) not in (None, "report"):
            continue
        wanted = [getattr(match, "category", None), *(getattr(match, "categories", None) or [])]
        for category in wanted:
            if category:
                titles.setdefault(category, []).append(rule.title)
                groups.setdefault(category, rule.category)
    out = [
        Service(
            service_code=code,
            service_name=_humanise(code),
            description="Watched by: " + "; ".join(titles[code]),
            group=groups[code],
            keywords=code.replace("_", " "),
        )
        for code in titles
    ]
    for item in extra:
        if item.code not in titles:
            out.append(
                Service(
                    service_code=item.code,
                    service_name=item.name,
                    description=item.description,
                    group=item.group,
                    keywords=item.keywords,
                )
            )
            titles[item.code] = []
    return out


def service_definition(service: Service) -> dict[str, Any]:
    """GET /services/{code}.json: no extra attributes are needed for any cityops service."""
    return {"service_code": service.service_code, "attributes": []}


class Gazetteer:
    """Places an ``address_string`` that names a zone (e.g. a district) at the zone's inner point.

    There is no street geocoder: an address that names no known zone is refused with a reason.
    """

    def __init__(self, places: Mapping[str, tuple[str, float, float]]) -> None:
        # alias (lower case) -> (zone id, lon, lat); longest aliases are tried first
        self._aliases = sorted(places.items(), key=lambda kv: -len(kv[0]))

    @classmethod
    def from_layer(cls, layer: Layer) -> Gazetteer:
        places: dict[str, tuple[str, float, float]] = {}
        for zid, name, props, geom in zip(layer.ids, layer.names, layer.properties, layer.geoms, strict=True):
            point = shapely.point_on_surface(geom)
            entry = (zid, float(point.x), float(point.y))
            aliases = {zid, name, str(props.get("name_en") or "")}
            if len(name) >= 3 and name[-1] in "区县市":
                aliases.add(name[:-1])
            for alias in aliases:
                if alias:
                    places[alias.lower()] = entry
        return cls(places)

    def place(self, address: str) -> tuple[str, float, float] | None:
        """(zone id, lon, lat) of the longest zone name found in the address, in WGS-84."""
        text = address.lower()
        for alias, entry in self._aliases:
            if alias in text:
                return entry
        return None

    @property
    def names(self) -> list[str]:
        return sorted({alias for alias, _ in self._aliases})


@dataclass(frozen=True)
class Open311Context:
    """What validating a request needs besides the request."""

    services: Mapping[str, Service]
    default_crs: CRS = CRS.WGS84
    gazetteer: Gazetteer | None = None
    jurisdiction_id: str | None = None


class RequestRecord(BaseModel):
    """What the gateway remembers of an accepted request, to answer GET /requests/{id}.json."""

    model_config = ConfigDict(frozen=True)

    service_request_id: str
    service_code: str
    service_name: str | None = None
    description: str | None = None
    requested_datetime: datetime
    lat: float
    long: float
    address: str | None = None
    media_url: str | None = None


def _text(fields: Mapping[str, Any], name: str, problems: list[str], *, limit: int = 1000) -> str | None:
    value = fields.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        problems.append(f"{name}: must be a string, got {type(value).__name__}")
        return None
    text = str(value)
    if len(text) > limit:
        problems.append(f"{name}: at most {limit} characters, got {len(text)}")
        return None
    return text


def _number(fields: Mapping[str, Any], name: str, bound: float, problems: list[str]) -> float | None:
    value = fields.get(name)
    if value is None or value == "":
        return None
    number: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str) and len(value) <= 40:
        try:
            number = float(value.strip())
        except ValueError:
            number = None
    if number is None or not math.isfinite(number) or not -bound <= number <= bound:
        problems.append(f"{name}: must be a number between -{bound:g} and {bound:g}, got {snippet(value)}")
        return None
    return number


def _when(fields: Mapping[str, Any], received_at: datetime, problems: list[str]) -> datetime:
    value = fields.get("requested_datetime")
    if value is None or value == "":
        return received_at
    if not isinstance(value, str) or len(value) > 64:
        problems.append(f"requested_datetime: must be an ISO 8601 string, got {snippet(value)}")
        return received_at
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00") if value.endswith("Z") else value)
    except ValueError:
        problems.append(f"requested_datetime: not an ISO 8601 date-time: {snippet(value)}")
        return received_at
    if when.tzinfo is None:
        problems.append(f"requested_datetime: must include a timezone (Z or +08:00), got {snippet(value)}")
        return received_at
    return when


def parse_service_request(
    fields: Mapping[str, Any],
    ctx: Open311Context,
    *,
    request_id: str,
    received_at: datetime,
    raw: bytes,
    crs_override: str | None = None,
) -> tuple[Report, RequestRecord] | Rejected:
    """Validate a POST /requests.json body (form fields or a JSON object) into a report event.

    Returns the event and what to remember for GET, or a Rejected whose ``kind`` is
    ``unknown_service`` (HTTP 404) or ``invalid`` (HTTP 400) and whose reason lists every problem.
    """
    problems: list[str] = []
    if ctx.jurisdiction_id is not None:
        jurisdiction = _text(fields, "jurisdiction_id", problems)
        if jurisdiction is not None and jurisdiction != ctx.jurisdiction_id:
            return Rejected(f"jurisdiction_id {snippet(jurisdiction)} was not found", "unknown_service", raw)
    code = _text(fields, "service_code", problems, limit=64)
    if code is None and not problems:
        return Rejected("service_code was not provided", "invalid", raw)
    if code is not None and code not in ctx.services:
        known = ", ".join(sorted(ctx.services))
        return Rejected(f"service_code {snippet(code)} was not found (known: {known})", "unknown_service", raw)
    lat = _number(fields, "lat", 90, problems)
    lon = _number(fields, "long", 180, problems)
    address = _text(fields, "address_string", problems)
    address_id = _text(fields, "address_id", problems)
    description = _text(fields, "description", problems, limit=MAX_DESCRIPTION)
    media_url = _text(fields, "media_url", problems, limit=MAX_URL)
    if media_url is not None and not _URL.match(media_url):
        problems.append(f"media_url: must be an http(s) URL, got {snippet(media_url)}")
    when = _when(fields, received_at, problems)
    crs = parse_crs(fields.get("crs") if fields.get("crs") not in (None, "") else crs_override, ctx.default_crs)
    if not isinstance(crs, CRS):
        problems.append(crs)
        crs = CRS.WGS84
    if (lat is None) != (lon is None) and not any(p.startswith(("lat", "long")) for p in problems):
        problems.append("lat and long must be sent together")
    elif lat is None and lon is None and not any(p.startswith(("lat", "long")) for p in problems):
        placed = ctx.gazetteer.place(address) if (address and ctx.gazetteer) else None
        if placed is not None:
            _, lon, lat = placed
            crs = CRS.WGS84  # the gazetteer's points are WGS-84 already
        elif address:
            known = ", ".join(ctx.gazetteer.names[:20]) if ctx.gazetteer else "none"
            problems.append(
                f"address_string {snippet(address)} names no known district (known: {known}); send lat and long"
            )
        elif address_id:
            problems.append("address_id cannot be resolved here: send lat and long (or address_string)")
        else:
            problems.append("a location is required: lat and long, or address_string")
    if problems or lat is None or lon is None or code is None:
        return Rejected("; ".join(problems) or "invalid request", "invalid", raw)
    record: dict[str, Any] = {
        "kind": "report",
        "id": request_id,
        "ts": when,
        "lon": lon,
        "lat": lat,
        "category": code,
        "channel": "open311",
        "source": "open311",
    }
    if description is not None:
        record["description"] = description
    to_wgs84_records([record], [crs])
    decoded = validate_records([(None, record, None)], raw)
    if decoded.rejected:
        return decoded.rejected[0]
    event = decoded.events[0]
    assert isinstance(event, Report)
    remembered = RequestRecord(
        service_request_id=request_id,
        service_code=code,
        service_name=ctx.services[code].service_name,
        description=description,
        requested_datetime=when,
        lat=event.lat,
        long=event.lon,
        address=address,
        media_url=media_url,
    )
    return event, remembered


def post_response(request_id: str) -> list[dict[str, Any]]:
    """Body of a successful POST /requests.json."""
    return [
        {
            "service_request_id": request_id,
            "service_notice": "Received; the operations centre will review it.",
        }
    ]


def request_view(
    record: RequestRecord, status: Literal["open", "closed"], *, status_notes: str | None, updated: datetime | None
) -> dict[str, Any]:
    """One ``request`` of GET /requests/{id}.json (coordinates in WGS-84, as the spec says)."""
    return {
        "service_request_id": record.service_request_id,
        "status": status,
        "status_notes": status_notes,
        "service_name": record.service_name,
        "service_code": record.service_code,
        "description": record.description,
        "agency_responsible": None,
        "service_notice": None,
        "requested_datetime": record.requested_datetime.isoformat(),
        "updated_datetime": (updated or record.requested_datetime).isoformat(),
        "expected_datetime": None,
        "address": record.address,
        "address_id": None,
        "zipcode": None,
        "lat": record.lat,
        "long": record.long,
        "media_url": record.media_url,
    }


def error_body(code: int, description: str) -> list[dict[str, Any]]:
    """The GeoReport v2 error format: a list of ``{"code", "description"}``."""
    return [{"code": code, "description": description}]
