"""Envelope links: ingest names the previous envelope of each stream; detect sees a lost one."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import orjson

from rules.engine import Engine
from rules.pack import LoadedPack, load_pack
from rules.pipeline import Chain, Missing, Pipeline, decode_envelope, encode_enriched

WUHAN = Path(__file__).resolve().parents[2] / "rules" / "packs" / "wuhan" / "pack.yaml"
JIANGAN = (114.30, 30.60)  # district 420102


@functools.cache
def _wuhan() -> LoadedPack:
    return load_pack(WUHAN)


def _report(i: int) -> dict[str, Any]:
    return {
        "kind": "report",
        "id": f"r{i}",
        "ts": f"2026-07-01T08:{i:02d}:00+08:00",
        "lon": JIANGAN[0],
        "lat": JIANGAN[1],
        "category": "waterlogging",
    }


def _stream(pipeline: Pipeline, chain: Chain, offsets: list[int]) -> tuple[int, list[bytes]]:
    """One report per raw message of raw partition 0, all bound for one events partition."""
    envelopes: list[bytes] = []
    target = -1
    for i, offset in enumerate(offsets):
        out = pipeline.ingest(orjson.dumps({"events": [_report(i)]}), "raw", 0, offset)
        [(target, items)] = out.routed.items()
        envelopes.append(encode_enriched(items, (0, offset), chain.link(0, target, offset)))
    return target, envelopes


def test_chain_links_each_envelope_to_the_previous_one_of_its_stream_only() -> None:
    chain = Chain()
    assert chain.link(0, 2, 10) is None, "the first envelope of a life has no known predecessor"
    assert chain.link(0, 2, 14) == 10
    assert chain.link(1, 2, 3) is None, "another raw partition is another stream"
    assert chain.link(0, 3, 15) is None, "another events partition is another stream"
    assert chain.link(0, 2, 20) == 14
    assert chain.link(0, 2, 12) is None, "an older raw message ingested again (gap repair) is not linked"
    assert chain.link(0, 2, 21) == 20, "and does not move the stream's link back"
    chain.forget({1})
    assert chain.link(0, 2, 30) is None and chain.link(1, 2, 4) == 3


def test_the_link_travels_in_the_envelope_and_only_when_it_points_back() -> None:
    pipeline = Pipeline(Engine(_wuhan()), partitions=4)
    items = next(iter(pipeline.ingest(orjson.dumps({"events": [_report(1)]}), "raw", 0, 7).routed.values()))
    assert orjson.loads(encode_enriched(items, (0, 7), 5))["prev"] == 5
    assert "prev" not in orjson.loads(encode_enriched(items, (0, 7), 7))
    assert "prev" not in orjson.loads(encode_enriched(items, None, 5)), "no source, no stream"
    decoded, src = decode_envelope(encode_enriched(items, (0, 7), 5))
    assert src == (0, 7) and [i.event for i in decoded] == [i.event for i in items]


def test_a_broken_link_is_reported_before_anything_is_applied_and_the_repair_gives_the_unbroken_result() -> None:
    pipeline = Pipeline(Engine(_wuhan()), partitions=4)
    target, envelopes = _stream(pipeline, Chain(), [3, 5, 8, 9])

    whole: dict[str, Any] = {}
    expected = [pipeline.detect(e, whole, "events", target, n) for n, e in enumerate(envelopes)]
    assert all(d.missing is None for d in expected), "an unbroken stream has nothing missing"

    state: dict[str, Any] = {}
    pipeline.detect(envelopes[0], state, "events", target, 0)
    # envelopes[1] (raw offset 5) was lost; envelopes[2] names it
    before = orjson.dumps(state, option=orjson.OPT_SORT_KEYS)
    broken = pipeline.detect(envelopes[2], state, "events", target, 1)
    assert broken.missing == Missing(raw_partition=0, first=4, last=5)
    assert broken.incidents == [] and not broken.redelivered
    assert orjson.dumps(state, option=orjson.OPT_SORT_KEYS) == before, "nothing applied before the repair"

    # the repair applies what raw offset 5 gives this partition, then the message again without the check
    rederived = pipeline.detect(envelopes[1], state, "events", target, 1, chain=False)
    again = pipeline.detect(envelopes[2], state, "events", target, 1, chain=False)
    last = pipeline.detect(envelopes[3], state, "events", target, 2)
    assert [i.model_dump() for i in rederived.incidents + again.incidents + last.incidents] == [
        i.model_dump() for d in expected[1:] for i in d.incidents
    ]
    assert orjson.dumps(state, option=orjson.OPT_SORT_KEYS) == orjson.dumps(whole, option=orjson.OPT_SORT_KEYS)
    # the lost envelope, resent late, is skipped as applied
    assert pipeline.detect(envelopes[1], state, "events", target, 3).redelivered


def test_without_a_mark_only_the_linked_message_is_missing_and_an_applied_link_is_not() -> None:
    pipeline = Pipeline(Engine(_wuhan()), partitions=4)
    target, envelopes = _stream(pipeline, Chain(), [3, 5])
    assert pipeline.detect(envelopes[1], {}, "events", target, 0).missing == Missing(0, 3, 3)
    state: dict[str, Any] = {}
    pipeline.detect(envelopes[0], state, "events", target, 0)
    assert pipeline.detect(envelopes[1], state, "events", target, 1).missing is None
    unchecked: dict[str, Any] = {}
    out = pipeline.detect(envelopes[1], unchecked, "events", target, 0, chain=False)
    assert out.missing is None and unchecked, "with the check off the message is applied as it is"


def test_peek_gives_what_link_would_and_records_nothing() -> None:
    chain = Chain()
    assert chain.peek(0, 1, 5) is None and chain.link(0, 1, 5) is None
    assert chain.peek(0, 1, 9) == 5 and chain.peek(0, 1, 9) == 5  # peeking twice changes nothing
    assert chain.peek(0, 1, 4) is None and chain.peek(0, 2, 9) is None
    assert chain.link(0, 1, 9) == 5 and chain.peek(0, 1, 12) == 9


def test_a_raw_message_whose_envelope_would_be_too_large_is_one_dead_letter_with_the_reason() -> None:
    pipeline = Pipeline(Engine(_wuhan()), partitions=4, max_envelope_bytes=2_000)
    raw = orjson.dumps({"events": [_report(i) for i in range(12)]})
    out = pipeline.ingest(raw, "raw", 3, 17)
    sizes = {p: len(out.envelope(p, (3, 17))) for p in out.targets()}
    assert len(sizes) == 4 and max(sizes.values()) > 2_000  # the cluster rule copies reports everywhere
    letter = pipeline.oversized(raw, "raw", 3, 17, sizes)
    assert letter is not None
    assert (letter.kind, letter.source, letter.original_size) == ("oversized", "raw[3]@17", len(raw))
    biggest = max(sizes, key=lambda p: sizes[p])
    assert f"a {sizes[biggest]}-byte envelope for events partition {biggest}" in letter.reason
    assert "over the 2000-byte limit of an events message" in letter.reason
    assert pipeline.oversized(raw, "raw", 3, 17, {p: 2_000 for p in sizes}) is None  # at the limit: sent
