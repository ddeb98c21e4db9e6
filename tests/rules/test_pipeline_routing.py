"""Batched repartitioning: one envelope per target partition per raw message, and idempotency by source."""

from __future__ import annotations

import functools
import random
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from kafka.partitioner.default import murmur2 as kafka_murmur2

from rules.engine import Engine
from rules.pack import LoadedPack, load_pack
from rules.pipeline import (
    MAX_PARTITIONS,
    Pipeline,
    decode_envelope,
    encode_enriched,
    encode_tick,
    murmur2,
    partition_for,
    source_position,
)

WUHAN = Path(__file__).resolve().parents[2] / "rules" / "packs" / "wuhan" / "pack.yaml"
JIANGAN = (114.30, 30.60)  # district 420102


@functools.cache
def _wuhan() -> LoadedPack:
    return load_pack(WUHAN)


def _pipeline(partitions: int = 4) -> Pipeline:
    return Pipeline(Engine(_wuhan()), partitions=partitions)


def _report(i: int, minute: int, lon: float, lat: float, category: str = "waterlogging") -> dict[str, Any]:
    return {
        "kind": "report",
        "id": f"r{i}",
        "ts": f"2026-07-01T08:{minute:02d}:00+08:00",
        "lon": lon,
        "lat": lat,
        "category": category,
    }


def _mixed(n: int) -> bytes:
    """A raw envelope of n readings, reports and tracks spread over Wuhan (and a few outside it)."""
    rng = random.Random(7)
    events: list[dict[str, Any]] = []
    for i in range(n):
        lon, lat = 114.1 + rng.random() * 0.45, 30.4 + rng.random() * 0.35
        ts = f"2026-07-01T08:{i % 60:02d}:00+08:00"
        if i % 5 == 0:
            events.append(
                {"kind": "track", "id": f"t{i}", "ts": ts, "lon": lon, "lat": lat, "object_id": f"uav-{i % 7}"}
                | {"object_type": "drone", "alt_m": 50.0}
            )
        elif i % 5 == 1:
            events.append(_report(i, i % 60, lon, lat))
        else:
            events.append(
                {"kind": "reading", "id": f"e{i}", "ts": ts, "lon": lon, "lat": lat, "sensor_id": f"s{i % 40}"}
                | {"metric": "pm25", "value": 20.0}
            )
    events.append({"kind": "reading", "id": "far", "ts": "2026-07-01T08:00:00+08:00", "lon": 116.4, "lat": 39.9})
    events[-1] |= {"sensor_id": "bj", "metric": "pm25", "value": 1.0}
    return orjson.dumps({"events": events})


def test_partition_function_is_kafkas_default_partitioner_and_stable_across_runs() -> None:
    # fixed values: a change of the function would move every zone's state to another partition
    keys = ("zone:420102", "zone:420111", "obj:uav-3", "zone:_outside")
    assert [partition_for(k, 4) for k in keys] == [2, 1, 1, 2]
    assert [partition_for(k, 12) for k in keys] == [6, 1, 5, 10]
    for key in (*keys, "zone:c00017", "zone:区", ""):
        for n in (1, 3, 4, 12, MAX_PARTITIONS):
            assert partition_for(key, n) == (kafka_murmur2(key.encode()) & 0x7FFFFFFF) % n


@given(st.binary(max_size=64))
def test_murmur2_equals_the_kafka_clients(data: bytes) -> None:
    assert murmur2(data) == kafka_murmur2(data)


def test_partition_of_caches_the_same_answer_as_partition_for() -> None:
    pipeline = _pipeline(12)
    for key in ("zone:420102", "obj:x", "zone:420102"):
        assert pipeline.partition_of(key) == partition_for(key, 12)


