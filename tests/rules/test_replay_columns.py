"""Replay decodes JSON lines straight into columns, and still equals decode-then-run.

``fast_row`` may only accept what pydantic accepts, with the same values; everything else goes
through ``decode_message``, so rejections (and their reasons) do not change either.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError, field_validator

from rules.columns import row_of
from rules.decode import _only_utc_validator, decode_fields, decode_message, decode_one, fast_row, fast_rows
from rules.engine import AnyEvent, Engine, run
from rules.model import Reading, Report, Track
from rules.pack import LoadedPack, load_pack
from rules.replay import replay

WUHAN = Path(__file__).resolve().parents[2] / "rules" / "packs" / "wuhan" / "pack.yaml"


@functools.cache
def _wuhan() -> LoadedPack:
    return load_pack(WUHAN)


timestamps = st.sampled_from(
    [
        "2026-07-01T00:00:00Z",
        "2026-07-01T08:00:00+08:00",
        "2026-07-01T00:00:00.5Z",
        "2026-07-01T00:00:00.123456-03:30",
        "2026-07-01T00:00:00.1234567Z",
        "2026-02-30T00:00:00Z",
        "2026-07-01T24:00:00Z",
        "2026-07-01T00:00:00",
        "2026-07-01 00:00:00Z",
        "2026-07-01T00:00:60Z",
        "2026-07-01T00:00:00+23:59",
        "1782864000",
        "٢٠٢٦-07-01T00:00:00Z",
    ]
) | st.integers(0, 2_000_000_000)
numbers = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, min_value=-1e6, max_value=1e6),
    st.integers(-(2**60), 2**60),
    st.sampled_from([180.0, -180.0, 180.0001, 90.0, -90.5, 0, True, False, None, "1.5", 360, 20000, -500.5]),
)
texts = st.one_of(
    st.sampled_from(["a", "s-1", "m1", "water_level_cm", "x" * 64, "x" * 65, "x" * 129, "", "a b", "é", "a\u00a0b"]),
    st.text(max_size=5),
    st.none(),
    st.integers(0, 9),
)


GOOD_TS = st.sampled_from(["2026-07-01T00:00:00Z", "2026-07-01T08:00:00.25+08:00", "2026-07-01T00:00:00.123456-03:30"])
GOOD = {
    "id": st.sampled_from(["e1", "s-1", "x" * 128, "a/b#c"]),
    "ts": GOOD_TS,
    "lon": st.floats(-180, 180) | st.integers(-180, 180),
    "lat": st.floats(-90, 90) | st.integers(-90, 90),
    "sensor_id": st.sampled_from(["wl-1", "s2"]),
    "metric": st.sampled_from(["m1", "water_level_cm", "x" * 64]),
    "value": st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(2**53), 2**53),
    "unit": st.sampled_from(["cm", None, "x" * 32]),
    "category": st.sampled_from(["c1", "illegal_dumping"]),
    "description": st.sampled_from(["text", None, "y" * 4000]),
    "channel": st.sampled_from(["app", None]),
    "object_id": st.sampled_from(["d1", "car-7"]),
    "object_type": st.sampled_from(["drone", "robotaxi"]),
    "alt_m": st.sampled_from([None, -500, 20000.0, 120.5]),
    "speed_mps": st.sampled_from([None, 0, 1000.0, 3.5]),
    "heading": st.sampled_from([None, 0.0, 360, 90.5]),
    "source": st.sampled_from([None, "gw", "z" * 128]),
}
FIELDS = {
    "reading": ["sensor_id", "metric", "value", "unit"],
    "report": ["category", "description", "channel"],
    "track": ["object_id", "object_type", "alt_m", "speed_mps", "heading"],
    "alarm": ["metric"],
}
WEIRD = st.one_of(timestamps, numbers, texts)


@st.composite
def objects(draw: st.DrawFn) -> dict[str, Any]:
    """Mostly valid events, each with up to two fields replaced by something odd, added or dropped."""
    kind = draw(st.sampled_from(["reading", "report", "track", "alarm"]))
    names = ["id", "ts", "lon", "lat", *FIELDS[kind]] + (["source"] if draw(st.booleans()) else [])
    obj: dict[str, Any] = {"kind": kind, **{name: draw(GOOD[name]) for name in names}}
    for _ in range(draw(st.integers(0, 2))):
        what = draw(st.sampled_from(["replace", "replace", "drop", "add"]))
        name = draw(st.sampled_from(sorted(obj)))
        if what == "replace":
            obj[name] = draw(WEIRD)
        elif what == "drop":
            del obj[name]
        else:
            obj[draw(st.sampled_from(["extra", "value", "alt_m", "category"]))] = draw(WEIRD)
    return obj


def _same_row(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    return all(
        (isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y)) or x == y
        for x, y in zip(a, b, strict=True)
    )


@settings(max_examples=1500, deadline=None)
@given(obj=objects())
def test_fast_rows_are_only_what_pydantic_accepts_with_the_same_values(obj: dict[str, Any]) -> None:
    row = fast_row(obj)
    if row is None:
        return
    try:
        event = decode_one(obj)
    except ValidationError as exc:
        raise AssertionError(f"fast path accepted what pydantic rejects: {obj}: {exc}") from exc
    assert _same_row(row, row_of(event))


@settings(max_examples=300, deadline=None)
@given(batch=st.lists(objects() | st.sampled_from([1, "x", None, []]), max_size=30))
def test_fast_rows_checks_a_batch_exactly_as_fast_row_checks_each_object(batch: list[Any]) -> None:
    expected = [fast_row(o) for o in batch]
    got = fast_rows(batch)
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        assert (a is None) == (b is None), (a, b)
        if a is not None and b is not None:
            assert _same_row(a, b)


@settings(max_examples=600, deadline=None)
@given(
    batch=st.lists(objects(), max_size=8),
    form=st.sampled_from(["envelope", "list", "object"]),
)
def test_decode_fields_takes_exactly_the_messages_the_models_take_and_gives_their_fields(
    batch: list[dict[str, Any]], form: str
) -> None:
    """The live ingest's fast path: a message of valid events as the events' ``__dict__``s, in field
    order, with the same types; any message with a bad record goes to ``decode_message``."""
    doc: Any = {"events": batch} if form == "envelope" else batch if form == "list" else (batch or [{}])[0]
    try:
        raw = orjson.dumps(doc)
    except orjson.JSONEncodeError:  # a lone surrogate: not JSON, nothing to take
        return
    fields = decode_fields(raw)
    decoded = decode_message(raw)
    assert (fields is None) == bool(decoded.rejected), (doc, decoded.rejected)
    if fields is None:
        return
    events = [e.__dict__ for e in decoded.events]
    assert fields == events
    for got, want in zip(fields, events, strict=True):
        assert list(got) == list(want)
        assert [type(v) for v in got.values()] == [type(v) for v in want.values()], (got, want)
        assert got["ts"].tzinfo is want["ts"].tzinfo


def test_decode_fields_leaves_oversized_and_malformed_messages_to_decode_message() -> None:
    good = {"kind": "report", "id": "r1", "ts": "2026-07-01T00:00:00Z", "lon": 114, "lat": 30, "category": "c"}
    raw = orjson.dumps({"events": [good]})
    assert decode_fields(raw) is not None
    assert decode_fields(raw, max_bytes=len(raw) - 1) is None
    for bad in (b"{", b'{"events": 3}', b"7", b'"x"', orjson.dumps([good, 1])):
        assert decode_fields(bad) is None
        assert decode_message(bad).rejected
    reading = {"kind": "reading", "id": "e1", "ts": "2026-07-01T00:00:00Z", "lon": 1, "lat": 2, "sensor_id": "s"}
    for text in ("inf", "-Infinity", "NaN", "1e400"):  # numbers in strings: finite ones only, as the models
        bad = orjson.dumps([reading | {"metric": "m", "value": text}])
        assert decode_fields(bad) is None
        assert decode_message(bad).rejected
    assert decode_fields(orjson.dumps([reading | {"metric": "m", "value": "1.5"}])) == [
        e.__dict__ for e in decode_message(orjson.dumps([reading | {"metric": "m", "value": "1.5"}])).events
    ]


def test_an_event_model_with_a_validator_of_its_own_turns_the_field_path_off() -> None:
    """decode_fields re-applies only the models' UTC validator: any other would be skipped."""

    class Checked(Reading):
        @field_validator("value")
        @classmethod
        def _positive(cls, value: float) -> float:
            return abs(value)

    assert _only_utc_validator(Reading) and _only_utc_validator(Report) and _only_utc_validator(Track)
    assert not _only_utc_validator(Checked)


