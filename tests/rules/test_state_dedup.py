"""A repeated event (same id, same ts) is counted once per entry, however far past the evidence it is.

The entry keeps the 20 earliest events in full and a 64-bit digest of every other one (``dh``);
these tests pin that it recognises repeats whatever the arrival order and batching, survives a
JSON round trip and a copy-on-touch, and stays the same for the same set of events.
"""

from __future__ import annotations

import random
import string
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rules import state as state_module
from rules.engine import Engine
from rules.geo import Layer
from rules.kinds.base import Scope
from rules.model import Incident, Reading, Report
from rules.pack import LoadedPack, parse_pack
from rules.state import DIGEST_CHARS, EVIDENCE_CAP, SPLIT_DIGESTS, Entry, add_event, event_digest, new_entry

T0 = datetime(2026, 7, 1, tzinfo=UTC)
B64 = set(string.ascii_letters + string.digits + "+/")


def _fold(events: list[tuple[int, str]], *, roundtrip: bool = False) -> tuple[Entry, list[bool]]:
    entry = new_entry("s", None, 0, 10**12)
    added = []
    for ts, eid in events:
        added.append(add_event(entry, ts, eid, float(ts % 7), 1.0, 2.0, zone=f"z{ts % 3}"))
        if roundtrip:
            entry = orjson.loads(orjson.dumps(entry))
    return entry, added


def _digests(entry: Entry) -> list[str]:
    held = entry.get("dh", "")
    joined = held if isinstance(held, str) else "".join(held[k] for k in sorted(held))
    return [joined[i : i + DIGEST_CHARS] for i in range(0, len(joined), DIGEST_CHARS)]


# -- the digest --------------------------------------------------------------------------------


def test_the_digest_is_stable_across_processes_and_json_safe() -> None:
    # blake2b-64 of "ts|id" in base64: fixed values, so a state written by one process is read by the next
    assert event_digest(0, "a") == "cVikWJQJNk4"
    assert event_digest(1782864000123, "sensor-1") == "kQT73AM/HfU"
    digest = event_digest(5, "x y\u00e9")
    assert len(digest) == DIGEST_CHARS and set(digest) <= B64
    assert orjson.loads(orjson.dumps(digest)) == digest
    # the separator cannot shift: ts is an integer
    assert event_digest(1, "2|3") != event_digest(12, "3")


# -- the entry ---------------------------------------------------------------------------------


def test_an_entry_within_the_evidence_cap_keeps_no_digests() -> None:
    entry, _ = _fold([(t, f"e{t}") for t in range(EVIDENCE_CAP)])
    assert "dh" not in entry
    entry, _ = _fold([(t, f"e{t}") for t in range(EVIDENCE_CAP + 3)])
    assert len(entry["dh"]) == 3 * DIGEST_CHARS


def test_a_repeat_pushed_out_of_the_evidence_is_still_recognised() -> None:
    late = (100, "late")
    earlier = [(t, f"e{t}") for t in range(EVIDENCE_CAP)]
    entry, added = _fold([late, *earlier, late, *earlier])  # late enters the evidence, then is pushed out
    assert added == [True] * (EVIDENCE_CAP + 1) + [False] * (EVIDENCE_CAP + 1)
    assert entry["n"] == EVIDENCE_CAP + 1
    assert [e[1] for e in entry["ev"]] == [eid for _, eid in earlier]