def test_a_raw_message_gives_at_most_one_envelope_per_target_partition_routed_by_zone_or_object() -> None:
    pipeline = _pipeline(4)
    out = pipeline.ingest(_mixed(600), "raw", 0, 0)
    assert out.dead == []
    assert set(out.routed) <= set(range(4))
    assert len(out.routed) > 1, "600 events over Wuhan spread over several partitions"
    assert out.count == 601
    keys_per_partition: dict[int, set[str]] = {}
    for partition, items in out.routed.items():
        for item in items:
            key = pipeline.route_key(item)
            assert partition_for(key, 4) == partition
            keys_per_partition.setdefault(partition, set()).add(key)
    assert any(len(keys) > 1 for keys in keys_per_partition.values()), "several zones share one envelope"
    assert {i.event.id for items in out.routed.values() for i in items} == {
        e["id"] for e in orjson.loads(_mixed(600))["events"]
    }


def test_envelope_round_trip_keeps_events_zones_and_source() -> None:
    pipeline = _pipeline(4)
    out = pipeline.ingest(_mixed(50), "raw", 0, 0)
    items = next(iter(out.routed.values()))
    decoded, src = decode_envelope(encode_enriched(items, (3, 41)))
    assert src == (3, 41)
    assert [(i.event, i.zones) for i in decoded] == [(i.event, i.zones) for i in items]


def test_source_positions_are_one_ordered_stream_per_events_and_raw_partition() -> None:
    positions = {source_position(q, (r, 5)) for q in range(4) for r in range(4)}
    assert len(positions) == 16
    assert all(offset == 5 for _, offset in positions)


def _envelope(pipeline: Pipeline, events: list[dict[str, Any]], src: tuple[int, int]) -> bytes:
    out = pipeline.ingest(orjson.dumps({"events": events}), "raw", src[0], src[1])
    assert len(out.routed) == 1
    return encode_enriched(next(iter(out.routed.values())), src)


def test_a_re_ingested_raw_message_is_skipped_by_detect() -> None:
    pipeline = _pipeline(4)
    state: dict[str, Any] = {}
    reports = [_report(i, i, *JIANGAN) for i in range(3)]
    envelope = _envelope(pipeline, reports, (0, 17))
    first = pipeline.detect(envelope, state, "events", 2, 5)
    [incident] = [i for i in first.incidents if i.rule_id == "flood.waterlogging-reports"]
    assert incident.evidence.count == 3
    # the same raw message ingested again after a crash: a new events offset, the same source.
    # Its incidents went out when it was first applied (a checkpoint is written only after the
    # producer flushed them), so it changes nothing and emits nothing.
    before = orjson.dumps(state, option=orjson.OPT_SORT_KEYS)
    again = pipeline.detect(envelope, state, "events", 2, 9)
    assert again.redelivered and again.incidents == [] and again.dead == []
    assert orjson.dumps(state, option=orjson.OPT_SORT_KEYS) == before
    # the next raw message of that stream is applied as usual
    later = pipeline.detect(_envelope(pipeline, [_report(9, 9, *JIANGAN)], (0, 18)), state, "events", 2, 10)
    [grown] = [i for i in later.incidents if i.rule_id == "flood.waterlogging-reports"]
    assert grown.evidence.count == 4 and not later.redelivered


def test_a_redelivery_after_its_entries_expired_opens_nothing() -> None:
    """Expiry drops entries and the positions they applied; the stream's mark still knows the message."""
    pipeline = _pipeline(4)
    state: dict[str, Any] = {}
    old = _envelope(pipeline, [_report(i, i, *JIANGAN) for i in range(3)], (1, 4))
    first = pipeline.detect(old, state, "events", 2, 0)
    assert any(i.rule_id == "flood.waterlogging-reports" for i in first.incidents)
    # a day later, the bucket is gone
    late = {**_report(50, 0, *JIANGAN), "ts": "2026-07-02T09:00:00+08:00"}
    pipeline.detect(_envelope(pipeline, [late], (1, 5)), state, "events", 2, 1)
    assert pipeline.engine.expire(state, partition=2) > 0
    # re-ingested after a crash and replayed by gap repair (not judged late), a day later
    again = pipeline.detect(old, state, "events", 2, 2, check_late=False)
    assert again.redelivered and again.incidents == [] and again.dead == []


