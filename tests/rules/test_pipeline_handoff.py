"""The handoff: detect takes the events of an envelope its own ingest made instead of parsing it again.

It must give exactly what parsing the envelope gives: the same incidents and the same state, with
spread copies, links and both engine paths (column batches and small batches).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np
import orjson
import pytest

from rules.columns import Rebuilt, Rows
from rules.engine import Engine
from rules.pack import LoadedPack, load_pack
from rules.pipeline import Chain, Handoff, Pipeline, _decode, decode_envelope
from streams.bench_data import wuhan_events
from streams.scenario import scenario_events, wuhan_scenario
from streams.settings import default_pack

START = datetime.fromisoformat("2026-07-01T23:00:00+08:00")


@pytest.fixture(scope="module")
def pack() -> LoadedPack:
    return load_pack(default_pack())


@pytest.fixture(scope="module")
def events(pack: LoadedPack) -> list[dict[str, Any]]:
    scripted = scenario_events(
        wuhan_scenario(pack.layers["districts"], START, 600.0, bad_records=False, extra_layers=pack.layers)
    )
    return sorted([*scripted, *wuhan_events(4000, seed=5)], key=lambda e: str(e["ts"]))


def _run(pack: LoadedPack, events: list[dict[str, Any]], *, handoff: int, batch: int, partitions: int) -> Any:
    """Ingest and detect every raw message in one pipeline, as a worker owning every partition does."""
    pipeline = Pipeline(Engine(pack), partitions=partitions, handoff=handoff)
    chain, state, offsets = Chain(), {}, [0] * partitions
    incidents: list[str] = []
    for offset, start in enumerate(range(0, len(events), batch)):
        out = pipeline.ingest(orjson.dumps({"events": events[start : start + batch]}), "raw", 0, offset)
        for part in out.targets():
            prev = chain.link(0, part, offset)
            envelope = out.envelope(part, (0, offset), prev)
            pipeline.handoff.keep(envelope, out, part, (0, offset), prev)
            # what the consumer hands detect: equal bytes, another object
            got = pipeline.detect(bytes(bytearray(envelope)), state, "events", part, offsets[part])
            offsets[part] += 1
            incidents += [i.model_dump_json() for i in got.incidents]
    return incidents, orjson.dumps(state, default=str, option=orjson.OPT_SORT_KEYS), pipeline.handoff


@pytest.mark.parametrize(("batch", "partitions"), [(500, 4), (60, 2), (9, 3)])
def test_detect_through_the_handoff_equals_detect_from_the_envelope(
    pack: LoadedPack, events: list[dict[str, Any]], batch: int, partitions: int
) -> None:
    parsed, parsed_state, _ = _run(pack, events, handoff=0, batch=batch, partitions=partitions)
    handed, handed_state, handoff = _run(pack, events, handoff=100_000, batch=batch, partitions=partitions)
    assert handoff.hits > 0 and handoff.misses == 0, "every envelope was taken from the handoff"
    assert len(parsed) > 100, "the scenario makes incidents"
    assert handed == parsed
    assert handed_state == parsed_state


def test_located_rows_equal_the_columns_read_back_from_their_envelope(pack: LoadedPack) -> None:
    pipeline = Pipeline(Engine(pack), partitions=4)
    out = pipeline.ingest(orjson.dumps({"events": wuhan_events(800, seed=2)}), "raw", 0, 0)
    layers = list(pack.layers)
    assert out.spread, "the crowd has reports that are spread"
    for part in out.targets():
        found = out.batch(part)
        assert found is not None
        rows, spread_from = found
        mine = rows.located(layers)
        own, _ = decode_envelope(out.envelope(part, (0, 0)))
        parsed, _, _, parsed_from = _decode(out.envelope(part, (0, 0)))  # what detect reads: own events, then copies
        assert parsed_from == spread_from and len(own) == (len(rows) if spread_from is None else spread_from)
        assert isinstance(parsed, Rebuilt)
        theirs = parsed.columns(layers)
        assert np.array_equal(mine.ts_us, theirs.ts_us) and np.array_equal(mine.kind, theirs.kind)
        assert mine.ids == theirs.ids and mine.disc == theirs.disc
        for name in ("value", "lon", "lat", "alt_m"):
            assert np.array_equal(mine.numeric[name], theirs.numeric[name], equal_nan=True), name
        for name in layers:
            assert [mine.zones[name].of(r) for r in range(len(mine))] == [
                theirs.zones[name].of(r) for r in range(len(theirs))
            ], name
        assert [mine.enriched(r) for r in range(len(mine))] == [theirs.enriched(r) for r in range(len(theirs))]


def test_an_envelope_that_is_not_byte_for_byte_one_it_sent_is_parsed(pack: LoadedPack) -> None:
    pipeline = Pipeline(Engine(pack), partitions=1, handoff=1000)
    out = pipeline.ingest(orjson.dumps({"events": wuhan_events(50, seed=4)}), "raw", 0, 0)
    envelope = out.envelope(0, (0, 0))
    pipeline.handoff.keep(envelope, out, 0, (0, 0), None)
    other = envelope.replace(b'"v":1', b'"v":1 ', 1)  # the same document, other bytes
    assert other != envelope and orjson.loads(other) == orjson.loads(envelope)
    state: dict[str, Any] = {}
    got = pipeline.detect(other, state, "events", 0, 0)
    assert pipeline.handoff.hits == 0 and pipeline.handoff.misses == 1
    assert not got.dead and state, "parsed and applied"
    assert pipeline.detect(envelope, state, "events", 0, 0).redelivered, "the kept one is the same source"


def _envelopes(pack: LoadedPack, offsets: range, partitions: int = 1) -> list[tuple[bytes, Any, int, int]]:
    """(envelope, ingested, events partition, raw offset) of one small raw message per offset."""
    pipeline = Pipeline(Engine(pack), partitions=partitions)
    made = []
    for offset in offsets:
        out = pipeline.ingest(orjson.dumps({"events": wuhan_events(10, seed=offset)}), "raw", 0, offset)
        for part in out.targets():
            made.append((out.envelope(part, (0, offset)), out, part, offset))
    return made


def test_the_handoff_holds_at_most_its_capacity_and_then_leaves_new_envelopes_to_be_parsed(pack: LoadedPack) -> None:
    handoff = Handoff(capacity=35)  # events: room for three envelopes of 10
    made = _envelopes(pack, range(5))
    for envelope, out, part, offset in made:
        handoff.keep(envelope, out, part, (0, offset), None)
    assert len(handoff) == 3 and handoff.full == 2 and handoff.events == 30
    assert handoff.take(made[4][0]) is None and handoff.take(made[3][0]) is None, "not held: parsed"
    found = handoff.take(made[0][0])
    assert found is not None and isinstance(found[0], Rows) and found[1] == (0, 0)
    assert handoff.take(made[0][0]) is None, "taken once"
    handoff.keep(made[3][0], made[3][1], 0, (0, 3), None)
    assert len(handoff) == 3 and handoff.events == 30, "room again once detect took one"
    twice = Handoff(capacity=1000)
    for _ in range(2):
        twice.keep(made[1][0], made[1][1], 0, (0, 1), None)
    assert len(twice) == 1 and twice.events == 10, "the same bytes again are held once"
    off = Handoff(capacity=0)
    off.keep(made[2][0], made[2][1], 0, (0, 2), None)
    assert len(off) == 0, "capacity 0 holds nothing"


def test_taking_an_envelope_drops_the_older_ones_of_its_stream_that_detect_has_passed(pack: LoadedPack) -> None:
    handoff = Handoff(capacity=1000)
    made = _envelopes(pack, range(4))
    for envelope, out, part, offset in made:
        handoff.keep(envelope, out, part, (0, offset), None)
    other = _envelopes(pack, range(7, 8))[0]  # another raw partition: another stream
    handoff.keep(other[0], other[1], 0, (1, 7), None)
    assert handoff.take(made[2][0]) is not None
    assert handoff.take(made[0][0]) is None and handoff.take(made[1][0]) is None, "passed: dropped"
    assert handoff.take(made[3][0]) is not None and handoff.take(other[0]) is not None
    assert len(handoff) == 0 and handoff.events == 0


def test_only_envelopes_for_the_assigned_events_partitions_are_held(pack: LoadedPack) -> None:
    handoff = Handoff(capacity=1000)
    made = _envelopes(pack, range(6), partitions=4)
    assert len({part for _, _, part, _ in made}) > 1, "the events go to several partitions"
    for envelope, out, part, offset in made:
        handoff.keep(envelope, out, part, (0, offset), None)
    mine = made[0][2]
    handoff.assign({mine})
    assert len(handoff) == sum(1 for m in made if m[2] == mine), "the others' envelopes were dropped"
    for _, out, part, offset in made:
        handoff.keep(out.envelope(part, (0, offset + 100)), out, part, (0, offset + 100), None)
    assert len(handoff) == 2 * sum(1 for m in made if m[2] == mine), "and new ones are kept for the own only"


def test_an_envelope_held_back_by_a_broken_link_is_still_taken_from_the_handoff(pack: LoadedPack) -> None:
    pipeline = Pipeline(Engine(pack), partitions=1, handoff=1000)
    chain = Chain()
    envelopes = []
    for offset in (3, 5):
        out = pipeline.ingest(orjson.dumps({"events": wuhan_events(20, seed=offset)}), "raw", 0, offset)
        prev = chain.link(0, 0, offset)
        envelope = out.envelope(0, (0, offset), prev)
        pipeline.handoff.keep(envelope, out, 0, (0, offset), prev)
        envelopes.append(envelope)
    state: dict[str, Any] = {}
    pipeline.detect(envelopes[0], state, "events", 0, 0)
    state.clear()  # as if the first envelope was never applied: the second one's link is broken
    held = pipeline.detect(envelopes[1], state, "events", 0, 1)
    assert held.missing is not None and not state
    pipeline.detect(envelopes[1], state, "events", 0, 1, chain=False)
    assert pipeline.handoff.hits == 3 and pipeline.handoff.misses == 0
    assert state, "applied from the handoff after the repair"
