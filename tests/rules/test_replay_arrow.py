"""Replay's pyarrow blocks give exactly the events and rejections of the orjson path.

``block_rows`` may only take lines that the old path turns into the same event; every other line
(not JSON, NaN, nulls, unknown keys, lists, envelopes, ...) goes the old way, so rejections, their
line numbers and reasons, and incidents do not change.
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rules import replay as replay_module
from rules.arrowblock import Piece, block_piece, block_rows
from rules.columns import row_of
from rules.decode import Rejected, decode_message, decode_one
from rules.engine import AnyEvent
from rules.pack import LoadedPack, load_pack
from rules.replay import _block, _checked, _columns, _objects, replay

WUHAN = Path(__file__).resolve().parents[2] / "rules" / "packs" / "wuhan" / "pack.yaml"


@functools.cache
def _wuhan() -> LoadedPack:
    return load_pack(WUHAN)


GOOD: dict[str, st.SearchStrategy[Any]] = {
    "id": st.sampled_from(["e1", "s-1", "x" * 128, "a/b#c", "e2"]),
    "ts": st.sampled_from(
        [
            "2026-07-01T00:00:00Z",
            "2026-07-01T08:00:00.25+08:00",
            "2026-07-01T00:00:00.123456-03:30",
            "1900-01-01T00:00:00+23:59",
            "2199-12-31T23:59:59.999999-23:59",
            "2024-02-29T12:00:00Z",
        ]
    ),
    "lon": st.floats(-180, 180) | st.integers(-180, 180),
    "lat": st.floats(-90, 90) | st.integers(-90, 90),
    "sensor_id": st.sampled_from(["wl-1", "s2"]),
    "metric": st.sampled_from(["water_level_cm", "pm25", "x" * 64]),
    "value": st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(2**53), 2**53),
    "unit": st.sampled_from(["cm", "x" * 32, "厘米"]),
    "category": st.sampled_from(["waterlogging", "illegal_dumping"]),
    "description": st.sampled_from(["text", "积水", "y" * 4000]),
    "channel": st.sampled_from(["app", "12345"]),
    "object_id": st.sampled_from(["d1", "car-7"]),
    "object_type": st.sampled_from(["drone", "robotaxi"]),
    "alt_m": st.sampled_from([-500, 20000.0, 120.5]),
    "speed_mps": st.sampled_from([0, 1000.0, 3.5]),
    "heading": st.sampled_from([0.0, 360, 90.5]),
    "source": st.sampled_from(["gw", "z" * 128, "网关"]),
}
OPTIONAL = {"unit", "description", "channel", "alt_m", "speed_mps", "heading", "source"}
FIELDS = {
    "reading": ["sensor_id", "metric", "value", "unit"],
    "report": ["category", "description", "channel"],
    "track": ["object_id", "object_type", "alt_m", "speed_mps", "heading"],
    "alarm": ["metric"],
}
WEIRD = st.one_of(
    st.sampled_from(
        [
            *[None, True, 0, -1, 2**53, 2**53 + 1, 2**60, -(2**64), 10**30, 1e300, -0.0, 180.0000001, 90.25, 1e-320],
            *["", "a b", "é", "a\u00a0b", "x" * 129, "x" * 65, "1.5", "e\u0000", "\ud7ff", "a\\b", 'a"b'],
            *["2026-07-01T00:00:00", "2026-02-30T00:00:00Z", "2026-07-01T24:00:00Z", "1899-12-31T23:59:59Z"],
            *["2200-01-01T00:00:00Z", "2026-07-01T00:00:00+24:00", "2026-07-01T00:00:00.1234567Z", "2026-07-01"],
            *[[1], {"a": 1}, [], {}],
        ]
    ),
    st.text(max_size=4),
    st.floats(),
)
#: Text edits of a whole line: non-JSON numbers, formatting, escapes, repeats, trailing garbage.
EDITS = [
    ("number", b"NaN"),
    ("number", b"Infinity"),
    ("number", b"-Infinity"),
    ("number", b"1e400"),
    ("number", b"123456789012345678901234567890"),
    ("colon", b'" :'),
    ("colon", b'"\t: '),
    ("escape", b"\\u00e9"),
    ("escape", b"\\ud800"),
    ("escape", b'\\"'),
    ("repeat", b""),
    ("trail", b" x"),
    ("trail", b"{}"),
    ("pretty", b""),
]


@st.composite
def objects(draw: st.DrawFn) -> dict[str, Any]:
    """Mostly valid events, each with up to two fields replaced by something odd, added or dropped."""
    kind = draw(st.sampled_from(["reading", "reading", "report", "track", "alarm"]))
    names = ["id", "ts", "lon", "lat", *FIELDS[kind]]
    names = [n for n in names if n not in OPTIONAL or draw(st.booleans())]
    names += ["source"] if draw(st.booleans()) else []
    obj: dict[str, Any] = {"kind": kind, **{name: draw(GOOD[name]) for name in names}}
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2]))):
        what = draw(st.sampled_from(["replace", "drop", "add", "null"]))
        name = draw(st.sampled_from(sorted(obj)))
        if what == "replace":
            obj[name] = draw(WEIRD)
        elif what == "drop":
            del obj[name]
        elif what == "null":
            obj[draw(st.sampled_from([*sorted(obj), "unit", "category", "alt_m"]))] = None
        else:
            obj[draw(st.sampled_from(["extra", "value", "alt_m", "category", "unit", "events"]))] = draw(WEIRD)
    return obj


@st.composite
def lines(draw: st.DrawFn) -> bytes:
    """One line of a file: mostly one event object, sometimes edited as text, a list or envelope."""
    shape = draw(st.sampled_from(["object"] * 8 + ["edited", "edited", "list", "envelope", "blank", "scalar"]))
    if shape == "list":
        return _dumps(draw(st.lists(objects(), max_size=3)))
    if shape == "envelope":
        return _dumps({"events": draw(st.lists(objects(), max_size=3))})
    if shape == "blank":
        return draw(st.sampled_from([b"", b"  ", b"\t"]))
    if shape == "scalar":
        return draw(st.sampled_from([b"1", b'"x"', b"null", b"{", b"[NaN]", b'{"events": 3}']))
    obj = draw(objects())
    raw = _dumps(obj) if shape == "object" else _edited(draw, obj)
    return raw


def _dumps(value: Any) -> bytes:
    """Compact JSON as producers write it; big integers, NaN and Infinity as their literals."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _edited(draw: st.DrawFn, obj: dict[str, Any]) -> bytes:
    what, text = draw(st.sampled_from(EDITS))
    if what == "pretty":
        return json.dumps(obj).encode()
    raw = _dumps(obj)
    if what == "number":
        numeric = [k for k, v in obj.items() if type(v) in (int, float)]
        if not numeric:
            return raw
        key = draw(st.sampled_from(numeric))
        return _dumps({**obj, key: "@@"}).replace(b'"@@"', text)
    if what == "colon":
        return raw.replace(b'":', text, 1)
    if what == "escape":
        texts = [k for k, v in obj.items() if type(v) is str]
        if not texts:
            return raw
        key = draw(st.sampled_from(texts))
        return _dumps({**obj, key: "@@"}).replace(b"@@", b"a" + text)
    if what == "repeat":
        return raw[:-1] + b"," + raw[1:]
    return raw + text


