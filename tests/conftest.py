"""Session fixtures: one real Tansu broker on a free loopback port for the whole run."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from streams.broker import DevBroker

# No test is timed (speed targets live in bench/): hypothesis' default 200 ms deadline per example
# would fail a property test on a loaded 2-core machine for reasons the property does not cover.
settings.register_profile("cityops", deadline=None)
settings.load_profile("cityops")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevBroker]:
    """A real Kafka-protocol broker (Tansu, memory storage) shared by the session."""
    log = tmp_path_factory.mktemp("broker") / "tansu.log"
    with DevBroker(log_path=log) as b:
        yield b


@pytest.fixture(autouse=True)
def _no_cityops_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests build their own Settings; a developer's CITYOPS_* variables must not leak in."""
    for key in list(os.environ):
        if key.startswith("CITYOPS_"):
            monkeypatch.delenv(key)
