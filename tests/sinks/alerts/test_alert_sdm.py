"""Smart Data Models Alert (key-values): validated against the data model's JSON Schema, refs resolved locally."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
from alert_helpers import make, resolved, sdm_example, sdm_validator

from sinks.alerts.payload import build_payload, published
from sinks.alerts.sdm import SdmMapping, SdmOptions, entity_id, to_sdm, to_sdm_bytes


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    return sdm_validator()


def _errors(validator: jsonschema.Draft202012Validator, doc: dict[str, Any]) -> list[str]:
    return [e.message for e in validator.iter_errors(doc)]


def test_the_schema_accepts_the_official_example_and_rejects_broken_ones(
    validator: jsonschema.Draft202012Validator,
) -> None:
    example = sdm_example()
    assert _errors(validator, example) == []
    assert _errors(validator, {**example, "category": "flooding"})
    assert _errors(validator, {**example, "subCategory": "notASubCategory"})
    assert _errors(validator, {**example, "dateIssued": "2017-01-02T09:25:55"})  # date-time needs an offset
    assert _errors(validator, {k: v for k, v in example.items() if k != "alertSource"})


@pytest.mark.parametrize(
    "payload",
    [
        build_payload("new", make(), None),
        build_payload("update", make(revision=2, severity="critical"), published(build_payload("new", make(), None))),
        build_payload("resolved", resolved(), None),
        build_payload("new", make(category="air_quality", severity="info", zone_id=None, layer=None), None),
        build_payload("new", make(category="something_new", severity="low"), None),
    ],
    ids=["new", "update", "resolved", "air-quality-info", "unmapped-category"],
)
def test_every_alert_validates(validator: jsonschema.Draft202012Validator, payload: Any) -> None:
    assert _errors(validator, to_sdm(payload)) == []
    assert json.loads(to_sdm_bytes(payload)) == to_sdm(payload)


def test_fields_and_mapping() -> None:
    doc = to_sdm(build_payload("new", make(), None))
    assert doc["id"] == "urn:ngsi-ld:Alert:cityops:878f8b16f83bb13b30a31d48" == entity_id("878f8b16f83bb13b30a31d48")
    assert doc["type"] == "Alert"
    assert (doc["category"], doc["subCategory"], doc["severity"]) == ("weather", "flood", "high")
    assert doc["location"] == {"type": "Point", "coordinates": [114.3, 30.6]}
    assert (doc["dateIssued"], doc["validFrom"], doc["validTo"]) == (
        "2026-07-01T00:01:00Z",
        "2026-07-01T00:00:00Z",
        "2026-07-01T00:15:00Z",
    )
    assert doc["alertSource"] == "urn:ngsi-ld:cityops:rule:wuhan:flood.water-level-high"
    assert doc["data"]["messageKind"] == "new"
    assert doc["data"]["revision"] == 1
    info = to_sdm(build_payload("new", make(severity="info", category="air_quality"), None))
    assert (info["severity"], info["category"], info["subCategory"]) == ("informational", "environment", "airPollution")
    assert "subCategory" not in to_sdm(build_payload("new", make(category="unmapped"), None))


def test_resolved_alert_is_valid_until_it_cleared() -> None:
    doc = to_sdm(build_payload("resolved", resolved(), None))
    assert doc["validTo"] == "2026-07-01T00:20:30.250000Z"
    assert doc["data"]["status"] == "resolved"


def test_category_mapping_is_configurable(validator: jsonschema.Draft202012Validator) -> None:
    opts = SdmOptions(
        categories={"flood": SdmMapping(category="naturalDisaster", sub_category="floodRisk")},
        default_category="environment",
    )
    doc = to_sdm(build_payload("new", make(), None), opts)
    assert (doc["category"], doc["subCategory"]) == ("naturalDisaster", "floodRisk")
    assert to_sdm(build_payload("new", make(category="noise"), None), opts)["category"] == "environment"
    assert _errors(validator, doc) == []
