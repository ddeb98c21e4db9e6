"""Turn raw bytes into events, or into precise reasons why not.

A message is one JSON event object, a JSON array of events, or an envelope
``{"events": [...]}`` (the micro-batch form the simulator and gateways send).
"""

from __future__ import annotations

import functools
import math
import operator
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, NotRequired

import numpy as np
import orjson
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from typing_extensions import TypedDict

from rules.columns import KIND_CODE, Row, to_us
from rules.model import Event, Reading, Report, Track, _utc

_EVENT: TypeAdapter[Reading | Report | Track] = TypeAdapter(Event)
_EVENTS: TypeAdapter[list[Reading | Report | Track]] = TypeAdapter(list[Event])

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
    try:  # one call for the whole batch; only a batch with a bad record is validated record by record
        return Decoded(_EVENTS.validate_python(doc), [])
    except ValidationError:
        pass
    events: list[Reading | Report | Track] = []
    rejected: list[Rejected] = []
    for index, item in enumerate(doc):
        try:
            events.append(decode_one(item))
        except ValidationError as exc:
            rejected.append(Rejected(_describe(exc), "invalid", _original(item, raw), index))
    return Decoded(events, rejected)


# -- valid messages as field dicts ---------------------------------------------------------------
# A TypedDict per event model, made from the model's own fields (their types, constraints and
# defaults) and config, validates exactly what the model validates but gives a plain dict of its
# fields, in order, instead of an instance: half the work of building the models. Only the
# model's ``ts`` validator (to UTC) is applied by hand, so the dict is what the event's
# ``__dict__`` would be. A model that gains another validator turns this path off.


def _plain(model: type[BaseModel]) -> Any:
    fields: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        annotated: Any = Annotated[info.annotation, info]
        fields[name] = annotated if info.is_required() or name == "kind" else NotRequired[annotated]
    make: Any = TypedDict
    plain: Any = make(model.__name__, fields)
    config = model.model_config
    plain.__pydantic_config__ = ConfigDict(extra=config.get("extra"), allow_inf_nan=config.get("allow_inf_nan", True))
    return plain


def _only_utc_validator(model: type[BaseModel]) -> bool:
    decorators = model.__pydantic_decorators__
    validators = {name: d.info.fields for name, d in decorators.field_validators.items()}
    others = (
        decorators.validators,
        decorators.root_validators,
        decorators.model_validators,
        decorators.field_serializers,
        decorators.model_serializers,
        decorators.computed_fields,
    )
    return validators == {"_to_utc": ("ts",)} and not any(others)


_MODELS = (Reading, Report, Track)
_ANY_PLAIN: Any = functools.reduce(operator.or_, [_plain(m) for m in _MODELS])
_AS_FIELDS: TypeAdapter[list[dict[str, Any]]] | None = (
    TypeAdapter(list[Annotated[_ANY_PLAIN, Field(discriminator="kind")]])
    if all(_only_utc_validator(m) for m in _MODELS)
    else None
)


