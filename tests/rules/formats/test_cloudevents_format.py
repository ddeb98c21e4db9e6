"""CloudEvents in: structured, batch and binary mode (HTTP and Kafka), and the worker's decode path."""

from __future__ import annotations

import base64
from typing import Any

import jsonschema
import orjson
import pytest
from formats_data import CLOUDEVENTS, NOW, load_json

from rules.crs import wgs84_to_gcj02
from rules.decode import Rejected
from rules.engine import Engine
from rules.formats.cloudevents_in import (
    CloudEvent,
    CloudEventContext,
    events_from_cloudevents,
    from_binary,
    from_kafka,
    from_structured,
    ingest_record,
)
from rules.model import Reading, Report
from rules.pipeline import Pipeline, decode_enriched, encode_enriched

REPORT = {"kind": "report", "lon": 114.30, "lat": 30.60, "category": "noise"}
EVENT = {
    "specversion": "1.0",
    "id": "ce-1",
    "source": "/apps/citizen",
    "type": "org.cityops.report",
    "time": "2026-07-01T10:00:00+08:00",
    "datacontenttype": "application/json",
    "data": REPORT,
}


def test_our_fixture_event_is_a_valid_cloudevent_by_the_spec_schema() -> None:
    jsonschema.Draft7Validator(load_json(CLOUDEVENTS / "cloudevents.json")).validate(EVENT)


def structured(doc: Any, ctype: str = "application/cloudevents+json") -> list[CloudEvent | Rejected]:
    return from_structured(orjson.dumps(doc), ctype)


def test_structured_mode_fills_the_event_id_time_and_source_from_the_cloudevent() -> None:
    decoded = events_from_cloudevents(structured(EVENT), CloudEventContext(), received_at=NOW)
    assert decoded.rejected == []
    [event] = decoded.events
    assert isinstance(event, Report)
    assert (event.id, event.ts.isoformat(), event.source) == ("ce-1", "2026-07-01T02:00:00+00:00", "/apps/citizen")


def test_data_base64_carries_an_envelope_of_events() -> None:
    data = orjson.dumps(
        {
            "events": [
                {**REPORT, "id": "a", "ts": "2026-07-01T00:00:00Z"},
                {**REPORT, "id": "b", "ts": "2026-07-01T00:00:00Z"},
            ]
        }
    )
    doc = {**{k: v for k, v in EVENT.items() if k != "data"}, "data_base64": base64.b64encode(data).decode()}
    decoded = events_from_cloudevents(structured(doc), CloudEventContext(), received_at=NOW)
    assert [e.id for e in decoded.events] == ["a", "b"]


def test_a_batch_judges_each_cloudevent_on_its_own() -> None:
    bad = {**EVENT, "id": "ce-2", "data": {**REPORT, "lat": 123.0}}
    no_type = {k: v for k, v in EVENT.items() if k != "type"}
    items = structured([EVENT, bad, no_type], "application/cloudevents-batch+json")
    decoded = events_from_cloudevents(items, CloudEventContext(), received_at=NOW)
    assert [e.id for e in decoded.events] == ["ce-1"]
    reasons = {r.index: r.reason for r in decoded.rejected}
    assert "lat: Input should be less than or equal to 90" in reasons[1]
    assert "type: a non-empty string is required" in reasons[2]


def test_the_crs_extension_converts_coordinates() -> None:
    lon, lat = wgs84_to_gcj02(114.30, 30.60)
    doc = {**EVENT, "crs": "GCJ02", "data": {**REPORT, "lon": lon, "lat": lat}}
    [event] = events_from_cloudevents(structured(doc), CloudEventContext(), received_at=NOW).events
    assert (event.lon, event.lat) == pytest.approx((114.30, 30.60), abs=1e-9)


def test_binary_mode_over_http_reads_percent_encoded_ce_headers() -> None:
    headers = {
        "ce-specversion": "1.0",
        "ce-id": "b-1",
        "ce-source": "/apps/%E6%AD%A6%E6%B1%89",
        "ce-type": "org.cityops.report",
        "Content-Type": "application/json",
    }
    item = from_binary(headers, orjson.dumps({**REPORT, "ts": "2026-07-01T00:00:00Z"}))
    assert isinstance(item, CloudEvent) and item.source == "/apps/武汉"
    [event] = events_from_cloudevents([item], CloudEventContext(), received_at=NOW).events
    assert event.id == "b-1"


