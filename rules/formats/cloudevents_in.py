"""CloudEvents 1.0 in: structured and binary mode, over HTTP and on Kafka records.

- Structured mode: the body is the event as JSON (``application/cloudevents+json``), or an array
  of them (``application/cloudevents-batch+json``, HTTP only).
- Binary mode: the attributes travel as ``ce-*`` HTTP headers or ``ce_*`` Kafka headers, the
  body is the ``data`` and ``Content-Type`` is its ``datacontenttype``.

``data`` carries cityops events (one, an array, or an envelope, see docs/events.md). A missing
event ``id`` or ``ts`` is taken from the CloudEvent's ``id`` and ``time``. When ``type`` names
SensorThings (``org.ogc.sensorthings.observation``), ``data`` is an Observation. The
extension attribute ``crs`` overrides the source's coordinate system.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import unquote

import orjson

from rules.crs import CRS
from rules.decode import DEFAULT_MAX_BYTES, Decoded, Rejected, encode_events
from rules.formats.mapping import AnyEvent, decode_cityops_doc, parse_crs, parse_json, snippet
from rules.formats.sensorthings import LocationCache, parse_observation
from rules.pipeline import Ingested, Pipeline, dead_letter, source_label

__all__ = [
    "CloudEvent",
    "CloudEventContext",
    "events_from_cloudevents",
    "from_binary",
    "from_kafka",
    "from_structured",
    "ingest_record",
    "is_cloudevent_kafka",
]

STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
SENSORTHINGS_TYPES = re.compile(r"sensorthings", re.IGNORECASE)
_EXT_NAME = re.compile(r"^[a-z0-9]{1,20}$")
_REQUIRED = ("id", "source", "specversion", "type")
_KNOWN = {"id", "source", "specversion", "type", "datacontenttype", "dataschema", "subject", "time"}


@dataclass(frozen=True)
class CloudEvent:
    """A parsed CloudEvent: context attributes and the raw data (bytes) or parsed data."""

    id: str
    source: str
    type: str
    specversion: str = "1.0"
    datacontenttype: str | None = None
    time: datetime | None = None
    subject: str | None = None
    extensions: Mapping[str, str] = field(default_factory=dict)
    data: Any = None
    data_bytes: bytes | None = None
    original: bytes = b""  # what to dead-letter: the event as sent (structured) or its body (binary)


@dataclass
class CloudEventContext:
    """Defaults and state the mapping of ``data`` needs."""

    default_crs: CRS = CRS.WGS84
    max_bytes: int = DEFAULT_MAX_BYTES
    cache: LocationCache = field(default_factory=LocationCache)
    metrics: Mapping[str, str] = field(default_factory=dict)


def _time(value: Any) -> datetime | str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 64:
        return f"time: must be an RFC 3339 string, got {snippet(value)}"
    try:
        when = datetime.fromisoformat(value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value)
    except ValueError:
        return f"time: not an RFC 3339 timestamp: {snippet(value)}"
    if when.tzinfo is None:
        return f"time: must include a timezone, got {snippet(value)}"
    return when


def _attributes(attrs: Mapping[str, Any], raw: bytes, index: int | None) -> CloudEvent | Rejected:
    problems = []
    for name in _REQUIRED:
        value = attrs.get(name)
        if not isinstance(value, str) or not value or len(value) > 1024:
            problems.append(f"{name}: a non-empty string is required, got {snippet(value)}")
    if not problems and attrs["specversion"] != "1.0":
        problems.append(f"specversion: only 1.0 is supported, got {snippet(attrs['specversion'])}")
    when = _time(attrs.get("time"))
    if isinstance(when, str):
        problems.append(when)
    ctype = attrs.get("datacontenttype")
    if ctype is not None and not isinstance(ctype, str):
        problems.append(f"datacontenttype: must be a string, got {snippet(ctype)}")
    subject = attrs.get("subject")
    extensions: dict[str, str] = {}
    for name, value in attrs.items():
        if name in _KNOWN or name in ("data", "data_base64"):
            continue
        if not _EXT_NAME.match(name):
            problems.append(f"attribute name {snippet(name)} is not lower-case a-z0-9 (at most 20)")
        elif isinstance(value, str | int | bool) and len(str(value)) <= 1024:
            extensions[name] = str(value).lower() if isinstance(value, bool) else str(value)
        else:
            problems.append(f"{name}: an extension value must be a string, number or boolean")
    if problems:
        return Rejected("CloudEvent: " + "; ".join(problems[:5]), "invalid", raw, index)
    return CloudEvent(
        id=attrs["id"],
        source=attrs["source"],
        type=attrs["type"],
        specversion=attrs["specversion"],
        datacontenttype=ctype,
        time=when if isinstance(when, datetime) else None,
        subject=subject if isinstance(subject, str) else None,
        extensions=extensions,
        original=raw,
    )


def _structured_one(doc: Any, raw: bytes, index: int | None) -> CloudEvent | Rejected:
    if not isinstance(doc, dict):
        return Rejected(
            f"a structured CloudEvent must be a JSON object, got {type(doc).__name__}", "invalid", raw, index
        )
    ce = _attributes(doc, raw, index)
    if isinstance(ce, Rejected):
        return ce
    if "data" in doc and "data_base64" in doc:
        return Rejected("CloudEvent: 'data' and 'data_base64' are mutually exclusive", "invalid", raw, index)
    if "data_base64" in doc:
        encoded = doc["data_base64"]
        if not isinstance(encoded, str):
            return Rejected("CloudEvent: data_base64 must be a string", "invalid", raw, index)
        try:
            return _with(ce, data_bytes=base64.b64decode(encoded, validate=True))
        except (binascii.Error, ValueError) as exc:
            return Rejected(f"CloudEvent: data_base64 is not base64: {exc}", "invalid", raw, index)
    return _with(ce, data=doc.get("data"))


def _with(ce: CloudEvent, **changes: Any) -> CloudEvent:
    return CloudEvent(**{**ce.__dict__, **changes})


def from_structured(
    body: bytes, content_type: str, *, max_bytes: int = DEFAULT_MAX_BYTES
) -> list[CloudEvent | Rejected]:
    """Structured mode (one event, or a batch): each entry a CloudEvent or a Rejected."""
    doc = parse_json(body, max_bytes=max_bytes)
    if isinstance(doc, Rejected):
        return [doc]
    if content_type.lower().startswith(BATCH):
        if not isinstance(doc, list):
            return [Rejected("a CloudEvents batch must be a JSON array", "bad_envelope", body)]
        return [_structured_one(item, _reencode(item, body), i) for i, item in enumerate(doc)]
    return [_structured_one(doc, body, None)]


def _reencode(item: Any, fallback: bytes) -> bytes:
    try:
        return orjson.dumps(item)
    except (orjson.JSONEncodeError, TypeError):
        return fallback


def from_binary(
    headers: Mapping[str, str], body: bytes, *, prefix: str = "ce-", percent: bool = True
) -> CloudEvent | Rejected:
    """Binary mode: attributes from ``ce-*`` headers (``ce_*`` on Kafka), data = body."""
    attrs: dict[str, Any] = {}
    for name, value in headers.items():
        lname = name.lower()
        if lname.startswith(prefix):
            attrs[lname[len(prefix) :]] = unquote(value) if percent else value
    ctype = next((v for k, v in headers.items() if k.lower() == "content-type"), None)
    if ctype is not None:
        attrs["datacontenttype"] = ctype
    ce = _attributes(attrs, body, None)
    return ce if isinstance(ce, Rejected) else _with(ce, data_bytes=body)


def _kafka_headers(headers: Iterable[tuple[str, bytes]] | Mapping[str, bytes] | None) -> dict[str, str] | str:
    items = headers.items() if isinstance(headers, Mapping) else (headers or [])
    out: dict[str, str] = {}
    for name, value in items:
        try:
            out[str(name).lower()] = value.decode("utf-8") if isinstance(value, bytes | bytearray) else str(value)
        except UnicodeDecodeError:
            return f"header {snippet(name)} is not UTF-8"
    return out


def is_cloudevent_kafka(headers: Iterable[tuple[str, bytes]] | Mapping[str, bytes] | None) -> bool:
    """True when a Kafka record is a CloudEvent (``ce_specversion`` header, or the structured content type)."""
    hdrs = _kafka_headers(headers)
    if isinstance(hdrs, str):
        return any(
            str(k).lower() in ("ce_specversion", "content-type")
            for k, _ in (headers.items() if isinstance(headers, Mapping) else (headers or []))
        )
    return "ce_specversion" in hdrs or hdrs.get("content-type", "").lower().startswith(STRUCTURED)


def from_kafka(
    value: bytes,
    headers: Iterable[tuple[str, bytes]] | Mapping[str, bytes] | None,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> CloudEvent | Rejected | None:
    """A Kafka record as a CloudEvent; None when it is not one (plain cityops JSON)."""
    if not is_cloudevent_kafka(headers):
        return None
    hdrs = _kafka_headers(headers)
    if isinstance(hdrs, str):
        return Rejected(f"CloudEvent: {hdrs}", "invalid", value)
    if len(value) > max_bytes:
        return Rejected(f"payload of {len(value)} bytes exceeds the limit of {max_bytes}", "oversized", value)
    if hdrs.get("content-type", "").lower().startswith(STRUCTURED):
        found = from_structured(value, STRUCTURED, max_bytes=max_bytes)
        return found[0]
    return from_binary(hdrs, value, prefix="ce_", percent=False)


def _is_json(ctype: str | None) -> bool:
    if ctype is None:
        return True
    base = ctype.split(";")[0].strip().lower()
    return base == "application/json" or base.endswith("+json") or base == "text/json"


def events_from_cloudevents(
    items: Sequence[CloudEvent | Rejected], ctx: CloudEventContext, *, received_at: datetime
) -> Decoded:
    """Map the ``data`` of each CloudEvent to events; rejections say why."""
    events: list[AnyEvent] = []
    rejected: list[Rejected] = []
    for position, item in enumerate(items):
        index = position if len(items) > 1 else None
        if isinstance(item, Rejected):
            rejected.append(item)
            continue
        raw = item.original
        if not _is_json(item.datacontenttype):
            rejected.append(
                Rejected(f"datacontenttype {snippet(item.datacontenttype)} is not JSON", "invalid", raw, index)
            )
            continue
        data = item.data
        if item.data_bytes is not None:
            data = parse_json(item.data_bytes, max_bytes=ctx.max_bytes)
            if isinstance(data, Rejected):
                rejected.append(Rejected(f"CloudEvent {item.id}: data {data.reason}", data.kind, raw, index))
                continue
        if data is None:
            rejected.append(Rejected(f"CloudEvent {item.id} has no data", "invalid", raw, index))
            continue
        crs = parse_crs(item.extensions.get("crs"), ctx.default_crs)
        if not isinstance(crs, CRS):
            rejected.append(Rejected(f"CloudEvent {item.id}: {crs}", "invalid", raw, index))
            continue
        if SENSORTHINGS_TYPES.search(item.type):
            got = parse_observation(
                data,
                cache=ctx.cache,
                metrics=ctx.metrics,
                default_crs=crs,
                received_at=item.time or received_at,
                raw=raw,
                index=index,
            )
            (rejected if isinstance(got, Rejected) else events).append(got)  # type: ignore[arg-type]
            continue
        if isinstance(data, dict) and "kind" in data:
            data = {**data}
            data.setdefault("id", item.id)
            if item.time is not None:
                data.setdefault("ts", item.time.isoformat())
            data.setdefault("source", item.source[:128])
        decoded = decode_cityops_doc(data, raw, crs)
        events.extend(decoded.events)
        for rej in decoded.rejected:
            where = rej.index if index is None else index
            rejected.append(Rejected(f"CloudEvent {snippet(item.id)}: {rej.reason}", rej.kind, rej.original, where))
    return Decoded(events, rejected)


def ingest_record(
    pipeline: Pipeline,
    value: bytes,
    headers: Iterable[tuple[str, bytes]] | Mapping[str, bytes] | None,
    topic: str,
    partition: int,
    offset: int,
    *,
    ctx: CloudEventContext | None = None,
) -> Ingested:
    """The ingest stage for one Kafka record that may be a CloudEvent (binary or structured mode).

    A record that is not a CloudEvent goes through :meth:`Pipeline.ingest` unchanged.
    """
    ctx = ctx or CloudEventContext(max_bytes=pipeline.max_bytes)
    found = from_kafka(value, headers, max_bytes=pipeline.max_bytes)
    if found is None:
        return pipeline.ingest(value, topic, partition, offset)
    decoded = events_from_cloudevents([found], ctx, received_at=datetime.now().astimezone())
    out = pipeline.ingest(encode_events(decoded.events), topic, partition, offset) if decoded.events else Ingested()
    for rej in decoded.rejected:
        out.dead.append(
            dead_letter(rej.reason, rej.kind, source_label(topic, partition, offset, rej.index), rej.original)
        )
    return out