def test_an_older_raw_message_arriving_through_another_partition_is_not_skipped() -> None:
    """One entry fed from two events partitions (e.g. a rule keyed across zone borders)."""
    pipeline = _pipeline(4)
    state: dict[str, Any] = {}
    two = _envelope(pipeline, [_report(1, 1, *JIANGAN), _report(2, 2, *JIANGAN)], (0, 10))
    one = _envelope(pipeline, [_report(3, 3, *JIANGAN)], (0, 9))
    assert [i for i in pipeline.detect(two, state, "events", 0, 100).incidents if i.rule_id.endswith("-reports")] == []
    out = pipeline.detect(one, state, "events", 1, 200)  # raw offset 9 < 10, but another partition
    [incident] = [i for i in out.incidents if i.rule_id == "flood.waterlogging-reports"]
    assert incident.evidence.count == 3


def test_tick_and_poison_envelopes() -> None:
    pipeline = _pipeline(4)
    assert decode_envelope(orjson.dumps({"v": 1, "tick": 5})) == ([], None)
    out = pipeline.detect(b"{not json", {}, "events", 0, 1)
    assert [d.kind for d in out.dead] == ["poison"]


@pytest.mark.parametrize("partitions", [0, MAX_PARTITIONS + 1])
def test_pipeline_refuses_a_partition_count_out_of_range(partitions: int) -> None:
    with pytest.raises(ValueError, match="partitions"):
        Pipeline(Engine(_wuhan()), partitions=partitions)


def test_an_envelope_item_without_a_newer_field_still_decodes_with_its_default() -> None:
    pipeline = _pipeline(4)
    items = next(iter(pipeline.ingest(_mixed(20), "raw", 0, 0).routed.values()))
    doc = orjson.loads(encode_enriched(items, (0, 1)))
    for item in doc["items"]:
        del item["event"]["source"]  # as if written before the model had this field
    decoded, _ = decode_envelope(orjson.dumps(doc))
    assert [i.event for i in decoded] == [i.event for i in items]
    assert all(i.event.source is None for i in decoded)


def test_malformed_envelope_items_are_poison() -> None:
    pipeline = _pipeline(4)
    bad = orjson.dumps({"v": 1, "items": [{"event": {"kind": "reading"}, "zones": []}], "src": [0, 1]})
    out = pipeline.detect(bad, {}, "events", 0, 3)
    assert [d.kind for d in out.dead] == ["poison"]


def test_lateness_is_judged_within_each_raw_partitions_stream() -> None:
    """How the consumer interleaves raw partitions (or a crash re-ingests one) must not make events late."""
    pipeline = _pipeline(4)
    state: dict[str, Any] = {}
    first = _envelope(pipeline, [_report(1, 0, *JIANGAN)], (1, 0))  # 08:00 from raw partition 1
    at = {**_report(2, 0, *JIANGAN), "ts": "2026-07-01T12:00:00+08:00"}
    ahead = _envelope(pipeline, [at], (0, 1))  # raw partition 0 has gone 4 hours ahead
    behind = _envelope(pipeline, [_report(4, 5, *JIANGAN)], (1, 1))  # 08:05 from raw partition 1
    assert pipeline.detect(first, state, "events", 2, 0).dead == []
    assert pipeline.detect(ahead, state, "events", 2, 1).dead == []
    out = pipeline.detect(behind, state, "events", 2, 2)
    assert out.dead == [], "in order within its own stream: on time"
    third = pipeline.detect(_envelope(pipeline, [_report(5, 6, *JIANGAN)], (1, 2)), state, "events", 2, 3)
    [incident] = [i for i in third.incidents if i.rule_id == "flood.waterlogging-reports"]
    assert incident.evidence.count == 3, "08:00, 08:05 and 08:06 all counted"
    # within one stream, 4 hours back is beyond the pack's allowed lateness of 1 hour
    back = _envelope(pipeline, [_report(3, 30, *JIANGAN)], (0, 2))
    late = pipeline.detect(back, state, "events", 2, 4)
    assert [d.kind for d in late.dead] == ["late"]
    assert "2026-07-01T04:00:00+00:00" in late.dead[0].reason, "the reason names the stream's watermark"


