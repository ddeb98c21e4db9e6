"""Helpers of the alert tests: the docs' example incident and variants, and the official schemas (offline)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema
import xmlschema
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from rules.model import Incident

BASE: dict[str, Any] = {
    "schema_version": "1.0",
    "id": "878f8b16f83bb13b30a31d48",
    "revision": 1,
    "pack": "wuhan",
    "pack_version": "2026.11.2",
    "rule_id": "flood.water-level-high",
    "rule_version": 1,
    "kind": "threshold",
    "title": "Water level above 30 cm",
    "severity": "high",
    "category": "flood",
    "status": "open",
    "subject": "wl-1",
    "layer": "districts",
    "zone_id": "420102",
    "zone_name": "江岸区",
    "window_start": "2026-07-01T00:00:00Z",
    "window_end": "2026-07-01T00:15:00Z",
    "first_event_at": "2026-07-01T00:00:00Z",
    "last_event_at": "2026-07-01T00:01:00Z",
    "lon": 114.3,
    "lat": 30.6,
    "value": 45.0,
    "threshold": 30.0,
    "op": ">",
    "evidence": {"event_ids": ["t1", "t2"], "values": [42.0, 45.0], "count": 2},
}

RESOLVED_AT = datetime(2026, 7, 1, 0, 20, 30, 250000, tzinfo=UTC)


def make(**changes: Any) -> Incident:
    """The example incident with some fields changed (validated, so every variant is a real incident)."""
    return Incident.model_validate({**BASE, **changes})


def resolved(**changes: Any) -> Incident:
    """The example incident after its condition cleared."""
    return make(status="resolved", resolved_at=RESOLVED_AT.isoformat(), **changes)


STANDARDS = Path(__file__).resolve().parents[2] / "shared" / "data" / "standards"
SDM_DIR = STANDARDS / "smart-data-models-alert"


def _load(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return doc


def sdm_example() -> dict[str, Any]:
    """The data model's own key-values example."""
    return _load(SDM_DIR / "example.json")


@lru_cache(maxsize=1)
def sdm_validator() -> jsonschema.Draft202012Validator:
    """Alert schema.json with its three remote $refs served from the local copies (never fetched)."""
    resources = [
        (doc["$id"], Resource.from_contents(doc, default_specification=DRAFT202012))
        for doc in (
            _load(SDM_DIR / "alert-schema.json"),
            _load(SDM_DIR / "refs" / "common-schema.json"),
            _load(SDM_DIR / "refs" / "weather-schema.json"),
        )
    ]

    def no_network(uri: str) -> Resource[Any]:
        raise AssertionError(f"the schema tried to fetch {uri}")

    registry: Registry[Any] = Registry(retrieve=no_network).with_resources(resources)  # type: ignore[call-arg]
    schema = _load(SDM_DIR / "schema.json")
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(
        schema, registry=registry, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )


@lru_cache(maxsize=1)
def cap_schema() -> xmlschema.XMLSchema:
    """The OASIS CAP 1.2 XSD."""
    return xmlschema.XMLSchema(str(STANDARDS / "cap" / "CAP-v1.2.xsd"))