def _same(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    return all(
        (isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y)) or x == y
        for x, y in zip(a, b, strict=True)
    )


def _events(piece: Piece) -> list[AnyEvent]:
    columns = _columns(piece)
    return [columns.event_at(r) for r in range(len(piece))]


@settings(max_examples=400, deadline=None)
@given(raws=st.lists(lines(), max_size=40))
def test_block_rows_take_only_lines_that_decode_to_the_same_event(raws: list[bytes]) -> None:
    raws = [r.strip() for r in raws if r.strip() and r.strip()[:1] == b"{"]
    for raw, row in zip(raws, block_rows(raws), strict=True):
        if row is None:
            continue
        decoded = decode_message(raw)
        assert not decoded.rejected, (raw, decoded.rejected)
        assert len(decoded.events) == 1, raw
        assert _same(row, row_of(decoded.events[0])), (raw, row, row_of(decoded.events[0]))


@settings(max_examples=300, deadline=None)
@given(raws=st.lists(lines(), max_size=40))
def test_a_block_gives_the_events_and_rejections_of_the_old_path(raws: list[bytes]) -> None:
    chunk = [(n, r.strip()) for n, r in enumerate(raws, start=1) if r.strip()]
    got_rejected: list[tuple[int, Rejected]] = []
    old_rejected: list[tuple[int, Rejected]] = []
    got = _block(chunk, got_rejected)
    old = Piece.of_rows(*_checked(_objects(chunk), old_rejected))
    assert got_rejected == old_rejected
    assert len(got) == len(old)
    for a, b in zip(got.rows(), old.rows(), strict=True):
        assert _same(a, b), (a, b)
    for a, b in zip(_events(got), _events(old), strict=True):
        assert a == b
        assert a.model_dump() == b.model_dump()
        assert a.model_fields_set == b.model_fields_set
    for piece in (got, old):  # a subject a piece knows is its event's (None: ask the event)
        assert len(piece.subjects) == len(piece)
        for subject, event, source in zip(piece.subjects, _events(piece), piece.sources, strict=True):
            assert subject == event.subject if not isinstance(source, bytes) else subject in (None, event.subject)