def decode_fields(raw: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> list[dict[str, Any]] | None:
    """The events of a message as field dicts (each what the event's ``__dict__`` would be), when
    every record in it is a valid event; None otherwise: ``decode_message`` then says what is wrong.
    """
    if _AS_FIELDS is None:
        return None
    doc = fast_objects(raw, max_bytes=max_bytes)  # None: oversized, not JSON, or no events
    if doc is None:
        return None
    try:
        fields = _AS_FIELDS.validate_python(doc)
    except ValidationError:
        return None
    for event in fields:
        event["ts"] = _utc(event["ts"])
    return fields


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


def encode_envelopes(events: Sequence[Reading | Report | Track], max_bytes: int) -> list[bytes]:
    """``encode_events`` as envelopes of at most ``max_bytes`` each, in order: a batch whose envelope
    would be larger is halved until every part fits (one event larger than that stays alone)."""
    return _envelopes([e.model_dump(mode="json", exclude_none=True) for e in events], max_bytes)


def _envelopes(docs: list[dict[str, Any]], max_bytes: int) -> list[bytes]:
    body = orjson.dumps({"events": docs})
    if len(body) <= max_bytes or len(docs) <= 1:
        return [body]
    half = len(docs) // 2
    return _envelopes(docs[:half], max_bytes) + _envelopes(docs[half:], max_bytes)


# -- the fast path: plain JSON objects straight to column rows -----------------------------------
# ``fast_row`` accepts a strict subset of what ``decode_one`` accepts (plain ASCII ids, ISO 8601
# timestamps with an offset, numbers as numbers) and gives the same values; anything else is left
# to pydantic, so that errors and rejections stay exactly those of ``decode_message``.
_KEYS = {
    "reading": frozenset({"id", "ts", "lon", "lat", "source", "kind", "sensor_id", "metric", "value", "unit"}),
    "report": frozenset({"id", "ts", "lon", "lat", "source", "kind", "category", "description", "channel"}),
    "track": frozenset(
        {"id", "ts", "lon", "lat", "source", "kind", "object_id", "object_type", "alt_m", "speed_mps", "heading"}
    ),
}
_IDENT = re.compile(r"[!-~]{1,128}")
_LABEL = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_TS = re.compile(
    r"(19|2[0-1])[0-9]{2}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,6})?"
    r"(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])"
)
_NO = math.nan
_EXACT_INT = 2**53


def _num(raw: Any, low: float = -math.inf, high: float = math.inf) -> float | None:
    if type(raw) is float or (type(raw) is int and -_EXACT_INT <= raw <= _EXACT_INT):
        value = float(raw)
        if math.isfinite(value) and low <= value <= high:
            return value
    return None


def _text(raw: Any, limit: int) -> bool:
    return raw is None or (type(raw) is str and len(raw) <= limit)


def fast_row(obj: Any) -> Row | None:
    """The column row of a JSON object that is plainly a valid event, or None to ask pydantic."""
    if type(obj) is not dict:
        return None
    kind = obj.get("kind")
    keys = _KEYS.get(kind) if type(kind) is str else None
    if keys is None or not obj.keys() <= keys:
        return None
    eid, ts = obj.get("id"), obj.get("ts")
    if type(eid) is not str or not _IDENT.fullmatch(eid) or type(ts) is not str or not _TS.fullmatch(ts):
        return None
    lon, lat = _num(obj.get("lon"), -180.0, 180.0), _num(obj.get("lat"), -90.0, 90.0)
    if lon is None or lat is None or not _text(obj.get("source"), 128):
        return None
    value, alt, speed, heading = _NO, _NO, _NO, _NO
    if kind == "reading":
        disc, subject, reading = obj.get("metric"), obj.get("sensor_id"), _num(obj.get("value"))
        if reading is None or not _text(obj.get("unit"), 32):
            return None
        value = reading
    elif kind == "report":
        disc, subject = obj.get("category"), eid
        if not _text(obj.get("description"), 4000) or not _text(obj.get("channel"), 32):
            return None
    else:
        disc, subject = obj.get("object_type"), obj.get("object_id")
        numbers = []
        for name, low, high in (("alt_m", -500.0, 20000.0), ("speed_mps", 0.0, 1000.0), ("heading", 0.0, 360.0)):
            raw = obj.get(name)
            got = None if raw is None else _num(raw, low, high)
            if raw is not None and got is None:
                return None
            numbers.append(_NO if got is None else got)
        alt, speed, heading = numbers
    if type(disc) is not str or not _LABEL.fullmatch(disc) or type(subject) is not str or not _IDENT.fullmatch(subject):
        return None
    try:
        at = datetime.fromisoformat(ts)
    except ValueError:
        return None
    return (to_us(at), KIND_CODE[str(kind)], disc, eid, value, alt, speed, heading, lon, lat)


def _all_match(pattern: re.Pattern[str], values: list[Any]) -> NDArray[np.bool_]:
    """Which values are strings that ``pattern`` matches in full: one regex call for a clean batch."""
    if values and set(map(type, values)) == {str}:
        joined = "\n".join(values)
        # no value can hold a newline if there are exactly len - 1 of them in the joined text
        if joined.count("\n") == len(values) - 1 and re.fullmatch(
            f"(?:{pattern.pattern})(?:\n(?:{pattern.pattern}))*", joined
        ):
            return np.ones(len(values), dtype=bool)
    return np.array([type(v) is str and pattern.fullmatch(v) is not None for v in values], dtype=bool)


def _all_text(values: list[Any], limit: int) -> NDArray[np.bool_]:
    if set(map(type, values)) <= {type(None)}:
        return np.ones(len(values), dtype=bool)
    return np.array([v is None or (type(v) is str and len(v) <= limit) for v in values], dtype=bool)


def _all_numbers(
    values: list[Any], low: float = -math.inf, high: float = math.inf, *, optional: bool = False
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """The numbers as floats (NaN for None), and which rows hold an acceptable one (or None if optional)."""
    types = set(map(type, values))
    if types <= {float, type(None)}:
        out = np.array(values, dtype=np.float64)  # orjson never makes NaN or infinities: NaN is None
    else:
        out = np.array([_NO if (got := _num(v)) is None else got for v in values], dtype=np.float64)
        given = np.array([v is not None for v in values], dtype=bool)
        ok = (out >= low) & (out <= high)
        return out, (ok | (~given if optional else False)) & ~(given & np.isnan(out))
    ok = (out >= low) & (out <= high)
    return out, (ok | np.isnan(out)) if optional else ok


def _times(values: list[Any], ok: NDArray[np.bool_]) -> tuple[NDArray[np.int64], NDArray[np.bool_]]:
    """Microseconds since the epoch of ISO 8601 times that ``_TS`` matched (``ok``); bad dates fail."""
    out = np.zeros(len(values), dtype=np.int64)
    rows = np.flatnonzero(ok).tolist()
    texts = [values[r] for r in rows]
    if all(t.endswith("Z") for t in texts):
        try:
            out[rows] = np.array([t[:-1] for t in texts], dtype="datetime64[us]").astype(np.int64)
            return out, ok
        except ValueError:  # a day that does not exist: judge row by row
            pass
    ok = ok.copy()
    for r, text in zip(rows, texts, strict=True):
        try:
            out[r] = to_us(datetime.fromisoformat(text))
        except ValueError:
            ok[r] = False
    return out, ok


_FIELDS: tuple[str, ...] = ("kind", "id", "ts", "lon", "lat", "source", "value", "unit", "description", "channel")
_FIELDS += ("alt_m", "speed_mps", "heading")
_NAMES = ("metric", "category", "object_type", "sensor_id", "object_id")


def fast_rows(objects: list[Any]) -> list[Row | None]:
    """``fast_row`` of every object, checked column by column (the same answers, faster)."""
    n = len(objects)
    if not n:
        return []
    dicts = [o if type(o) is dict else {} for o in objects]
    # one C-level pass per object for every field, then columns
    (kinds, ids, stamps, lons, lats, source, values, unit, description, channel, alt, speed, heading) = (
        list(c) for c in zip(*[tuple(map(d.get, _FIELDS)) for d in dicts], strict=True)
    )
    metric, category, object_type, sensor_id, object_id = (
        list(c) for c in zip(*[tuple(map(d.get, _NAMES)) for d in dicts], strict=True)
    )
    ok = np.array(
        [
            type(o) is dict and type(k) is str and k in _KEYS and o.keys() <= _KEYS[k]
            for o, k in zip(objects, kinds, strict=True)
        ],
        dtype=bool,
    )
    codes = np.array([KIND_CODE.get(k, -1) if type(k) is str else -1 for k in kinds], dtype=np.int8)
    ok &= _all_match(_IDENT, ids)
    ok &= _all_match(_TS, stamps)
    lon, good = _all_numbers(lons, -180.0, 180.0)
    ok &= good
    lat, good = _all_numbers(lats, -90.0, 90.0)
    ok &= good
    ok &= _all_text(source, 128)
    value, good = _all_numbers(values, optional=True)
    ok &= good & ((codes != 0) | ~np.isnan(value))
    ok &= _all_text(unit, 32) & _all_text(description, 4000) & _all_text(channel, 32)
    track = {}
    for name, raw, low, high in (
        ("alt_m", alt, -500.0, 20000.0),
        ("speed_mps", speed, 0.0, 1000.0),
        ("heading", heading, 0.0, 360.0),
    ):
        track[name], good = _all_numbers(raw, low, high, optional=True)
        ok &= good
    disc = [
        m if k == "reading" else (c if k == "report" else t)
        for k, m, c, t in zip(kinds, metric, category, object_type, strict=True)
    ]
    ok &= _all_match(_LABEL, disc)
    subjects = [
        s if k == "reading" else (i if k == "report" else o)
        for k, s, i, o in zip(kinds, sensor_id, ids, object_id, strict=True)
    ]
    ok &= _all_match(_IDENT, subjects)
    ts_us, ok = _times(stamps, ok)
    rows = zip(
        ts_us.tolist(),
        codes.tolist(),
        disc,
        ids,
        value.tolist(),
        track["alt_m"].tolist(),
        track["speed_mps"].tolist(),
        track["heading"].tolist(),
        lon.tolist(),
        lat.tolist(),
        strict=True,
    )
    return [row if good else None for row, good in zip(rows, ok.tolist(), strict=True)]  # type: ignore[misc]


def fast_objects(raw: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> list[Any] | None:
    """The JSON objects of a message (one event, a list, or an envelope), parsed once with orjson.

    None when the message is oversized, not JSON or not a list/envelope/object: ``decode_message``
    then says why, exactly as it always did.
    """
    if len(raw) > max_bytes:
        return None
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if isinstance(doc, dict) and "events" in doc and "kind" not in doc:
        doc = doc["events"]
        if not isinstance(doc, list):
            return None
    if isinstance(doc, dict):
        return [doc]
    return doc if isinstance(doc, list) else None
