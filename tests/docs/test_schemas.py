"""The committed JSON Schemas match the models, and the examples in the docs are valid."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema
import orjson
import pytest
import yaml

from rules.decode import decode_message, decode_one
from rules.model import DeadLetterRecord, Incident
from rules.pack import load_pack
from rules.replay import replay_events

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
SCHEMAS = DOCS / "schemas"
NAMES = [
    "alert-payload.schema.json",
    "alert-settings.schema.json",
    "deadletter.schema.json",
    "event.schema.json",
    "incident.schema.json",
    "pack.schema.json",
]
WUHAN = ROOT / "rules" / "packs" / "wuhan" / "pack.yaml"
FIX = "run `make schemas` (scripts/gen_schemas.py) and commit the result"


def _gen_schemas() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_schemas", ROOT / "scripts" / "gen_schemas.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _schema(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((SCHEMAS / name).read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return schema


def _validator(name: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(_schema(name))


def _json_blocks(doc: str) -> list[Any]:
    text = (DOCS / doc).read_text(encoding="utf-8")
    return [json.loads(block) for block in re.findall(r"```json\n(.*?)```", text, flags=re.DOTALL)]


# -- drift -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_the_committed_schema_matches_the_models(name: str) -> None:
    expected = _gen_schemas().render(_gen_schemas().schemas()[name])
    path = SCHEMAS / name
    assert path.exists(), f"{path.relative_to(ROOT)} is missing: {FIX}"
    assert path.read_text(encoding="utf-8") == expected, f"{path.relative_to(ROOT)} is out of date: {FIX}"


def test_regenerating_writes_byte_identical_files_and_nothing_else(tmp_path: Path) -> None:
    written = _gen_schemas().write(tmp_path)
    assert sorted(p.name for p in written) == NAMES
    assert sorted(p.name for p in SCHEMAS.glob("*.json")) == NAMES, f"docs/schemas has stray files: {FIX}"
    for path in written:
        committed = (SCHEMAS / path.name).read_bytes()
        assert path.read_bytes() == committed, f"docs/schemas/{path.name} is out of date: {FIX}"


def test_schemas_are_rendered_with_sorted_keys_indent_2_and_a_trailing_newline() -> None:
    text = (SCHEMAS / "event.schema.json").read_text(encoding="utf-8")
    assert text.endswith("}\n")
    assert text.startswith('{\n  "$defs": {')
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def test_every_schema_is_draft_2020_12() -> None:
    for name in NAMES:
        assert _schema(name)["$schema"] == "https://json-schema.org/draft/2020-12/schema"


# -- the schemas say what the models say -------------------------------------------------------


def test_the_event_schema_rejects_what_the_decoder_rejects() -> None:
    validator = _validator("event.schema.json")
    good = {
        "kind": "report",
        "id": "c1",
        "ts": "2026-07-01T10:00:00+08:00",
        "lon": 114.3,
        "lat": 30.6,
        "category": "waterlogging",
    }
    assert list(validator.iter_errors(good)) == []
    for bad in (
        {**good, "lat": 91},
        {**good, "kind": "alarm"},
        {**good, "extra": 1},
        {**good, "id": "a b"},
        {k: v for k, v in good.items() if k != "category"},
    ):
        assert list(validator.iter_errors(bad)), bad
        assert decode_message(orjson.dumps(bad)).rejected


def test_the_pack_schema_accepts_the_wuhan_pack_and_text_durations() -> None:
    validator = _validator("pack.schema.json")
    pack = yaml.safe_load(WUHAN.read_text(encoding="utf-8"))
    assert list(validator.iter_errors(pack)) == []
    assert list(validator.iter_errors({**pack, "allowed_lateness": "90x"}))
    assert list(validator.iter_errors({**pack, "owner": "ops"}))
    # field names are listed, so an editor completes them; a misspelt one is flagged
    first = pack["rules"][0]
    assert list(validator.iter_errors({**pack, "rules": [{**first, "field": "valu"}, *pack["rules"][1:]]}))
    assert not list(validator.iter_errors({**pack, "rules": [{**first, "field": "lat"}, *pack["rules"][1:]]}))


# -- examples in the docs ----------------------------------------------------------------------


def test_every_event_example_in_events_md_is_valid_for_the_schema_and_the_decoder() -> None:
    validator = _validator("event.schema.json")
    kinds = []
    for block in _json_blocks("events.md"):
        if isinstance(block, dict) and "reason" in block:
            continue  # the dead-letter example, checked below
        records = block["events"] if isinstance(block, dict) and "kind" not in block else [block]
        for record in records:
            assert list(validator.iter_errors(record)) == [], record
            kinds.append(decode_one(record).kind)
        decoded = decode_message(json.dumps(block).encode())
        assert decoded.rejected == []
        assert len(decoded.events) == len(records)
    assert {"reading", "report", "track"} <= set(kinds)


def test_the_dead_letter_example_in_events_md_is_what_ingest_would_write() -> None:
    [example] = [b for b in _json_blocks("events.md") if isinstance(b, dict) and "reason" in b]
    assert list(_validator("deadletter.schema.json").iter_errors(example)) == []
    record = DeadLetterRecord.model_validate(example)
    original = base64.b64decode(record.original_b64)
    assert record.original_size == len(original)
    assert record.original_sha256 == hashlib.sha256(original).hexdigest()
    [rejected] = decode_message(original).rejected
    assert rejected.reason == record.reason
    assert rejected.kind == record.kind


def test_the_incident_example_in_incidents_md_is_what_the_wuhan_pack_produces() -> None:
    [example] = _json_blocks("incidents.md")
    assert list(_validator("incident.schema.json").iter_errors(example)) == []
    pack = load_pack(WUHAN)
    case = pack.spec.tests[0]
    [produced] = replay_events(pack, [decode_one(e) for e in case.events])
    assert Incident.model_validate(example) == produced