def test_the_first_message_of_a_stream_is_never_late_against_other_partitions_part_of_its_raw_message() -> None:
    """One raw message spanning 3 hours: the partition that applies its part second must not drop it."""
    pipeline = _pipeline(4)
    early = _report(1, 0, *JIANGAN)  # 08:00 in Jiang'an
    hongshan = (114.40, 30.50)
    later = {**_report(2, 0, *hongshan), "ts": "2026-07-01T11:00:00+08:00"}
    out = pipeline.ingest(orjson.dumps({"events": [early, later]}), "raw", 0, 0)
    assert len(out.routed) == 2, "the two districts route to two partitions"
    (p_early, items_early), (p_later, items_later) = sorted(out.routed.items(), key=lambda kv: kv[1][0].event.ts)
    state: dict[str, Any] = {}  # one worker holding both partitions: one state, one engine
    assert pipeline.detect(encode_enriched(items_later, (0, 0)), state, "events", p_later, 0).dead == []
    first = pipeline.detect(encode_enriched(items_early, (0, 0)), state, "events", p_early, 0)
    assert first.dead == [], "nothing came before it in its own stream"
    assert [i.rule_id for i in first.incidents] == [], "a single report opens nothing, but it counts:"
    again = pipeline.detect(
        _envelope(pipeline, [_report(3, 1, *JIANGAN), _report(4, 2, *JIANGAN)], (0, 1)), state, "events", p_early, 1
    )
    [incident] = [i for i in again.incidents if i.rule_id == "flood.waterlogging-reports"]
    assert incident.evidence.count == 3


def _level(i: int, ts: str, sensor: str) -> dict[str, Any]:
    return {"kind": "reading", "id": f"w{i}", "ts": ts, "lon": JIANGAN[0], "lat": JIANGAN[1]} | {
        "sensor_id": sensor,
        "metric": "water_level_cm",
        "value": 10.0,
    }


def test_a_tick_replayed_by_gap_repair_judges_nothing_and_a_live_tick_does() -> None:
    pipeline = _pipeline(4)
    state: dict[str, Any] = {}
    quiet = _envelope(pipeline, [_level(1, "2026-07-01T08:00:00+08:00", "wl-a")], (0, 0))
    later = _envelope(pipeline, [_level(2, "2026-07-01T08:30:00+08:00", "wl-b")], (1, 0))
    pipeline.detect(quiet, state, "events", 2, 0)
    pipeline.detect(later, state, "events", 2, 1)  # the watermark is 30 minutes on
    tick = encode_tick(0)
    replayed = pipeline.detect(tick, state, "events", 2, 2, check_late=False)
    assert replayed.incidents == []
    live = pipeline.detect(tick, state, "events", 2, 2)
    assert {i.subject for i in live.incidents if i.rule_id == "ops.sensor-silence"} >= {"wl-a"}


def test_silence_in_a_partition_is_judged_at_that_partitions_own_event_time() -> None:
    """Another partition read further ahead must not make this partition's sensors look silent."""
    pipeline = _pipeline(4)
    state: dict[str, Any] = {}
    pipeline.detect(
        _envelope(pipeline, [_level(1, "2026-07-01T08:00:00+08:00", "wl-a")], (0, 0)), state, "events", 2, 0
    )
    ahead = _envelope(pipeline, [_level(2, "2026-07-01T09:00:00+08:00", "wl-z")], (1, 0))
    pipeline.detect(ahead, state, "events", 3, 0)  # partition 3 is an hour on
    assert pipeline.engine.watermark_ms is not None and pipeline.partition_watermark(state, 2) is not None
    assert pipeline.engine.watermark_ms - pipeline.partition_watermark(state, 2) == 3_600_000
    quiet = pipeline.detect(encode_tick(0), state, "events", 2, 1)
    assert [i for i in quiet.incidents if i.subject == "wl-a"] == []
    assert pipeline.expire(state, 2) == 0, "nothing of partition 2 is over its own floor yet"
    # partition 2's own time moves 30 minutes on: now wl-a is silent
    pipeline.detect(
        _envelope(pipeline, [_level(3, "2026-07-01T08:30:00+08:00", "wl-b")], (0, 1)), state, "events", 2, 2
    )
    silent = pipeline.detect(encode_tick(0), state, "events", 2, 3)
    assert [i.subject for i in silent.incidents if i.subject == "wl-a"] == ["wl-a"]
