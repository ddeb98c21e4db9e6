"""Fixtures of the fault-injection suite: a per-test stack (own topics, group ids, store) on the session broker."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from stack import Stack, make_settings

from streams.broker import DevBroker


@pytest.fixture
def stack(broker: DevBroker, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Stack]:
    s = Stack(make_settings(broker, tmp_path, "f" + request.node.name[5:20].replace("_", "")), tmp_path / "logs")
    try:
        yield s
    finally:
        s.close()
