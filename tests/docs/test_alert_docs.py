"""docs/alerts.md says what the code does: every example is what the formats produce, and valid."""

from __future__ import annotations

import json
import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from alert_helpers import cap_schema, make, sdm_validator
from pydantic import SecretStr

from sinks.alerts.cap import to_cap
from sinks.alerts.cloudevents import to_binary, to_structured
from sinks.alerts.payload import AlertPayload, build_payload, published
from sinks.alerts.routes import RouteTable
from sinks.alerts.sdm import to_sdm
from streams.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "alerts.md").read_text(encoding="utf-8")
SHANGHAI = Settings().alerts.format_options().tz

FIRST = build_payload("new", make(), None)
UPDATE = build_payload(
    "update",
    make(
        revision=2,
        last_event_at="2026-07-01T00:03:00Z",
        value=52.0,
        evidence={"event_ids": ["t1", "t2", "t3"], "values": [42.0, 45.0, 52.0], "count": 3},
    ),
    published(FIRST),
)


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", DOC, flags=re.DOTALL)


def json_blocks() -> list[dict[str, Any]]:
    return [json.loads(b) for b in blocks("json")]


def _tree(el: ET.Element) -> tuple[str, str, list[Any]]:
    return el.tag, (el.text or "").strip(), [_tree(c) for c in el]


def test_the_payload_example_is_what_the_publisher_sends_and_fits_the_schema() -> None:
    [example] = [b for b in json_blocks() if "message_id" in b and "specversion" not in b]
    schema = json.loads((ROOT / "docs" / "schemas" / "alert-payload.schema.json").read_text(encoding="utf-8"))
    assert list(jsonschema.Draft202012Validator(schema).iter_errors(example)) == []
    assert AlertPayload.model_validate(example) == UPDATE


def test_the_binary_headers_example_is_what_to_binary_writes() -> None:
    [text] = [b for b in blocks("text") if "ce_specversion" in b]
    documented = [tuple(line.split(": ", 1)) for line in text.strip().splitlines()]
    assert documented == [(k, v.decode()) for k, v in to_binary(UPDATE)[0]]


def test_the_structured_example_has_the_attributes_to_structured_writes() -> None:
    [example] = [b for b in json_blocks() if "specversion" in b]
    event = json.loads(to_structured(UPDATE)[1])
    assert {k: v for k, v in example.items() if k != "data"} == {k: v for k, v in event.items() if k != "data"}
    assert example["data"]["message_id"] == event["data"]["message_id"]


def test_the_cap_example_is_what_to_cap_writes_and_is_valid() -> None:
    [xml] = blocks("xml")
    cap_schema().validate(xml)
    assert _tree(ET.fromstring(xml.encode())) == _tree(ET.fromstring(to_cap(UPDATE, published(FIRST), tz=SHANGHAI)))


def test_the_sdm_example_is_what_to_sdm_writes_and_is_valid() -> None:
    [example] = [b for b in json_blocks() if b.get("type") == "Alert"]
    assert list(sdm_validator().iter_errors(example)) == []
    assert example == to_sdm(UPDATE)


def _env_example(name: str) -> str:
    [value] = re.findall(rf"export {name}='(.*?)'\n", DOC, flags=re.DOTALL)
    return str(value)


def test_the_routes_and_webhooks_env_examples_configure_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CITYOPS_ALERTS__ROUTES", _env_example("CITYOPS_ALERTS__ROUTES"))
    monkeypatch.setenv("CITYOPS_ALERTS__WEBHOOKS", _env_example("CITYOPS_ALERTS__WEBHOOKS"))
    alerts = Settings().alerts
    table = RouteTable(alerts.routes, "cityops")
    assert [(r.name, table.topic(r), r.format) for r in alerts.routes] == [
        ("all", "cityops.alerts.all", "json"),
        ("flood", "cityops.alerts.flood", "cloudevents-binary"),
        ("critical", "cityops.alerts.critical", "cap"),
        ("jiangan", "cityops.alerts.jiangan", "sdm-alert"),
        ("ngsi", "cityops.alerts.ngsi", "cloudevents-structured"),
    ]
    assert [r.name for r in table.route(make())] == ["all", "flood", "critical", "jiangan"]
    [hook] = alerts.webhooks
    assert (hook.name, hook.routes, hook.max_attempts) == ("ops-chat", ["critical"], 5)
    assert hook.headers["Authorization"] == SecretStr("Bearer ...")


def test_the_default_routes_table_matches_the_code() -> None:
    assert "CITYOPS_ALERTS__ROUTES" not in os.environ
    rows = re.findall(r"^\| `(\w+)` \| `(\{prefix\}[^`]+)` \| `([\w-]+)` \|", DOC, flags=re.MULTILINE)
    assert rows == [(r.name, r.topic, r.format) for r in Settings().alerts.routes]


def test_the_linked_subscriber_examples_exist() -> None:
    paths = set(re.findall(r"\]\(\.\./(examples/subscribers/[\w.-]+)\)", DOC))
    assert paths == {
        "examples/subscribers/kcat-dev.sh",
        "examples/subscribers/kafka_python_consumer.py",
        "examples/subscribers/confluent_consumer.py",
    }
    for path in paths:
        assert (ROOT / path).is_file(), path
