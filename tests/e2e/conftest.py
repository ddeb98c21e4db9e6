"""Fixtures for end-to-end tests: a per-test stack on the session broker."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from stack import Stack, make_settings

from rules.pack import load_pack
from streams.broker import DevBroker
from streams.scenario import Message, wuhan_scenario

START = datetime.fromisoformat("2026-07-01T23:00:00+08:00")  # night: the noise schedule is live


@pytest.fixture
def stack(broker: DevBroker, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Stack]:
    s = Stack(make_settings(broker, tmp_path, request.node.name[:20].replace("_", "")), tmp_path / "logs")
    try:
        yield s
    finally:
        s.close()


@pytest.fixture(scope="session")
def scenario() -> list[Message]:
    pack = load_pack(Path(__file__).resolve().parents[2] / "rules" / "packs" / "wuhan" / "pack.yaml")
    return wuhan_scenario(pack.layers["districts"], START, 240.0, extra_layers=pack.layers)
