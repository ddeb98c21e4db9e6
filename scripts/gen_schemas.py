"""Write the JSON Schemas of cityops' wire formats into docs/schemas/ (``make schemas``).

The schemas are generated from the pydantic models in ``rules.model`` and ``rules.pack`` and
committed; ``tests/docs/test_schemas.py`` fails when they drift from the models.

Usage:
    python scripts/gen_schemas.py [--out DIR]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from rules.model import DeadLetterRecord, Event, Incident
from rules.pack import Pack
from sinks.alerts.payload import AlertPayload
from sinks.alerts.settings import AlertsSettings

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "schemas"
DIALECT = "https://json-schema.org/draft/2020-12/schema"


def schemas() -> dict[str, dict[str, Any]]:
    """File name -> JSON Schema of each wire format."""
    event = TypeAdapter(Event).json_schema()
    event["title"] = "Event"
    event["description"] = "One cityops input event: a reading, a report or a track, told apart by 'kind'."
    found = {
        "event.schema.json": event,
        "incident.schema.json": Incident.model_json_schema(),
        "deadletter.schema.json": DeadLetterRecord.model_json_schema(),
        "pack.schema.json": Pack.model_json_schema(),
        "alert-payload.schema.json": AlertPayload.model_json_schema(),
        "alert-settings.schema.json": AlertsSettings.model_json_schema(),
    }
    return {name: {"$schema": DIALECT, **schema} for name, schema in found.items()}


def render(schema: dict[str, Any]) -> str:
    """Deterministic text: indent 2, sorted keys, UTF-8 kept as is, trailing newline."""
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write(out: Path = OUT) -> list[Path]:
    """Write every schema into ``out``; returns the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in schemas().items():
        path = out / name
        path.write_text(render(schema), encoding="utf-8")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=OUT, help=f"output directory (default: {OUT.relative_to(ROOT)})")
    args = parser.parse_args(argv)
    for path in write(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