def test_the_fast_path_takes_ordinary_events() -> None:
    reading = {
        "kind": "reading",
        "id": "e1",
        "ts": "2026-07-01T08:00:00.25+08:00",
        "lon": 114.3,
        "lat": 30.6,
        "sensor_id": "wl-1",
        "metric": "water_level_cm",
        "value": 42,
    }
    report = {"kind": "report", "id": "r1", "ts": "2026-07-01T00:00:00Z", "lon": 114, "lat": 30, "category": "c"}
    track = {
        "kind": "track",
        "id": "t1",
        "ts": "2026-07-01T00:00:00Z",
        "lon": 114.3,
        "lat": 30.6,
        "object_id": "d1",
        "object_type": "drone",
        "alt_m": 120.5,
    }
    for obj in (reading, report, track):
        row = fast_row(obj)
        assert row is not None
        assert _same_row(row, row_of(decode_one(obj)))


def _lines(events: list[dict[str, Any]]) -> list[bytes]:
    """A file mixing single events, lists, envelopes, blank and broken lines."""
    lines: list[bytes] = []
    for n in range(0, len(events), 7):
        group = events[n : n + 7]
        shape = n % 4
        if shape == 0:
            lines.extend(orjson.dumps(e) for e in group)
        elif shape == 1:
            lines.append(orjson.dumps(group))
        elif shape == 2:
            lines.append(orjson.dumps({"events": group}))
        else:
            lines.extend([b"", b"  ", b"{not json", b'{"events": 3}', b"[NaN]", orjson.dumps(group[0]) + b"\n"])
            lines.extend(orjson.dumps(e) for e in group[1:])
    return lines


