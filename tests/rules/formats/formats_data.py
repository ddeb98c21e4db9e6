"""Shared data of the format tests: paths of the reference standards and the fixed clock."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[3]
STANDARDS = REPO.parent / "shared" / "data" / "standards"
OPEN311 = STANDARDS / "open311"
SENSORTHINGS = STANDARDS / "sensorthings" / "spec-18-088-examples"
CLOUDEVENTS = STANDARDS / "cloudevents"
NOW = datetime(2026, 7, 1, 2, 0, tzinfo=UTC)


def load_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))