def test_a_sensorthings_typed_cloudevent_carries_an_observation() -> None:
    obs = {
        "Datastream": {"@iot.id": 4, "name": "pm25"},
        "result": 88,
        "phenomenonTime": "2026-07-01T00:00:00Z",
        "FeatureOfInterest": {"feature": {"type": "Point", "coordinates": [114.3, 30.6]}},
    }
    doc = {**EVENT, "type": "org.ogc.sensorthings.observation", "data": obs}
    [event] = events_from_cloudevents(structured(doc), CloudEventContext(), received_at=NOW).events
    assert isinstance(event, Reading) and (event.metric, event.value, event.sensor_id) == ("pm25", 88.0, "ds-4")


@pytest.mark.parametrize(
    ("doc", "reason"),
    [
        ({**EVENT, "specversion": "0.3"}, "only 1.0 is supported"),
        ({**EVENT, "time": "yesterday"}, "time: not an RFC 3339"),
        ({**EVENT, "datacontenttype": "text/xml"}, "is not JSON"),
        ({k: v for k, v in EVENT.items() if k != "data"}, "has no data"),
        ({**EVENT, "data_base64": "!!"}, "mutually exclusive"),
        ({**EVENT, "Bad-Name": 1}, "is not lower-case"),
        ({**EVENT, "crs": "UTM50N"}, "unknown coordinate system"),
        ([EVENT], "must be a JSON object"),
    ],
)
def test_invalid_cloudevents_are_rejected_with_the_reason(doc: Any, reason: str) -> None:
    decoded = events_from_cloudevents(structured(doc), CloudEventContext(), received_at=NOW)
    assert decoded.events == []
    assert reason in decoded.rejected[0].reason


def kafka_binary(data: bytes, **extra: bytes) -> list[tuple[str, bytes]]:
    return [
        ("ce_specversion", b"1.0"),
        ("ce_id", b"k-1"),
        ("ce_source", b"/sensors"),
        ("ce_type", b"org.cityops.reading"),
        ("content-type", b"application/json"),
        *extra.items(),
    ]


def test_kafka_records_without_cloudevent_headers_are_not_cloudevents() -> None:
    assert from_kafka(b'{"kind":"report"}', None) is None
    assert from_kafka(b'{"kind":"report"}', [("trace", b"x")]) is None


def test_kafka_binary_and_structured_modes_are_recognised() -> None:
    binary = from_kafka(b"{}", kafka_binary(b"{}"))
    assert isinstance(binary, CloudEvent) and binary.id == "k-1" and binary.data_bytes == b"{}"
    structured_ = from_kafka(orjson.dumps(EVENT), [("content-type", b"application/cloudevents+json; charset=utf-8")])
    assert isinstance(structured_, CloudEvent) and structured_.id == "ce-1"
    bad_header = from_kafka(b"{}", [("ce_specversion", b"1.0"), ("ce_id", b"\xff")])
    assert isinstance(bad_header, Rejected) and "not UTF-8" in bad_header.reason


def test_the_ingest_path_unwraps_kafka_cloudevents_and_dead_letters_bad_data(engine: Engine) -> None:
    pipeline = Pipeline(engine)
    good = orjson.dumps(
        {
            "kind": "reading",
            "ts": "2026-07-01T00:00:00Z",
            "lon": 114.27,
            "lat": 30.59,
            "sensor_id": "wl-1",
            "metric": "water_level_cm",
            "value": 50,
        }
    )
    out = ingest_record(pipeline, good, kafka_binary(good), "t.raw", 2, 17)
    items = [i for batch in out.routed.values() for i in batch]
    assert [i.event.id for i in items] == ["k-1"] and out.dead == []
    assert items[0].zones["districts"] == ["420103"]
    assert decode_enriched(encode_enriched(items))[0].event.id == "k-1"
    bad = orjson.dumps({"kind": "reading", "lat": 91})
    out = ingest_record(pipeline, bad, kafka_binary(bad), "t.raw", 2, 18)
    assert out.routed == {}
    [dead] = out.dead
    assert dead.source == "t.raw[2]@18" and dead.kind == "invalid" and "lat" in dead.reason
    plain = ingest_record(pipeline, good, [], "t.raw", 0, 1)
    assert [d.kind for d in plain.dead] == ["invalid"]  # plain JSON goes through decode_message (no id there)
