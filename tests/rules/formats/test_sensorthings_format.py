"""SensorThings Observations -> readings, with the Datastream location cache (spec 18-088 examples)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from formats_data import NOW, SENSORTHINGS, load_json

from rules.crs import wgs84_to_gcj02
from rules.decode import Rejected
from rules.formats.sensorthings import (
    DatastreamInfo,
    LocationCache,
    datastream_id_from_topic,
    parse_observation,
    slug_metric,
)
from rules.model import Reading

METRICS = {"water level": "water_level_cm"}


def deep_insert_body() -> dict[str, Any]:
    text = (SENSORTHINGS / "POST-Thing-deep-insert.http").read_text(encoding="utf-8")
    body = text[text.index("{") :]
    body = re.sub(r'"description": "[^"]*"', '"description": ""', body, flags=re.S)  # the spec wraps lines in strings
    doc: dict[str, Any] = json.loads(body)
    return doc


def observation_of_deep_insert() -> dict[str, Any]:
    """The deep-insert example's Observation, with its Datastream (and Thing with Locations) inline."""
    thing = deep_insert_body()
    ds = dict(thing["Datastreams"][0])
    obs = ds.pop("Observations")[0]
    ds["@iot.id"] = 1
    ds["Thing"] = {"@iot.id": 7, "Locations": thing["Locations"]}
    return {**obs, "Datastream": ds}


def parse(doc: Any, cache: LocationCache, **kw: Any) -> Reading | Rejected:
    return parse_observation(doc, cache=cache, metrics=METRICS, received_at=NOW, raw=b"raw", **kw)


def test_the_link_existing_example_is_rejected_until_its_datastream_is_known() -> None:
    cache = LocationCache()
    doc = load_json(SENSORTHINGS / "POST-Observation-link-existing.body.json")
    first = parse(doc, cache)
    assert isinstance(first, Rejected)
    assert "no location for ds 1" in first.reason and "no metric for ds 1" in first.reason
    cache.merge("ds:1", DatastreamInfo(lon=114.3, lat=30.6, metric="water_level_cm", sensor_id="ds-1"))
    got = parse(doc, cache)
    assert isinstance(got, Reading)
    assert (got.value, got.lon, got.lat, got.metric, got.sensor_id) == (124.0, 114.3, 30.6, "water_level_cm", "ds-1")
    assert got.ts.isoformat() == "2013-04-18T23:15:00+00:00"


def test_the_deep_insert_observation_uses_its_feature_of_interest_and_teaches_the_cache() -> None:
    cache = LocationCache()
    got = parse(observation_of_deep_insert(), cache)
    assert isinstance(got, Reading), got
    # the FeatureOfInterest polygon's bounding-box centre (its rings span 4..100 E, 4..50 N)
    assert (got.lon, got.lat) == (52.0, 27.0)
    assert got.metric == "dewpoint_temperature" and got.unit == "°C" and got.value == 70.4
    assert got.ts.isoformat() == "2012-06-26T09:42:02+00:00"
    later = parse({"result": 71.0, "phenomenonTime": "2012-06-26T04:00:00-06:00"}, cache, topic_datastream="1")
    assert isinstance(later, Reading), later
    assert (later.lon, later.lat, later.metric, later.sensor_id) == (52.0, 27.0, "dewpoint_temperature", "ds-1")


def test_without_a_feature_of_interest_the_things_location_is_used() -> None:
    doc = observation_of_deep_insert()
    del doc["FeatureOfInterest"]
    got = parse(doc, LocationCache())
    assert isinstance(got, Reading)
    assert (got.lon, got.lat) == (10.0, 10.0)  # the Thing's Location in the example


def test_the_datastream_name_maps_to_a_configured_metric() -> None:
    doc = {
        "Datastream": {"@iot.id": "wl-9", "name": "Water Level"},
        "result": 42,
        "FeatureOfInterest": {"feature": {"type": "Point", "coordinates": [114.3, 30.6]}},
    }
    got = parse(doc, LocationCache())
    assert isinstance(got, Reading) and got.metric == "water_level_cm" and got.ts == NOW


def test_a_gcj02_location_declared_in_parameters_is_converted() -> None:
    lon, lat = wgs84_to_gcj02(114.3, 30.6)
    doc = {
        "Datastream": {"@iot.id": 3, "name": "pm25"},
        "result": 80,
        "parameters": {"crs": "GCJ02"},
        "FeatureOfInterest": {"feature": {"type": "Point", "coordinates": [lon, lat]}},
    }
    got = parse(doc, LocationCache())
    assert isinstance(got, Reading)
    assert (got.lon, got.lat) == pytest.approx((114.3, 30.6), abs=1e-9)


def test_the_observation_example_without_a_datastream_is_rejected_with_the_reason() -> None:
    got = parse(load_json(SENSORTHINGS / "Observation.json"), LocationCache())
    assert isinstance(got, Rejected)
    assert "Datastream: an @iot.id" in got.reason


@pytest.mark.parametrize(
    ("result", "reason"),
    [("high", "result: must be a finite number"), (True, "result: must be a finite number"), (None, "result")],
)
def test_non_numeric_results_are_rejected(result: Any, reason: str) -> None:
    cache = LocationCache()
    cache.merge("ds:1", DatastreamInfo(lon=114.3, lat=30.6, metric="m", sensor_id="ds-1"))
    got = parse({"result": result}, cache, topic_datastream="1")
    assert isinstance(got, Rejected) and reason in got.reason


def test_a_rejected_observation_teaches_the_cache_nothing() -> None:
    cache = LocationCache()
    doc = observation_of_deep_insert()
    doc["result"] = "n/a"
    assert isinstance(parse(doc, cache), Rejected)
    assert "ds:1" not in cache


def test_the_cache_is_a_bounded_lru() -> None:
    cache = LocationCache(maxsize=2)
    cache.merge("a", DatastreamInfo(lon=1, lat=1))
    cache.merge("b", DatastreamInfo(lon=2, lat=2))
    assert cache.get("a") is not None  # a is now the most recent
    cache.merge("c", DatastreamInfo(lon=3, lat=3))
    assert len(cache) == 2 and "b" not in cache and "a" in cache and "c" in cache
    merged = cache.merge("a", DatastreamInfo(metric="pm25"))
    assert (merged.lon, merged.metric) == (1, "pm25")


@pytest.mark.parametrize(
    ("topic", "expected"),
    [
        ("v1.1/Datastreams(17)/Observations", "17"),
        ("v1.1/Datastreams('wl-3')/Observations", "wl-3"),
        ("city/v1.1/Datastreams(5)/Observations", "5"),
        ("v1.1/Datastreams/Observations", None),
        ("v1.1/Things(5)", None),
    ],
)
def test_datastream_ids_come_from_the_mqtt_topic(topic: str, expected: str | None) -> None:
    assert datastream_id_from_topic(topic) == expected


def test_metric_slugs_are_valid_labels() -> None:
    assert slug_metric("DewPoint Temperature") == "dewpoint_temperature"
    assert slug_metric("PM2.5 (µg/m³)") == "pm2.5_g_m"
    assert slug_metric("  ") is None
