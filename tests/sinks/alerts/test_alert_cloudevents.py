"""CloudEvents Kafka binding: records parsed by the official `cloudevents` SDK and checked against the spec's schema."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import jsonschema
import pytest
from alert_helpers import make, resolved
from cloudevents.core.bindings import kafka as ce_kafka
from cloudevents.core.formats.json import JSONFormat

from sinks.alerts.cloudevents import CloudEventsOptions, to_binary, to_structured
from sinks.alerts.payload import AlertPayload, Published, build_payload, message_id

CE_DIR = Path(__file__).resolve().parents[4] / "shared" / "data" / "standards" / "cloudevents"
PREV = Published(1, "open", message_id("878f8b16f83bb13b30a31d48", 1, "open"), datetime(2026, 7, 1, tzinfo=UTC), "new")


def _message(headers: list[tuple[str, bytes]], value: bytes, key: bytes) -> ce_kafka.KafkaMessage:
    assert len({k for k, _ in headers}) == len(headers), "duplicate header names"
    return ce_kafka.KafkaMessage(headers=dict(headers), key=key, value=value)


PAYLOADS = {
    "new": build_payload("new", make(), None),
    "update": build_payload("update", make(revision=2), PREV),
    "resolved": build_payload("resolved", resolved(revision=2), PREV),
}


@pytest.mark.parametrize("kind", list(PAYLOADS))
def test_binary_mode_parses_with_the_sdk(kind: str) -> None:
    payload = PAYLOADS[kind]
    headers, value = to_binary(payload)
    event = ce_kafka.from_binary(_message(headers, value, payload.incident.id.encode()), JSONFormat())
    assert event.get_specversion() == "1.0"
    assert event.get_id() == payload.message_id
    assert event.get_type() == f"org.cityops.incident.{kind}"
    assert event.get_source() == "/cityops/packs/wuhan/rules/flood.water-level-high"
    assert event.get_subject() == "878f8b16f83bb13b30a31d48"
    assert event.get_time() == payload.sent
    assert event.get_datacontenttype() == "application/json"
    assert event.get_dataschema() == "urn:cityops:schema:alert-payload:1.0"
    assert event.get_extension("partitionkey") == payload.incident.id
    data = event.get_data()
    assert isinstance(data, dict)
    assert AlertPayload.model_validate(data) == payload


def test_binary_headers_follow_the_binding_names_and_are_utf8() -> None:
    headers, value = to_binary(PAYLOADS["new"])
    names = [k for k, _ in headers]
    assert names[0] == "content-type"
    assert {"ce_specversion", "ce_id", "ce_source", "ce_type", "ce_time", "ce_subject", "ce_dataschema"} <= set(names)
    assert all(k == "content-type" or k.startswith("ce_") for k in names)
    assert dict(headers)["ce_time"] == b"2026-07-01T00:01:00Z"
    for _, raw in headers:
        raw.decode("utf-8")
    assert json.loads(value)["incident"]["zone_name"] == "江岸区"


@pytest.mark.parametrize("kind", list(PAYLOADS))
def test_structured_mode_parses_with_the_sdk_and_matches_the_spec_schema(kind: str) -> None:
    payload = PAYLOADS[kind]
    headers, value = to_structured(payload)
    assert dict(headers)["content-type"].startswith(b"application/cloudevents+json")
    event = ce_kafka.from_structured(_message(headers, value, payload.incident.id.encode()), JSONFormat())
    assert event.get_id() == payload.message_id
    assert event.get_type() == f"org.cityops.incident.{kind}"
    assert event.get_time() == payload.sent
    data = event.get_data()
    assert isinstance(data, dict)
    assert AlertPayload.model_validate(data) == payload
    # the auto-detecting reader picks structured mode too (no ce_ headers)
    assert ce_kafka.from_kafka(_message(headers, value, b"k"), JSONFormat()).get_id() == payload.message_id

    schema = json.loads((CE_DIR / "cloudevents.json").read_text(encoding="utf-8"))
    validator = jsonschema.Draft7Validator(schema, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)
    assert list(validator.iter_errors(json.loads(value))) == []
    assert list(validator.iter_errors({**json.loads(value), "id": ""}))  # the schema can fail


def test_ids_are_stable_across_redelivery_and_modes() -> None:
    again = build_payload("new", make(), None)
    assert to_binary(again) == to_binary(PAYLOADS["new"])
    binary_id = dict(to_binary(again)[0])["ce_id"].decode()
    assert json.loads(to_structured(again)[1])["id"] == binary_id


def test_source_base_and_dataschema_are_configurable() -> None:
    opts = CloudEventsOptions(source_base="urn:city:wuhan:ops", dataschema="urn:example:alert:1.0")
    headers = dict(to_binary(PAYLOADS["new"], opts)[0])
    assert headers["ce_source"] == b"urn:city:wuhan:ops/packs/wuhan/rules/flood.water-level-high"
    assert headers["ce_dataschema"] == b"urn:example:alert:1.0"