def test_plain_lines_are_taken_by_pyarrow() -> None:
    reading = {"kind": "reading", "id": "e1", "ts": "2026-07-01T08:00:00.25+08:00", "lon": 114.3, "lat": 30.6}
    reading |= {"sensor_id": "wl-1", "metric": "water_level_cm", "value": 42, "unit": "cm"}
    report = {"kind": "report", "id": "r1", "ts": "2026-07-01T00:00:00Z", "lon": 114, "lat": 30, "category": "c"}
    report |= {"description": "路面积水", "source": "12345"}
    track = {"kind": "track", "id": "t1", "ts": "2026-07-01T00:00:00Z", "lon": 114.3, "lat": 30.6}
    track |= {"object_id": "d1", "object_type": "drone", "alt_m": 120.5, "heading": 360}
    raws = [orjson.dumps(o) for o in (reading, report, track)]
    rows = block_rows(raws)
    for raw, row in zip(raws, rows, strict=True):
        assert row is not None
        assert _same(row, row_of(decode_one(orjson.loads(raw))))
    whole = block_piece(raws)
    assert whole is not None
    assert whole[0].subjects == ["wl-1", "r1", "d1"]  # sensor, report, object: no event built for them
    bad = b'{"kind":"reading","id":"e9","ts":"2026-07-01T00:00:00Z","lon":1,"lat":2,"sensor_id":"s9","metric":"m"}'
    mixed = _block(list(enumerate([*raws, bad, orjson.dumps(reading | {"id": "e2", "unit": None})], 1)), [])
    assert mixed.subjects == ["wl-1", "r1", "d1", "wl-1"]  # a block with a bad line still knows them


@pytest.mark.parametrize(
    "raw",
    [
        b'{"kind":"reading","id":"e1","ts":"2026-07-01T00:00:00Z","lon":1,"lat":2,"sensor_id":"s","metric":"m","value":NaN}',
        b'{"kind":"reading","id":"e1","ts":"2026-07-01T00:00:00Z","lon":1,"lat":2,"sensor_id":"s","metric":"m","value":1,"unit":null}',
        b'{"kind":"reading","id":"e1","ts":"2026-07-01T00:00:00Z","lon":1,"lat":2,"sensor_id":"s","metric":"m","value":1,"category":null}',
        b'{"kind":"reading","id":"e1","ts":"2026-07-01T00:00:00Z","lon":1,"lat":2,"sensor_id":"s","metric":"m","value":1,"x":[]}',
        b'{"kind":"reading","id":"\\u00e9","ts":"2026-07-01T00:00:00Z","lon":1,"lat":2,"sensor_id":"s","metric":"m","value":1}',
        b'{"kind":"reading","id":"e1","ts":"2026-07-01T00:00:00","lon":1,"lat":2,"sensor_id":"s","metric":"m","value":1}',
        b'{"kind":"reading","id":"e1","ts":"2026-07-01T00:00:00Z","lon":1,"lat":2,"sensor_id":"s","metric":"m","value":1e300}',
        b'{"kind":"report","id":"e1","ts":"2026-07-01T00:00:00Z","lon":1,"lat":2,"category":"c","value":1}',
    ],
)
def test_lines_pyarrow_cannot_judge_exactly_go_the_old_way(raw: bytes) -> None:
    assert block_rows([raw]) == [None]


@settings(max_examples=40, deadline=None)
@given(raws=st.lists(lines(), max_size=60), batch_size=st.sampled_from([1, 7, 1000]), block=st.sampled_from([5, 4096]))
def test_replay_through_pyarrow_equals_replay_through_orjson(raws: list[bytes], batch_size: int, block: int) -> None:
    pack = _wuhan()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(replay_module, "_BLOCK", block)
        got = replay(pack, raws, batch_size=batch_size)
    old = replay(pack, raws, batch_size=batch_size, arrow=False)
    assert got.incidents == old.incidents
    assert (got.events, got.rejected) == (old.events, old.rejected)


def test_replay_of_the_wuhan_pack_test_events_through_pyarrow_equals_orjson() -> None:
    pack = _wuhan()
    events = [e for case in pack.spec.tests for e in case.events]
    raws = [orjson.dumps(e) for e in events] + [b"", b"{not json", b"[NaN]"] + [orjson.dumps(events)]
    got = replay(pack, raws, batch_size=5)
    old = replay(pack, raws, batch_size=5, arrow=False)
    assert got.incidents == old.incidents
    assert got.incidents
    assert (got.events, got.rejected) == (old.events, old.rejected)