def test_the_same_id_at_another_time_is_another_event() -> None:
    entry, added = _fold([(t, "same") for t in range(30)] + [(t, "same") for t in range(30)])
    assert added == [True] * 30 + [False] * 30
    assert entry["n"] == 30


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_many_events_split_their_digests_and_still_recognise_every_repeat(seed: int) -> None:
    distinct = [(t // 3, f"e{t}") for t in range(EVIDENCE_CAP + 2 * SPLIT_DIGESTS)]
    rng = random.Random(seed)
    stream = distinct + rng.sample(distinct, len(distinct) // 2)
    rng.shuffle(stream)
    entry, added = _fold(stream)
    assert sum(added) == entry["n"] == len(distinct)
    assert isinstance(entry["dh"], dict)
    assert sorted(entry["dh"]) == sorted({d[0] for d in _digests(entry)})
    expected, _ = _fold(sorted(distinct))
    assert entry == expected
    assert sorted(_digests(entry)) == _digests(entry)
    assert _digests(entry) == sorted(event_digest(ts, eid) for ts, eid in sorted(distinct)[EVIDENCE_CAP:])
    again, added = _fold(rng.sample(distinct, len(distinct)), roundtrip=False)
    assert again == expected


pool = st.lists(st.tuples(st.integers(0, 40), st.sampled_from("abcdefgh")), min_size=1, max_size=60, unique=True)


@settings(max_examples=200, deadline=None)
@given(events=pool, data=st.data(), split=st.sampled_from([1, 4, SPLIT_DIGESTS]), roundtrip=st.booleans())
def test_the_entry_depends_only_on_the_set_of_events(
    events: list[tuple[int, str]], data: st.DataObject, split: int, roundtrip: bool
) -> None:
    repeats = data.draw(st.lists(st.sampled_from(events), max_size=30))
    stream = data.draw(st.permutations(events + repeats))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(state_module, "SPLIT_DIGESTS", split)
        entry, added = _fold(stream, roundtrip=roundtrip)
        expected, _ = _fold(sorted(events))
    assert entry == expected
    assert entry["n"] == len(events) == sum(added)
    assert [(e[0], e[1]) for e in entry["ev"]] == sorted(events)[:EVIDENCE_CAP]
    assert len(_digests(entry)) == max(0, len(events) - EVIDENCE_CAP)
    first = min(events)
    assert entry["zone"] == f"z{first[0] % 3}"


@pytest.mark.parametrize("count", [EVIDENCE_CAP + 5, EVIDENCE_CAP + SPLIT_DIGESTS + 5])
def test_a_copy_for_a_batch_never_changes_the_stored_entry(count: int) -> None:
    stored, _ = _fold([(t, f"e{t}") for t in range(count)])
    snapshot = orjson.dumps(stored)
    state: dict[str, Any] = {"k": stored}
    scope = Scope(state, (0, 1))
    entry, fresh = scope.load("k", lambda: new_entry("s", None, 0, 1))
    assert fresh
    for t in range(count, count + 2 * SPLIT_DIGESTS):
        assert add_event(entry, t, f"e{t}", 1.0, 1.0, 2.0)
    assert not add_event(entry, count - 1, f"e{count - 1}", 1.0, 1.0, 2.0)
    assert orjson.dumps(state["k"]) == snapshot  # nothing written until commit
    scope.commit()
    assert state["k"]["n"] == count + 2 * SPLIT_DIGESTS


# -- through the engine ------------------------------------------------------------------------

SQUARE = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [0.0, 0.0]]
ZONES = Layer.from_features(
    "zones",
    [{"type": "Feature", "properties": {"zone_id": "A"}, "geometry": {"type": "Polygon", "coordinates": [SQUARE]}}],
)
PACK = """\
pack: t
version: "1"
allowed_lateness: 1h
layers:
  zones: {file: unused.geojson}
rules:
  - {id: hot, kind: threshold, title: T, category: c, match: {kind: reading}, op: ">", value: 10, dedup: 1h}
  - id: avg
    kind: window
    title: W
    category: c
    layer: zones
    match: {kind: reading}
    aggregate: avg
    window: 30m
    slide: 10m
    op: ">"
    value: 0
  - {id: reports, kind: window, title: R, category: c, layer: zones, match: {kind: report}, window: 1h, value: 1}
"""


def _pack() -> LoadedPack:
    return LoadedPack(spec=parse_pack(PACK, "t.yaml"), path=Path("t.yaml"), layers={"zones": ZONES}, digest="t")


def _events(n: int) -> list[Reading | Report]:
    rng = random.Random(n)
    out: list[Reading | Report] = []
    for i in range(n):
        ts = T0 + timedelta(seconds=rng.randrange(3600), milliseconds=rng.choice([0, 1]))
        if i % 4 == 0:
            out.append(Report(id=f"r{i % 50}", ts=ts, lon=0.5, lat=0.5, category="x"))
        else:
            value = rng.choice([5.0, 20.0, 30.5])
            out.append(Reading(id=f"e{i}", ts=ts, lon=0.5, lat=0.5, sensor_id="s1", metric="m", value=value))
    return out


def _stream(events: list[Reading | Report], batch: int, *, roundtrip: bool = False) -> dict[str, Incident]:
    engine = Engine(_pack())
    state: dict[str, Any] = {}
    latest: dict[str, Incident] = {}
    for offset, start in enumerate(range(0, len(events), batch)):
        outcome = engine.process(engine.enrich(events[start : start + batch]), state, position=(0, offset))
        for incident in outcome.incidents:
            if incident.id not in latest or incident.revision >= latest[incident.id].revision:
                latest[incident.id] = incident
        if roundtrip:
            state = orjson.loads(orjson.dumps(state))
    return latest


@pytest.mark.parametrize("seed", [5, 6])
def test_repeats_re_sent_later_under_new_positions_change_no_incident(seed: int) -> None:
    events = _events(400)
    distinct = {(e.id, e.ts) for e in events}
    rng = random.Random(seed)
    resent = events + rng.sample(events, 150)
    shuffled = rng.sample(resent, len(resent))
    expected = _stream(sorted(events, key=lambda e: (e.ts, e.id)), batch=1000)
    assert sum(1 for e in events if isinstance(e, Reading) and e.value > 10) > 3 * EVIDENCE_CAP
    assert _stream(resent, batch=37) == expected
    assert _stream(shuffled, batch=50, roundtrip=True) == expected
    counts = {i.rule_id: i.evidence.count for i in expected.values() if i.rule_id in ("hot", "reports")}
    assert counts["hot"] == sum(1 for e in events if isinstance(e, Reading) and e.value > 10)
    assert counts["reports"] == len({(i, t) for i, t in distinct if i.startswith("r")})
