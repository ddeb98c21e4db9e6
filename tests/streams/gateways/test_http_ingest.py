"""SensorThings Observations and CloudEvents over the HTTP gateway; backpressure when Kafka is slow."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import orjson
from gateway_client import STANDARDS, dead_letters, raw_events, request, served, settings_for_tests

from rules.crs import wgs84_to_gcj02
from streams.gateways.outbox import MemoryOutbox

OBS = "/sensorthings/v1.1/Observations"
JSON = {"Content-Type": "application/json"}
EXAMPLES = STANDARDS / "sensorthings" / "spec-18-088-examples"


def load(path: Path) -> bytes:
    return path.read_bytes()


def test_observations_are_readings_and_the_datastream_location_is_cached() -> None:
    s = settings_for_tests()
    with served(s) as (gw, box, url):
        linked = load(EXAMPLES / "POST-Observation-link-existing.body.json")
        first = request(url, "POST", OBS, linked, JSON)
        assert first.status == 400 and "no location for ds 1" in first.json[0]["description"]
        inline = {
            "Datastream": {
                "@iot.id": 1,
                "name": "Water Level",
                "Thing": {"@iot.id": 9, "Locations": [{"location": {"type": "Point", "coordinates": [114.27, 30.59]}}]},
            },
            "phenomenonTime": "2026-07-01T10:00:00+08:00",
            "result": 31.5,
        }
        created = request(url, "POST", OBS, orjson.dumps(inline), JSON)
        assert created.status == 201 and created.headers["location"].startswith(OBS)
        again = request(url, "POST", OBS, linked, JSON)
        assert again.status == 201, again.body
        events = raw_events(box, s)
        assert [(e["metric"], e["value"], e["lon"], e["lat"]) for e in events] == [
            ("water_level_cm", 31.5, 114.27, 30.59),
            ("water_level_cm", 124.0, 114.27, 30.59),
        ]
        assert [d.source.split("#")[0] for d in dead_letters(box, s)] == [f"http:POST {OBS}"]
        assert gw.health()["datastreams_cached"] == 1


def test_cloudevents_structured_binary_and_batch_modes() -> None:
    s = settings_for_tests()
    report = {"kind": "report", "lon": 114.27, "lat": 30.59, "category": "waterlogging"}
    ce = {
        "specversion": "1.0",
        "id": "ce-1",
        "source": "/app",
        "type": "org.cityops.report",
        "time": "2026-07-01T00:00:00Z",
        "data": report,
    }
    with served(s) as (_, box, url):
        one = request(url, "POST", "/cloudevents", orjson.dumps(ce), {"Content-Type": "application/cloudevents+json"})
        assert one.status == 202 and one.json == {"accepted": 1, "rejected": []}
        glon, glat = wgs84_to_gcj02(114.27, 30.59)
        binary = {
            "ce-specversion": "1.0",
            "ce-id": "ce-2",
            "ce-source": "/app",
            "ce-type": "org.cityops.report",
            "ce-time": "2026-07-01T00:00:00Z",
            "ce-crs": "GCJ02",
            "Content-Type": "application/json",
        }
        two = request(url, "POST", "/cloudevents", orjson.dumps({**report, "lon": glon, "lat": glat}), binary)
        assert two.status == 202, two.body
        batch = [ce | {"id": "ce-3"}, ce | {"id": "ce-4", "data": {**report, "category": "bad category"}}]
        three = request(
            url, "POST", "/cloudevents", orjson.dumps(batch), {"Content-Type": "application/cloudevents-batch+json"}
        )
        assert three.status == 202 and three.json["accepted"] == 1
        assert three.json["rejected"][0]["index"] == 1 and "category" in three.json["rejected"][0]["reason"]
        events = raw_events(box, s)
        assert [e["id"] for e in events] == ["ce-1", "ce-2", "ce-3"]
        assert abs(events[1]["lon"] - 114.27) < 1e-9 and abs(events[1]["lat"] - 30.59) < 1e-9
        [dead] = dead_letters(box, s)
        assert dead.source.endswith("[1]") and json.loads(base64.b64decode(dead.original_b64))["id"] == "ce-4"
        plain = request(url, "POST", "/cloudevents", b"{}", JSON)
        assert plain.status == 400 and "not a CloudEvent" in plain.json[0]["description"]


def test_a_full_in_flight_buffer_answers_503_with_retry_after_then_recovers() -> None:
    s = settings_for_tests()
    s.gateway.ack_timeout_s = 0.5
    box = MemoryOutbox(max_in_flight=2, hold=True)
    body = b"service_code=noise&lat=30.6&long=114.3"
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    with served(s, box) as (gw, _, url):
        slow = [request(url, "POST", "/requests.json", body, form) for _ in range(2)]
        assert [r.status for r in slow] == [503, 503]  # Kafka never acked within 0.5 s
        assert "did not acknowledge within 0.5s" in slow[0].json[0]["description"]
        full = request(url, "POST", "/requests.json", body, form)
        assert full.status == 503 and full.headers["retry-after"] == "1"
        assert "2 records already await a Kafka ack" in full.json[0]["description"]
        box.hold = False
        box.release_held()
        deadline = time.monotonic() + 5
        while gw.outbox.stats()["in_flight"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert request(url, "POST", "/requests.json", body, form).status == 201
        assert gw.counts["refused_overloaded"] == 3


def test_a_batch_too_large_for_one_envelope_goes_as_several_under_its_key_in_order() -> None:
    """The worker's enriched envelope of a raw envelope is larger than it (zones), and one over the
    producer's limit is refused whole: so the gateway keeps its envelopes under ``envelope_max_bytes``."""
    s = settings_for_tests()
    s.gateway.envelope_max_bytes = 4096
    readings = [
        {
            "specversion": "1.0",
            "id": f"ce-{i:03d}",
            "source": "/sensors",
            "type": "org.cityops.reading",
            "time": f"2026-07-01T00:{i // 60:02d}:{i % 60:02d}Z",
            "data": {"kind": "reading", "lon": 114.27, "lat": 30.59, "sensor_id": "wl-1"}
            | {"metric": "water_level_cm", "value": float(i), "unit": "cm"},
        }
        for i in range(120)
    ]
    with served(s) as (_, box, url):
        got = request(
            url, "POST", "/cloudevents", orjson.dumps(readings), {"Content-Type": "application/cloudevents-batch+json"}
        )
        assert got.status == 202 and got.json == {"accepted": 120, "rejected": []}
    sent = [(value, key) for topic, value, key in box.records if topic == s.kafka.raw_topic]
    assert len(sent) > 1 and all(len(value) <= 4096 for value, _ in sent)
    assert len({key for _, key in sent}) == 1  # one sensor: one key, so one partition, in order
    values = [e["value"] for value, _ in sent for e in orjson.loads(value)["events"]]
    assert values == [float(i) for i in range(120)]
