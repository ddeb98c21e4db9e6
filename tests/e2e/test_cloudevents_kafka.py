"""The worker reads CloudEvents on the raw topic, binary (ce_* headers) and structured, beside plain JSON."""

from __future__ import annotations

import orjson
import pytest
from kafka import KafkaProducer
from stack import Stack, read_topic

from rules.crs import wgs84_to_gcj02
from rules.model import DeadLetterRecord
from rules.pipeline import decode_enriched

pytestmark = pytest.mark.integration

READING = {
    "kind": "reading",
    "ts": "2026-07-01T08:00:00+08:00",
    "lon": 114.27,
    "lat": 30.59,
    "sensor_id": "wl-ce",
    "metric": "water_level_cm",
    "value": 12.0,
}


def test_cloudevents_on_the_raw_topic_are_unwrapped_converted_and_bad_ones_dead_lettered(stack: Stack) -> None:
    kafka = stack.settings.kafka
    stack.start("worker")
    producer = KafkaProducer(bootstrap_servers=kafka.bootstrap)
    glon, glat = wgs84_to_gcj02(114.27, 30.59)
    binary = [
        ("ce_specversion", b"1.0"),
        ("ce_id", b"ce-bin-1"),
        ("ce_source", b"/sensors"),
        ("ce_type", b"org.cityops.reading"),
        ("ce_crs", b"GCJ02"),
        ("content-type", b"application/json"),
    ]
    producer.send(kafka.raw_topic, value=orjson.dumps({**READING, "lon": glon, "lat": glat}), headers=binary)
    structured = {
        "specversion": "1.0",
        "id": "ce-str-1",
        "source": "/app",
        "type": "org.cityops.reading",
        "data": {**READING, "sensor_id": "wl-ce2"},
    }
    producer.send(
        kafka.raw_topic, value=orjson.dumps(structured), headers=[("content-type", b"application/cloudevents+json")]
    )
    producer.send(kafka.raw_topic, value=orjson.dumps({**READING, "id": "plain-1"}))
    producer.send(kafka.raw_topic, value=orjson.dumps({**READING, "lat": 95}), headers=binary[:-2])
    producer.flush()
    producer.close()

    def enriched() -> dict[str, object]:
        return {
            i.event.id: i for r in read_topic(stack.settings, kafka.events_topic, 2.0) for i in decode_enriched(r.value)
        }

    stack.wait_for("three events on the events topic", lambda: len(enriched()) == 3, timeout=90)
    items = enriched()
    assert set(items) == {"ce-bin-1", "ce-str-1", "plain-1"}
    converted = items["ce-bin-1"].event  # type: ignore[attr-defined]
    assert abs(converted.lon - 114.27) < 1e-9 and abs(converted.lat - 30.59) < 1e-9
    assert items["ce-bin-1"].zones["districts"] == ["420103"]  # type: ignore[attr-defined]
    stack.wait_for(
        "the bad CloudEvent dead-lettered", lambda: len(read_topic(stack.settings, kafka.deadletter_topic, 2.0)) == 1
    )
    [dead] = [DeadLetterRecord.model_validate_json(r.value) for r in read_topic(stack.settings, kafka.deadletter_topic)]
    assert dead.kind == "invalid" and "lat" in dead.reason and dead.source.startswith(f"{kafka.raw_topic}[")
