"""Turn raw bytes into events, or into precise reasons why not.

A message is one JSON event object, a JSON array of events, or an envelope
``{"events": [...]}`` (the micro-batch form the simulator and gateways send).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import TypeAdapter, ValidationError

from rules.model import Event, Reading, Report, Track

_EVENT: TypeAdapter[Reading | Report | Track] = TypeAdapter(Event)

DEFAULT_MAX_BYTES = 1_048_576
_NON_FINITE = re.compile(rb"[:\[,]\s*-?(NaN|Infinity)\b")


@dataclass(frozen=True)
class Rejected:
    """One record that could not be decoded: why, and its original bytes."""

    reason: str
    kind: str
    original: bytes
    index: int | None = None


@dataclass(frozen=True)
class Decoded:
    """Result of decoding one message."""

    events: list[Reading | Report | Track]
    rejected: list[Rejected]


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False)[:5]:
        loc = ".".join(str(p) for p in err["loc"] if p not in ("reading", "report", "track"))
        text = err["msg"]
        if err["type"] == "union_tag_invalid":
            tag = (err.get("ctx") or {}).get("tag")
            text = f"unknown event kind {tag!r} (expected reading, report or track)"
        elif err["type"] == "union_tag_not_found":
            text = "missing 'kind' (expected reading, report or track)"
        parts.append(f"{loc}: {text}" if loc else text)
    more = len(exc.errors()) - 5
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def decode_one(obj: Any) -> Reading | Report | Track:
    """Validate one parsed JSON value as an event. Raises ValidationError."""
    return _EVENT.validate_python(obj)


def decode_message(raw: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Decoded:
    """Decode one Kafka message value. Never raises: bad records come back as ``rejected``."""
    if len(raw) > max_bytes:
        return Decoded(
            [], [Rejected(f"payload of {len(raw)} bytes exceeds the limit of {max_bytes}", "oversized", raw)]
        )
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        hint = " (NaN and Infinity are not JSON numbers)" if _NON_FINITE.search(raw) else ""
        return Decoded([], [Rejected(f"not valid JSON{hint}: {exc}", "bad_json", raw)])
    if isinstance(doc, dict) and "events" in doc and "kind" not in doc:
        doc = doc["events"]
        if not isinstance(doc, list):
            return Decoded([], [Rejected("envelope field 'events' must be a list", "bad_envelope", raw)])
    if isinstance(doc, dict):
        try:
            return Decoded([decode_one(doc)], [])
        except ValidationError as exc:
            return Decoded([], [Rejected(_describe(exc), "invalid", raw)])
    if not isinstance(doc, list):
        return Decoded([], [Rejected(f"expected an event object or a list, got {type(doc).__name__}", "invalid", raw)])
    events: list[Reading | Report | Track] = []
    rejected: list[Rejected] = []
    for index, item in enumerate(doc):
        try:
            events.append(decode_one(item))
        except ValidationError as exc:
            rejected.append(Rejected(_describe(exc), "invalid", _original(item, raw), index))
    return Decoded(events, rejected)


def _original(item: Any, raw: bytes) -> bytes:
    """The bytes of one record of a batch; the whole message when orjson cannot re-encode the record.

    orjson parses up to 1024 levels of nesting but serialises only 254, so a deeply nested record
    falls back to the message it came from (the dead letter's ``#index`` still says which record).
    """
    try:
        return orjson.dumps(item)
    except orjson.JSONEncodeError:
        return raw


def encode_events(events: list[Reading | Report | Track]) -> bytes:
    """Serialise events as one envelope (the inverse of decode_message)."""
    return orjson.dumps({"events": [e.model_dump(mode="json", exclude_none=True) for e in events]})
