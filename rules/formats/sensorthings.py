"""OGC SensorThings API v1.1 Observations -> ``reading`` events.

An Observation names its Datastream (by ``@iot.id``, or inline with its Thing, Locations and
ObservedProperty) and its FeatureOfInterest (by id, or inline with a GeoJSON ``feature``). The
position comes from the FeatureOfInterest, else from the Thing's Location (the spec's special
case #1), else from what an earlier Observation told about the same Datastream: MQTT
publishers usually send only ``{"result": .., "phenomenonTime": ..}`` on
``v1.1/Datastreams(<id>)/Observations``, so each Datastream's location, metric and unit are
kept in a bounded LRU cache.
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from rules.crs import CRS
from rules.decode import Rejected
from rules.formats.mapping import parse_crs, snippet, to_wgs84_records, validate_records
from rules.model import Reading

__all__ = ["DatastreamInfo", "LocationCache", "datastream_id_from_topic", "parse_observation", "slug_metric"]

_TOPIC = re.compile(r"(?:^|/)Datastreams\(([^)/]{1,128})\)/Observations$")
_SLUG = re.compile(r"[^a-z0-9_.:-]+")
MAX_COORDS = 10_000  # coordinates looked at when a feature is a line or polygon


@dataclass(frozen=True)
class DatastreamInfo:
    """What is known about one Datastream (location in WGS-84)."""

    lon: float | None = None
    lat: float | None = None
    metric: str | None = None
    unit: str | None = None
    sensor_id: str | None = None


class LocationCache:
    """A bounded LRU of Datastream (and FeatureOfInterest) facts. Not thread-safe."""

    def __init__(self, maxsize: int = 10_000) -> None:
        self.maxsize = maxsize
        self._items: OrderedDict[str, DatastreamInfo] = OrderedDict()

    def get(self, key: str) -> DatastreamInfo | None:
        info = self._items.get(key)
        if info is not None:
            self._items.move_to_end(key)
        return info

    def merge(self, key: str, info: DatastreamInfo) -> DatastreamInfo:
        """Add what ``info`` knows to the entry of ``key`` (given fields win); returns the entry."""
        old = self._items.get(key)
        if old is not None:
            info = replace(
                old,
                **{k: v for k, v in info.__dict__.items() if v is not None},
            )
        self._items[key] = info
        self._items.move_to_end(key)
        while len(self._items) > self.maxsize:
            self._items.popitem(last=False)
        return info

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items


def datastream_id_from_topic(topic: str) -> str | None:
    """``v1.1/Datastreams(17)/Observations`` -> ``17`` (quotes around string ids are dropped)."""
    match = _TOPIC.search(topic)
    return match.group(1).strip("'") if match else None


def slug_metric(name: str) -> str | None:
    """A metric label from a free-text name: ``"Water Level"`` -> ``water_level``."""
    slug = _SLUG.sub("_", name.strip().lower()).strip("_")[:64]
    return slug or None


def _ident(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    text = str(value)
    return text if 0 < len(text) <= 100 and not any(c.isspace() for c in text) else None


def _point(geo: Any) -> tuple[float, float] | str | None:
    """(lon, lat) of a GeoJSON Feature or geometry; the bounding-box centre of lines and polygons."""
    if not isinstance(geo, dict):
        return None
    if geo.get("type") == "Feature":
        geo = geo.get("geometry")
        if not isinstance(geo, dict):
            return "feature: a Feature without a geometry"
    coords = geo.get("coordinates")
    if geo.get("type") == "Point":
        if isinstance(coords, list) and len(coords) >= 2 and all(_is_num(c) for c in coords[:2]):
            return float(coords[0]), float(coords[1])
        return f"Point coordinates must be [lon, lat] numbers, got {snippet(coords)}"
    xs: list[float] = []
    ys: list[float] = []
    stack: list[Any] = [coords]
    seen = 0
    while stack and seen < MAX_COORDS:
        node = stack.pop()
        seen += 1
        if isinstance(node, list) and len(node) >= 2 and _is_num(node[0]) and _is_num(node[1]):
            xs.append(float(node[0]))
            ys.append(float(node[1]))
        elif isinstance(node, list):
            stack.extend(node)
    if not xs:
        return f"no usable coordinates in a {snippet(geo.get('type'))} geometry"
    return (min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2


def _is_num(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(float(value))


def _time(value: Any) -> datetime | str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 80:
        return f"phenomenonTime: must be an ISO 8601 string, got {snippet(value)}"
    text = value.split("/")[-1]  # an interval counts at its end
    try:
        when = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    except ValueError:
        return f"phenomenonTime: not an ISO 8601 time: {snippet(value)}"
    if when.tzinfo is None:
        return f"phenomenonTime: must include a timezone, got {snippet(value)}"
    return when


def _location_of_thing(thing: Any) -> Any:
    if not isinstance(thing, dict):
        return None
    locations = thing.get("Locations")
    if isinstance(locations, list) and locations and isinstance(locations[0], dict):
        return locations[0].get("location")
    return None


def parse_observation(
    doc: Any,
    *,
    cache: LocationCache,
    metrics: Mapping[str, str],
    default_crs: CRS = CRS.WGS84,
    received_at: datetime,
    raw: bytes,
    topic_datastream: str | None = None,
    index: int | None = None,
) -> Reading | Rejected:
    """One Observation (parsed JSON) as a reading; the cache learns what it carries.

    ``metrics`` maps a lower-case Datastream or ObservedProperty name to a metric; other names
    are slugified. A per-payload CRS may be given as ``parameters.crs`` (GeoJSON is WGS-84 by
    default, but Chinese deployments often send GCJ-02).
    """

    def reject(reason: str) -> Rejected:
        return Rejected(reason, "invalid", raw, index)

    if not isinstance(doc, dict):
        return reject(f"an Observation must be a JSON object, got {type(doc).__name__}")
    params = doc.get("parameters")
    crs = parse_crs(params.get("crs") if isinstance(params, dict) else None, default_crs)
    if not isinstance(crs, CRS):
        return reject(f"parameters.{crs}")
    datastream = doc.get("Datastream")
    ds = datastream if isinstance(datastream, dict) else {}
    if datastream is not None and not isinstance(datastream, dict):
        return reject(f"Datastream: must be an object, got {type(datastream).__name__}")
    ds_id = _ident(ds.get("@iot.id")) or topic_datastream
    thing = ds.get("Thing") if isinstance(ds.get("Thing"), dict) else None
    thing_id = _ident(thing.get("@iot.id")) if thing else None
    key = f"ds:{ds_id}" if ds_id else (f"thing:{thing_id}" if thing_id else None)
    if key is None:
        return reject("Datastream: an @iot.id (or the MQTT topic v1.1/Datastreams(<id>)/Observations) is required")

    # What this Observation tells about its Datastream
    learned: dict[str, Any] = {}
    prop = ds.get("ObservedProperty")
    for name in (prop.get("name") if isinstance(prop, dict) else None, ds.get("name")):
        if isinstance(name, str) and name.strip() and len(name) <= 200:
            learned["metric"] = metrics.get(name.strip().lower()) or slug_metric(name)
            break
    uom = ds.get("unitOfMeasurement")
    if isinstance(uom, dict) and isinstance(uom.get("symbol"), str) and len(uom["symbol"]) <= 32:
        learned["unit"] = uom["symbol"]
    learned["sensor_id"] = f"ds-{ds_id}" if ds_id else f"thing-{thing_id}"
    foi = doc.get("FeatureOfInterest")
    where: Any = None
    for geo in (foi.get("feature") if isinstance(foi, dict) else None, _location_of_thing(thing)):
        if geo is not None:
            where = _point(geo)
            break
    if isinstance(where, str):
        return reject(f"location: {where}")
    if where is not None:
        point = {"lon": where[0], "lat": where[1]}
        to_wgs84_records([point], [crs])
        learned["lon"], learned["lat"] = point["lon"], point["lat"]

    info = cache.get(key) or DatastreamInfo()
    proposed = replace(info, **learned)
    result = doc.get("result")
    when = _time(doc.get("phenomenonTime"))
    if when is None:
        when = _time(doc.get("resultTime"))
    problems: list[str] = []
    if isinstance(when, str):
        problems.append(when)
    if not _is_num(result):
        problems.append(f"result: must be a finite number for a reading, got {snippet(result)}")
    if proposed.lon is None or proposed.lat is None:
        problems.append(
            f"no location for {key.replace(':', ' ')}: send FeatureOfInterest.feature or the Datastream's "
            "Thing.Locations (once is enough: it is cached)"
        )
    if proposed.metric is None:
        problems.append(f"no metric for {key.replace(':', ' ')}: send Datastream.name or its ObservedProperty once")
    if problems:
        return reject("; ".join(problems))
    ts = when if isinstance(when, datetime) else received_at
    obs_id = _ident(doc.get("@iot.id"))
    record: dict[str, Any] = {
        "kind": "reading",
        "id": f"st-{proposed.sensor_id}-{obs_id}"
        if obs_id
        else f"st-{proposed.sensor_id}-{int(ts.timestamp() * 1000)}",
        "ts": ts,
        "lon": proposed.lon,
        "lat": proposed.lat,
        "sensor_id": proposed.sensor_id,
        "metric": proposed.metric,
        "value": result,
        "source": "sensorthings",
    }
    if proposed.unit:
        record["unit"] = proposed.unit
    decoded = validate_records([(index, record, doc)], raw)
    if decoded.rejected:
        return decoded.rejected[0]
    cache.merge(key, DatastreamInfo(**learned))  # learn only from observations that were accepted
    event = decoded.events[0]
    assert isinstance(event, Reading)
    return event
