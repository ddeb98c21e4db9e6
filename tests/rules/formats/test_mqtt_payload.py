"""MQTT payload decoding: topic filters, formats, JSON-path field mappings."""

from __future__ import annotations

from typing import Any

import pytest
from formats_data import NOW

from rules.crs import wgs84_to_bd09
from rules.formats.mapping import FieldMapping, JsonPath
from rules.formats.mqtt_payload import PayloadContext, decode_payload, format_for, topic_matches
from rules.model import Reading


@pytest.mark.parametrize(
    ("pattern", "topic", "matches"),
    [
        ("sensors/#", "sensors/a/b", True),
        ("sensors/#", "sensors", True),
        ("sensors/+/level", "sensors/wl-1/level", True),
        ("sensors/+/level", "sensors/wl-1/temp", False),
        ("sensors/+", "sensors/a/b", False),
        ("a/b", "a/b", True),
        ("a/b", "a/b/c", False),
    ],
)
def test_topic_filters_match_like_mqtt(pattern: str, topic: str, matches: bool) -> None:
    assert topic_matches(pattern, topic) is matches


def test_the_first_matching_filter_decides_the_format() -> None:
    formats: dict[str, Any] = {"sensors/special/#": "cityops", "sensors/#": "fields"}
    assert format_for("sensors/special/x", formats) == "cityops"
    assert format_for("sensors/x", formats) == "fields"
    assert format_for("other/x", formats) is None


def test_json_paths_walk_objects_and_arrays_and_topic_levels() -> None:
    doc = {"data": {"pos": [114.3, 30.6]}, "list": [{"v": 1}]}
    assert JsonPath("data.pos[0]").get(doc) == 114.3
    assert JsonPath("$.data.pos[-1]").get(doc) == 30.6
    assert JsonPath("list[0].v").get(doc) == 1
    assert JsonPath("list[3].v").get(doc) is None
    assert JsonPath("data.pos.x").get(doc) is None
    assert JsonPath("topic[1]").get(doc, "sensors/wl-9/level") == "wl-9"
    with pytest.raises(ValueError, match="not a JSON path"):
        JsonPath("a..b")


MAPPING = FieldMapping(
    lon="p.coords[0]", lat="p.coords[1]", value="v", sensor_id="topic[1]", metric="=water_level_cm", ts="t"
)


def test_a_field_mapping_builds_a_reading_with_a_deterministic_id() -> None:
    payload = b'{"p": {"coords": [114.27, 30.59]}, "v": 41.5, "t": "2026-07-01T00:00:00Z"}'
    decoded = decode_payload("sensors/wl-9/level", payload, "fields", PayloadContext(mapping=MAPPING), received_at=NOW)
    [event] = decoded.events
    assert isinstance(event, Reading)
    assert (event.sensor_id, event.metric, event.value, event.lon) == ("wl-9", "water_level_cm", 41.5, 114.27)
    assert event.id == "wl-9-2026-07-01T00:00:00Z"


def test_a_payload_crs_field_overrides_the_source_default() -> None:
    lon, lat = wgs84_to_bd09(114.27, 30.59)
    payload = f'{{"p": {{"coords": [{lon}, {lat}]}}, "v": 1, "t": 1751328000, "crs": "bd09"}}'.encode()
    [event] = decode_payload(
        "sensors/wl-9/x", payload, "fields", PayloadContext(mapping=MAPPING), received_at=NOW
    ).events
    assert (event.lon, event.lat) == pytest.approx((114.27, 30.59), abs=1e-9)


def test_missing_mapped_fields_are_named_in_the_rejection() -> None:
    decoded = decode_payload("sensors/wl-9/x", b'{"v": 1}', "fields", PayloadContext(mapping=MAPPING), received_at=NOW)
    assert decoded.events == []
    reason = decoded.rejected[0].reason
    assert "lon: Field required" in reason and "lat: Field required" in reason


def test_auto_detection_picks_cityops_json_and_observations() -> None:
    ours = (
        b'{"kind":"reading","id":"r1","ts":"2026-07-01T00:00:00Z","lon":114.3,"lat":30.6,'
        b'"sensor_id":"s","metric":"m","value":1}'
    )
    assert [e.id for e in decode_payload("x/y", ours, None, PayloadContext(), received_at=NOW).events] == ["r1"]
    obs = (
        b'{"result": 3, "Datastream": {"@iot.id": 1, "name": "pm25"}, '
        b'"FeatureOfInterest": {"feature": {"type": "Point", "coordinates": [114.3, 30.6]}}}'
    )
    [event] = decode_payload("x/y", obs, None, PayloadContext(), received_at=NOW).events
    assert isinstance(event, Reading) and event.metric == "pm25"


def test_an_envelope_with_a_bad_record_keeps_the_good_ones_and_indexes_the_bad() -> None:
    good = {"kind": "report", "id": "a", "ts": "2026-07-01T00:00:00Z", "lon": 114.3, "lat": 30.6, "category": "noise"}
    import orjson

    payload = orjson.dumps({"events": [good, {**good, "id": "b", "lon": "east"}]})
    decoded = decode_payload("cityops/events/x", payload, "cityops", PayloadContext(), received_at=NOW)
    assert [e.id for e in decoded.events] == ["a"]
    assert decoded.rejected[0].index == 1 and b'"east"' in decoded.rejected[0].original
