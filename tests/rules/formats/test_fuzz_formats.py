"""Hostile input at every parser: none raises, each record is an event or a rejection with a reason."""

from __future__ import annotations

import math
from typing import Any

import orjson
from formats_data import NOW
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rules.decode import Decoded, Rejected
from rules.formats.cloudevents_in import (
    CloudEvent,
    CloudEventContext,
    events_from_cloudevents,
    from_binary,
    from_kafka,
    from_structured,
)
from rules.formats.mapping import FieldMapping, decode_cityops
from rules.formats.mqtt_payload import PayloadContext, decode_payload
from rules.formats.open311 import Open311Context, parse_service_request
from rules.formats.sensorthings import LocationCache, parse_observation

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

NASTY_TEXT = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        [
            "NaN",
            "Infinity",
            "-1e400",
            "1e400",
            "",
            " ",
            "\x00",
            "GCJ02",
            "wgs-84",
            "114.3",
            "30.6",
            "2026-07-01T00:00:00Z",
            "2026-07-01T00:00:00",
            "Datastreams(1)",
            "𝔘𝔫𝔦",
            "' OR 1=1 --",
        ]
    ),
    st.just("x" * 5000),
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    NASTY_TEXT,
    st.sampled_from([114.3, 30.6, -181.0, 91.0, 1e308, -0.0]),
)
KEYS = st.sampled_from(
    [
        "kind",
        "id",
        "ts",
        "lon",
        "lat",
        "value",
        "sensor_id",
        "metric",
        "category",
        "events",
        "crs",
        "result",
        "Datastream",
        "@iot.id",
        "FeatureOfInterest",
        "feature",
        "type",
        "coordinates",
        "geometry",
        "Thing",
        "Locations",
        "location",
        "phenomenonTime",
        "parameters",
        "name",
        "service_code",
        "long",
        "address_string",
        "description",
        "media_url",
        "requested_datetime",
        "specversion",
        "source",
        "data",
        "data_base64",
        "time",
        "datacontenttype",
    ]
)
JSON = st.recursive(
    SCALARS, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(KEYS, kids, max_size=6), max_leaves=25
)
TEMPLATES = st.sampled_from(
    [
        {
            "kind": "reading",
            "id": "r",
            "ts": "2026-07-01T00:00:00Z",
            "lon": 114.3,
            "lat": 30.6,
            "sensor_id": "s",
            "metric": "m",
            "value": 1,
        },
        {"service_code": "noise", "lat": "30.6", "long": "114.3"},
        {
            "Datastream": {"@iot.id": 1, "name": "pm25"},
            "result": 1,
            "FeatureOfInterest": {"feature": {"type": "Point", "coordinates": [114.3, 30.6]}},
        },
        {
            "specversion": "1.0",
            "id": "i",
            "source": "/s",
            "type": "t",
            "data": {"kind": "report", "lon": 1, "lat": 1, "category": "noise"},
        },
    ]
)


@st.composite
def mutated(draw: st.DrawFn) -> Any:
    """A valid-looking document with some fields replaced by hostile values."""
    doc = dict(draw(TEMPLATES))
    for key in draw(st.lists(st.sampled_from([*sorted(doc), "crs", "extra"]), max_size=4)):
        doc[key] = draw(JSON)
    return doc


DOCS = st.one_of(JSON, mutated())


def deep(n: int) -> bytes:
    return b"[" * n + b"]" * n


RAW = st.one_of(
    st.binary(max_size=300),
    DOCS.map(lambda d: orjson.dumps(d, option=orjson.OPT_SERIALIZE_NUMPY) if _encodable(d) else b"{}"),
    st.sampled_from(
        [
            deep(200),
            deep(1100),
            b'{"value": NaN}',
            b'{"lat": Infinity}',
            b"\xff\xfe",
            b'{"a":"\xc3\x28"}',
            b'{"events": 5}',
            b'{"events": [' + b"{}," * 500 + b"{}]}",
            b"1e999999",
        ]
    ),
)


def _encodable(doc: Any) -> bool:
    try:
        orjson.dumps(doc)
        return True
    except (orjson.JSONEncodeError, TypeError):
        return False


def check(decoded: Decoded) -> None:
    for event in decoded.events:
        assert -180 <= event.lon <= 180 and -90 <= event.lat <= 90
        assert math.isfinite(event.lon) and math.isfinite(event.lat)
        value = getattr(event, "value", 0.0)
        assert math.isfinite(value)
    for rej in decoded.rejected:
        assert isinstance(rej, Rejected) and rej.reason and rej.kind


@FUZZ
@given(RAW)
def test_cityops_json_decoding_never_raises(raw: bytes) -> None:
    check(decode_cityops(raw, max_bytes=100_000))


@FUZZ
@given(fields=DOCS.filter(lambda d: isinstance(d, dict)))
def test_open311_request_parsing_never_raises(fields: dict[str, Any], open311_ctx: Open311Context) -> None:
    got = parse_service_request(fields, open311_ctx, request_id="f-1", received_at=NOW, raw=b"x")
    if isinstance(got, Rejected):
        assert got.reason and got.kind in ("invalid", "unknown_service")
    else:
        check(Decoded([got[0]], []))


@FUZZ
@given(DOCS, st.one_of(st.none(), NASTY_TEXT))
def test_observation_parsing_never_raises(doc: Any, topic_ds: str | None) -> None:
    got = parse_observation(
        doc, cache=LocationCache(8), metrics={}, received_at=NOW, raw=b"x", topic_datastream=topic_ds
    )
    check(Decoded([], [got]) if isinstance(got, Rejected) else Decoded([got], []))


@FUZZ
@given(RAW, st.sampled_from(["application/cloudevents+json", "application/cloudevents-batch+json"]))
def test_structured_cloudevents_never_raise(raw: bytes, ctype: str) -> None:
    items = from_structured(raw, ctype, max_bytes=100_000)
    check(events_from_cloudevents(items, CloudEventContext(), received_at=NOW))


HEADER = st.one_of(NASTY_TEXT, st.sampled_from(["1.0", "id-1", "/src", "org.type", "application/json"]))


@FUZZ
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "ce-specversion",
                "ce-id",
                "ce-source",
                "ce-type",
                "ce-time",
                "ce-crs",
                "ce-Bad_Name",
                "Content-Type",
                "ce-subject",
            ]
        ),
        HEADER,
    ),
    RAW,
)
def test_binary_cloudevents_never_raise(headers: dict[str, str], body: bytes) -> None:
    item = from_binary(headers, body)
    assert isinstance(item, CloudEvent | Rejected)
    check(events_from_cloudevents([item], CloudEventContext(), received_at=NOW))


@FUZZ
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["ce_specversion", "ce_id", "ce_source", "ce_type", "content-type", "x"]),
            st.binary(max_size=30),
        ),
        max_size=6,
    ),
    RAW,
)
def test_kafka_cloudevents_never_raise(headers: list[tuple[str, bytes]], value: bytes) -> None:
    found = from_kafka(value, headers, max_bytes=100_000)
    if found is not None:
        check(events_from_cloudevents([found], CloudEventContext(), received_at=NOW))


@FUZZ
@given(RAW, st.sampled_from([None, "cityops", "sensorthings", "fields"]), NASTY_TEXT)
def test_mqtt_payload_decoding_never_raises(payload: bytes, fmt: Any, topic: str) -> None:
    ctx = PayloadContext(
        mapping=FieldMapping(sensor_id="topic[1]", metric="=m"), cache=LocationCache(8), max_bytes=100_000
    )
    check(decode_payload(topic, payload, fmt, ctx, received_at=NOW))
