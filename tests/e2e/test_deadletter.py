"""Malformed input is dead-lettered with its reason, source and bytes; good input still flows."""

from __future__ import annotations

import base64

import orjson
import pytest
from kafka import KafkaProducer
from stack import Stack, read_topic

from rules.model import DeadLetterRecord

pytestmark = pytest.mark.integration

GOOD = {
    "kind": "reading",
    "id": "good-1",
    "ts": "2026-07-01T08:00:00+08:00",
    "lon": 114.27,
    "lat": 30.59,
    "sensor_id": "wl-x",
    "metric": "water_level_cm",
    "value": 55.0,
}

BAD: dict[str, bytes] = {
    "not valid JSON": b'{"kind": "reading", ',
    "Input should be a valid number": orjson.dumps({**GOOD, "id": "b-type", "value": "deep"}),
    "lat: Input should be less than or equal to 90": orjson.dumps({**GOOD, "id": "b-lat", "lat": 91.5}),
    "lon: Input should be greater than or equal to -180": orjson.dumps({**GOOD, "id": "b-lon", "lon": -181}),
    "sensor_id: Field required": orjson.dumps({k: v for k, v in GOOD.items() if k != "sensor_id"} | {"id": "b-miss"}),
    "unknown event kind 'flood'": orjson.dumps({**GOOD, "id": "b-kind", "kind": "flood"}),
    "exceeds the limit": orjson.dumps({**GOOD, "id": "b-big", "unit": "x" * 2_000_000}),
    "NaN": b'{"kind":"reading","id":"b-nan","ts":"2026-07-01T08:00:00+08:00","lon":114.27,"lat":30.59,'
    b'"sensor_id":"s","metric":"water_level_cm","value":NaN}',
}


def test_every_bad_record_is_dead_lettered_with_reason_and_source_and_good_ones_are_processed(stack: Stack) -> None:
    kafka = stack.settings.kafka
    stack.start("store")
    stack.start("worker")
    producer = KafkaProducer(bootstrap_servers=kafka.bootstrap, max_request_size=4_000_000)
    for payload in BAD.values():
        producer.send(kafka.raw_topic, value=payload, partition=0)
    mixed = [GOOD, {**GOOD, "id": "b-in-list", "lat": "north"}, {**GOOD, "id": "good-2", "value": 61.0}]
    producer.send(kafka.raw_topic, value=orjson.dumps({"events": mixed}), partition=0)
    producer.flush()
    producer.close()

    stack.wait_for(
        "every dead letter in the store",
        lambda: stack.reader.scalar("SELECT count(*) FROM dead_letters") == len(BAD) + 1,
    )
    stack.wait_for("both good readings in the store", lambda: stack.reader.scalar("SELECT count(*) FROM events") == 2)

    letters = [
        DeadLetterRecord.model_validate_json(r.value) for r in read_topic(stack.settings, kafka.deadletter_topic)
    ]
    assert len(letters) == len(BAD) + 1
    by_offset = {int(d.source.split("@")[1].split("#")[0]): d for d in letters}
    for offset, (expected_reason, payload) in enumerate(BAD.items()):
        letter = by_offset[offset]
        assert expected_reason in letter.reason, letter.reason
        assert letter.source == f"{kafka.raw_topic}[0]@{offset}"
        original = base64.b64decode(letter.original_b64)
        assert letter.original_size == len(payload)
        if letter.truncated:  # only the oversized record: a 256 KiB prefix, plus size and hash of the whole
            assert expected_reason == "exceeds the limit"
            assert payload.startswith(original) and len(original) == 262_144
        else:
            assert original == payload
    in_list = by_offset[len(BAD)]
    assert in_list.source == f"{kafka.raw_topic}[0]@{len(BAD)}#1"
    assert "lat" in in_list.reason
    assert orjson.loads(base64.b64decode(in_list.original_b64))["id"] == "b-in-list"

    # the good records still made an incident, and the worker is still running
    stack.wait_for(
        "the flood incident",
        lambda: (
            stack.reader.scalar("SELECT evidence_count FROM incidents WHERE rule_id = 'flood.water-level-high'") == 2
        ),
    )
    assert stack.children["worker"].alive()


def test_a_raw_envelope_too_large_once_enriched_is_dead_lettered_whole_and_ingest_goes_on(stack: Stack) -> None:
    """Enriched events are larger than raw ones (their zones; the Wuhan pack's cluster rule copies
    reports to every partition), so a raw envelope under the raw limit (1 MiB) can make an events
    message over what the producer sends (about 1 MB). It used to crash the ingest agent, and its
    events were neither applied nor dead-lettered. Now it is refused whole, with the reason, and
    the worker goes on with the next message."""
    kafka = stack.settings.kafka
    stack.start("worker")
    reports: list[dict[str, object]] = []
    while len(orjson.dumps({"events": reports})) < 900_000:
        n = len(reports)
        at = f"2026-07-01T08:{n // 60 % 60:02d}:{n % 60:02d}+08:00"
        reports.append(
            {"kind": "report", "id": f"big-{n}", "ts": at, "lon": 114.27, "lat": 30.59, "category": "waterlogging"}
            | {"description": "water in the street " * 10}
        )
    big = orjson.dumps({"events": reports})
    drone = {
        "kind": "track",
        "id": "drone-after",
        "ts": "2026-07-01T09:30:00+08:00",
        "lon": 114.27,
        "lat": 30.59,
        "object_id": "uav-9",
        "object_type": "drone",
        "alt_m": 150.0,
    }
    producer = KafkaProducer(bootstrap_servers=kafka.bootstrap, max_request_size=4_000_000)
    producer.send(kafka.raw_topic, value=big, partition=0)
    producer.send(kafka.raw_topic, value=orjson.dumps({"events": [drone]}), partition=0)
    producer.flush()
    producer.close()

    def incidents() -> list[dict[str, object]]:
        return [orjson.loads(r.value) for r in read_topic(stack.settings, kafka.incidents_topic, 1.0)]

    stack.wait_for("the drone's incident", lambda: any(i["rule_id"] == "airspace.drone-too-high" for i in incidents()))
    letters = [
        DeadLetterRecord.model_validate_json(r.value) for r in read_topic(stack.settings, kafka.deadletter_topic)
    ]
    [letter] = [d for d in letters if d.kind == "oversized"]
    assert letter.source == f"{kafka.raw_topic}[0]@0"
    assert "-byte limit of an events message: send envelopes of at most about" in letter.reason
    assert (letter.original_size, letter.truncated) == (len(big), True)
    # nothing of it was sent or applied: no events message holds its events, no incident counts them
    assert not any(b'"big-0"' in r.value for r in read_topic(stack.settings, kafka.events_topic, 1.0))
    assert {i["rule_id"] for i in incidents()} == {"airspace.drone-too-high"}
    log = (stack.logs / "worker.log").read_text()
    assert "Crashed" not in log and "MessageSizeTooLargeError" not in log
