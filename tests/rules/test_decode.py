"""decode_message: raw message bytes -> events, or rejections that say which field and why."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rules.decode import DEFAULT_MAX_BYTES, Decoded, decode_message, encode_envelopes, encode_events
from rules.model import Reading, Report, Track

READING: dict[str, Any] = {
    "kind": "reading",
    "id": "r-1",
    "ts": "2026-07-01T08:00:00+08:00",
    "lon": 114.30,
    "lat": 30.60,
    "sensor_id": "wl-1",
    "metric": "water_level_cm",
    "value": 42,
}
REPORT: dict[str, Any] = {
    "kind": "report",
    "id": "c-1",
    "ts": "2026-07-01T10:00:10+08:00",
    "lon": 114.35,
    "lat": 30.50,
    "category": "illegal_dumping",
}
TRACK: dict[str, Any] = {
    "kind": "track",
    "id": "k-1",
    "ts": "2026-07-01T10:00:00Z",
    "lon": 114.30,
    "lat": 30.60,
    "object_id": "uav-7",
    "object_type": "drone",
    "alt_m": 150,
}
KINDS = {"bad_json", "invalid", "oversized", "bad_envelope"}


def _one_rejection(raw: bytes) -> tuple[str, str]:
    decoded = decode_message(raw)
    assert decoded.events == []
    assert len(decoded.rejected) == 1, decoded.rejected
    rej = decoded.rejected[0]
    assert rej.original == raw
    assert rej.index is None
    return rej.kind, rej.reason


def _with(base: dict[str, Any], **changes: Any) -> bytes:
    return orjson.dumps({**base, **changes})


def _without(base: dict[str, Any], field: str) -> bytes:
    return orjson.dumps({k: v for k, v in base.items() if k != field})


# -- accepted shapes ---------------------------------------------------------------------------


@pytest.mark.parametrize(("doc", "cls"), [(READING, Reading), (REPORT, Report), (TRACK, Track)])
def test_a_single_event_object_of_each_kind_decodes(doc: dict[str, Any], cls: type) -> None:
    decoded = decode_message(orjson.dumps(doc))
    assert decoded.rejected == []
    assert len(decoded.events) == 1
    assert isinstance(decoded.events[0], cls)
    assert decoded.events[0].id == doc["id"]


def test_a_json_array_of_events_decodes_in_order() -> None:
    decoded = decode_message(orjson.dumps([READING, REPORT, TRACK]))
    assert [e.id for e in decoded.events] == ["r-1", "c-1", "k-1"]
    assert decoded.rejected == []


def test_an_envelope_of_events_decodes_in_order() -> None:
    decoded = decode_message(orjson.dumps({"events": [TRACK, READING]}))
    assert [e.kind for e in decoded.events] == ["track", "reading"]


def test_an_empty_list_or_envelope_is_a_valid_message_with_no_events() -> None:
    assert decode_message(b"[]") == Decoded([], [])
    assert decode_message(b'{"events": []}') == Decoded([], [])


def test_encode_events_is_the_inverse_of_decode_message() -> None:
    events = decode_message(orjson.dumps([READING, REPORT, TRACK])).events
    assert decode_message(encode_events(events)).events == events


# -- timestamps --------------------------------------------------------------------------------


def test_timestamps_with_an_offset_are_normalised_to_utc() -> None:
    event = decode_message(_with(READING, ts="2026-07-01T08:00:00+08:00")).events[0]
    assert event.ts.tzinfo is UTC
    assert event.ts == datetime(2026, 7, 1, 0, 0, tzinfo=UTC)
    assert event.ts.hour == 0


def test_a_z_suffix_means_utc() -> None:
    event = decode_message(_with(READING, ts="2026-07-01T23:30:00.250Z")).events[0]
    assert event.ts == datetime(2026, 7, 1, 23, 30, 0, 250_000, tzinfo=UTC)


@given(
    instant=st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1)),
    offset_minutes=st.integers(min_value=-14 * 60 + 1, max_value=14 * 60 - 1),
)
@settings(max_examples=200, deadline=None)
def test_any_offset_gives_the_same_instant_in_utc(instant: datetime, offset_minutes: int) -> None:
    local = instant.replace(tzinfo=UTC).astimezone(timezone(timedelta(minutes=offset_minutes)))
    event = decode_message(_with(READING, ts=local.isoformat())).events[0]
    assert event.ts == local
    assert event.ts.utcoffset() == timedelta(0)
    assert event.ts.tzinfo is UTC


def test_a_naive_timestamp_is_rejected_and_the_reason_names_ts() -> None:
    kind, reason = _one_rejection(_with(READING, ts="2026-07-01T08:00:00"))
    assert kind == "invalid"
    assert reason.startswith("ts: ")
    assert "timezone" in reason


def test_a_timestamp_that_is_not_a_date_is_rejected() -> None:
    kind, reason = _one_rejection(_with(REPORT, ts="yesterday"))
    assert kind == "invalid"
    assert reason.startswith("ts: ")


# -- whole-message rejections ------------------------------------------------------------------


@pytest.mark.parametrize("raw", [b'{"kind": "reading"', b"", b"{'kind': 'reading'}", b"[1, 2,]"])
def test_bad_json_is_rejected_as_bad_json(raw: bytes) -> None:
    kind, reason = _one_rejection(raw)
    assert kind == "bad_json"
    assert reason.startswith("not valid JSON: ")


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity", b"1e400"])
def test_nan_and_infinity_in_json_are_rejected_as_bad_json(literal: bytes) -> None:
    raw = orjson.dumps(READING).replace(b'"value":42', b'"value":' + literal)
    assert literal in raw
    kind, reason = _one_rejection(raw)
    assert kind == "bad_json"
    assert "JSON" in reason


def test_invalid_utf8_is_rejected_as_bad_json() -> None:
    raw = orjson.dumps(READING).replace(b"wl-1", b"wl-\xff\xfe")
    kind, reason = _one_rejection(raw)
    assert kind == "bad_json"
    assert "UTF-8" in reason


def test_a_payload_over_the_limit_is_rejected_as_oversized_before_parsing() -> None:
    raw = b"[" + b" " * DEFAULT_MAX_BYTES + b"]"
    kind, reason = _one_rejection(raw)
    assert kind == "oversized"
    assert reason == f"payload of {len(raw)} bytes exceeds the limit of {DEFAULT_MAX_BYTES}"


def test_the_size_limit_is_inclusive_and_configurable() -> None:
    raw = orjson.dumps(READING)
    assert len(decode_message(raw, max_bytes=len(raw)).events) == 1
    assert _rejected_kind(decode_message(raw, max_bytes=len(raw) - 1)) == "oversized"


def _rejected_kind(decoded: Decoded) -> str:
    assert len(decoded.rejected) == 1
    return decoded.rejected[0].kind


@pytest.mark.parametrize("events", [{"a": 1}, "x", 3, None])
def test_an_envelope_whose_events_is_not_a_list_is_rejected(events: Any) -> None:
    kind, reason = _one_rejection(orjson.dumps({"events": events}))
    assert kind == "bad_envelope"
    assert reason == "envelope field 'events' must be a list"


@pytest.mark.parametrize(("doc", "type_name"), [(42, "int"), ("reading", "str"), (True, "bool"), (None, "NoneType")])
def test_a_message_that_is_neither_object_nor_list_is_rejected(doc: Any, type_name: str) -> None:
    kind, reason = _one_rejection(orjson.dumps(doc))
    assert kind == "invalid"
    assert reason == f"expected an event object or a list, got {type_name}"


# -- invalid events ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (_with(READING, lat=90.5), "lat"),
        (_with(READING, lat=-91), "lat"),
        (_with(READING, lon=180.01), "lon"),
        (_with(READING, lon=-200), "lon"),
    ],
)
def test_coordinates_out_of_range_are_rejected_and_named(raw: bytes, field: str) -> None:
    kind, reason = _one_rejection(raw)
    assert kind == "invalid"
    assert reason.startswith(f"{field}: Input should be")
    assert "90" in reason or "180" in reason


def test_coordinates_on_the_range_limits_are_accepted() -> None:
    event = decode_message(_with(TRACK, lon=-180, lat=90)).events[0]
    assert (event.lon, event.lat) == (-180.0, 90.0)


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (_with(READING, lat="north"), "lat"),
        (_with(READING, sensor_id=17), "sensor_id"),
        (_with(READING, value=[1, 2]), "value"),
        (_with(READING, value="high"), "value"),
        (_with(READING, ts={"at": 1}), "ts"),
        (_with(REPORT, category="illegal dumping"), "category"),
        (_with(REPORT, id="two words"), "id"),
        (_with(REPORT, id=""), "id"),
        (_with(TRACK, alt_m=25_000), "alt_m"),
        (_with(TRACK, speed_mps=-1), "speed_mps"),
        (_with(TRACK, heading=361), "heading"),
    ],
)
def test_fields_of_the_wrong_type_or_shape_are_rejected_and_named(raw: bytes, field: str) -> None:
    kind, reason = _one_rejection(raw)
    assert kind == "invalid"
    assert reason.startswith(f"{field}: ")


@pytest.mark.parametrize(
    ("base", "field"),
    [
        (READING, "sensor_id"),
        (READING, "metric"),
        (READING, "value"),
        (REPORT, "category"),
        (TRACK, "object_id"),
        (TRACK, "object_type"),
        (TRACK, "ts"),
        (REPORT, "lon"),
        (READING, "id"),
    ],
)
def test_a_missing_field_is_rejected_and_named(base: dict[str, Any], field: str) -> None:
    kind, reason = _one_rejection(_without(base, field))
    assert kind == "invalid"
    assert reason == f"{field}: Field required"


def test_an_unknown_field_is_rejected_and_named() -> None:
    kind, reason = _one_rejection(_with(REPORT, priority="urgent"))
    assert kind == "invalid"
    assert reason == "priority: Extra inputs are not permitted"


def test_an_unknown_kind_is_rejected_with_the_kinds_that_exist() -> None:
    kind, reason = _one_rejection(_with(READING, kind="alarm"))
    assert kind == "invalid"
    assert reason == "unknown event kind 'alarm' (expected reading, report or track)"


def test_a_missing_kind_is_rejected_with_the_kinds_that_exist() -> None:
    kind, reason = _one_rejection(_without(READING, "kind"))
    assert kind == "invalid"
    assert reason == "missing 'kind' (expected reading, report or track)"


def test_several_problems_are_all_named_in_one_reason() -> None:
    kind, reason = _one_rejection(_with(READING, lat=99, lon=-999, sensor_id=None))
    assert kind == "invalid"
    assert "lat: " in reason
    assert "lon: " in reason
    assert "sensor_id: " in reason


def test_more_than_five_problems_are_summarised() -> None:
    doc = {"kind": "track", "extra1": 1, "extra2": 2, "extra3": 3}  # 6 missing + 3 extra = 9 problems
    _, reason = _one_rejection(orjson.dumps(doc))
    assert reason.count(": ") == 5
    assert reason.endswith("; and 4 more")


# -- batches -----------------------------------------------------------------------------------


def test_a_list_mixing_good_and_bad_records_keeps_the_good_ones_and_indexes_the_bad() -> None:
    bad_lat = {**READING, "id": "r-2", "lat": 99}
    no_kind = {k: v for k, v in REPORT.items() if k != "kind"}
    decoded = decode_message(orjson.dumps([READING, bad_lat, TRACK, 7, no_kind]))
    assert [e.id for e in decoded.events] == ["r-1", "k-1"]
    assert [(r.index, r.kind) for r in decoded.rejected] == [(1, "invalid"), (3, "invalid"), (4, "invalid")]
    assert decoded.rejected[0].reason.startswith("lat: ")
    assert decoded.rejected[2].reason == "missing 'kind' (expected reading, report or track)"
    assert orjson.loads(decoded.rejected[0].original) == bad_lat
    assert orjson.loads(decoded.rejected[1].original) == 7


def test_bad_records_in_an_envelope_carry_their_index_in_the_envelope() -> None:
    decoded = decode_message(orjson.dumps({"events": [{**REPORT, "lon": 500}, REPORT]}))
    assert [e.id for e in decoded.events] == ["c-1"]
    assert [r.index for r in decoded.rejected] == [0]
    assert decoded.rejected[0].reason.startswith("lon: ")


def test_a_deeply_nested_bad_record_in_a_batch_is_rejected_not_raised() -> None:
    # orjson parses up to 1024 levels but serialises only 254: the record's bytes fall back to the message.
    raw = b"[" + b"[" * 600 + b"]" * 600 + b"," + orjson.dumps(READING) + b"]"
    decoded = decode_message(raw)
    assert [e.id for e in decoded.events] == ["r-1"]
    assert [(r.index, r.kind, r.original) for r in decoded.rejected] == [(0, "invalid", raw)]


def test_an_object_with_both_events_and_kind_is_one_event_not_an_envelope() -> None:
    kind, reason = _one_rejection(orjson.dumps({**READING, "events": [REPORT]}))
    assert kind == "invalid"
    assert reason == "events: Extra inputs are not permitted"


# -- fuzz --------------------------------------------------------------------------------------

_leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
_json = st.recursive(
    _leaves,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=30,
)
_field_values = st.one_of(
    _json,
    st.sampled_from(["reading", "report", "track", "2026-07-01T08:00:00+08:00", "2026-07-01T08:00:00", "x y"]),
    st.floats(min_value=-200, max_value=200),
)
_event_like = st.dictionaries(
    st.sampled_from(sorted({*READING, *REPORT, *TRACK, "unit", "heading", "bogus"})), _field_values, max_size=10
)
_record = _event_like | st.builds(lambda d, base: {**base, **d}, _event_like, st.sampled_from([READING, REPORT, TRACK]))


@st.composite
def _nested(draw: st.DrawFn) -> bytes:
    depth = draw(st.integers(min_value=1, max_value=1100))
    opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")]))
    core = opener * depth + b"1" + closer * depth
    return draw(st.sampled_from([core, b"[" + core + b"]", b'{"events":[' + core + b"]}"]))


@st.composite
def _messages(draw: st.DrawFn) -> bytes:
    shape = draw(st.sampled_from(["bytes", "json", "record", "list", "envelope", "nested", "huge", "utf8"]))
    if shape == "bytes":
        return draw(st.binary(max_size=300))
    if shape == "json":
        return _dumps(draw(_json))
    if shape == "record":
        return _dumps(draw(_record))
    if shape == "list":
        return _dumps(draw(st.lists(_record | _json, max_size=8)))
    if shape == "envelope":
        return _dumps({"events": draw(st.lists(_record | _json, max_size=8) | _json)})
    if shape == "nested":
        return draw(_nested())
    if shape == "huge":
        size = draw(st.integers(min_value=DEFAULT_MAX_BYTES - 64, max_value=DEFAULT_MAX_BYTES + 64))
        return orjson.dumps({**READING, "sensor_id": "s" * size})
    junk = draw(st.binary(min_size=1, max_size=8).filter(lambda b: not _is_utf8(b)))
    return _dumps(draw(_record)).replace(b"{", b'{"x":"' + junk + b'",', 1)


def _dumps(value: Any) -> bytes:
    """stdlib json: unlike orjson it writes integers beyond 64 bits, which orjson then has to parse."""
    return json.dumps(value, ensure_ascii=False).encode()


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _records_in(raw: bytes) -> int | None:
    """How many records the message holds (None: it is rejected as a whole)."""
    if len(raw) > DEFAULT_MAX_BYTES:
        return None
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if isinstance(doc, dict) and "events" in doc and "kind" not in doc:
        return len(doc["events"]) if isinstance(doc["events"], list) else None
    return len(doc) if isinstance(doc, list) else 1


@given(raw=_messages())
@settings(max_examples=200, deadline=None)
def test_decode_message_never_raises_and_accounts_for_every_record(raw: bytes) -> None:
    decoded = decode_message(raw)
    assert isinstance(decoded, Decoded)
    for rej in decoded.rejected:
        assert rej.kind in KINDS
        assert isinstance(rej.reason, str)
        assert rej.reason
        assert isinstance(rej.original, bytes)
    records = _records_in(raw)
    if records is None:
        assert decoded.events == []
        assert len(decoded.rejected) == 1
        assert decoded.rejected[0].index is None
        assert decoded.rejected[0].original == raw
        return
    assert len(decoded.events) + len(decoded.rejected) == records
    doc = orjson.loads(raw)
    if isinstance(doc, list) or (isinstance(doc, dict) and "events" in doc and "kind" not in doc):
        indexes = [r.index for r in decoded.rejected]
        assert indexes == sorted(set(indexes))
        assert all(i is not None and 0 <= i < records for i in indexes)


@given(raw=st.binary(max_size=2000))
@settings(max_examples=200, deadline=None)
def test_arbitrary_bytes_are_either_decoded_or_rejected(raw: bytes) -> None:
    decoded = decode_message(raw)
    records = _records_in(raw)
    assert len(decoded.events) + len(decoded.rejected) == (1 if records is None else records)


def test_encode_envelopes_halves_a_batch_until_each_envelope_fits_and_keeps_the_order() -> None:
    reports = [
        Report(id=f"r{i}", ts=datetime(2026, 7, 1, tzinfo=UTC), lon=114.3, lat=30.6, category="c", description="d" * i)
        for i in range(200)
    ]
    assert encode_envelopes(reports, 10**9) == [encode_events(reports)]  # it fits: one envelope, as before
    parts = encode_envelopes(reports, 3_000)
    assert len(parts) > 10 and all(len(p) <= 3_000 for p in parts)
    assert [e["id"] for p in parts for e in orjson.loads(p)["events"]] == [f"r{i}" for i in range(200)]
    [alone] = encode_envelopes(reports[-1:], 100)  # one event larger than the limit stays one envelope
    assert len(alone) > 100