def _reference(pack: LoadedPack, lines: list[bytes], batch_size: int) -> tuple[list[Any], int, list[Any]]:
    rejected = []
    events: list[AnyEvent] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        decoded = decode_message(line.strip())
        rejected.extend((number, r) for r in decoded.rejected)
        events.extend(decoded.events)
    latest = run(Engine(pack), events, batch_size=batch_size)
    return [latest[k] for k in sorted(latest)], len(events), rejected


@settings(max_examples=40, deadline=None)
@given(
    raw=st.lists(objects(), max_size=60),
    batch_size=st.sampled_from([1, 7, 1000]),
)
def test_replay_equals_decode_then_run_with_rejections(raw: list[dict[str, Any]], batch_size: int) -> None:
    pack = _wuhan()
    lines = _lines(raw)
    result = replay(pack, lines, batch_size=batch_size)
    incidents, count, rejected = _reference(pack, lines, batch_size)
    assert result.incidents == incidents
    assert result.events == count
    assert result.rejected == rejected


def test_replay_of_the_wuhan_pack_test_events_equals_decode_then_run() -> None:
    pack = _wuhan()
    events = [e for case in pack.spec.tests for e in case.events]
    lines = _lines(events)
    result = replay(pack, lines, batch_size=5)
    incidents, count, rejected = _reference(pack, lines, 5)
    assert result.incidents == incidents
    assert incidents
    assert (result.events, result.rejected) == (count, rejected)
