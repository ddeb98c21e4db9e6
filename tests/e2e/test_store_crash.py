"""SIGKILL the store writer mid-run: after a restart the store equals replay, with no duplicate rows."""

from __future__ import annotations

import json
import time

import pytest
from stack import Stack

from rules.pack import load_pack
from rules.replay import replay
from streams.scenario import Message, scenario_events
from streams.simulate import produce

pytestmark = pytest.mark.integration


def test_store_writer_killed_mid_run_loses_and_duplicates_nothing(stack: Stack, scenario: list[Message]) -> None:
    pack = load_pack(stack.settings.rules.pack)
    expected = {i.id: i for i in replay(pack, [json.dumps(e).encode() for e in scenario_events(scenario)]).incidents}
    total_events = len(scenario_events(scenario))
    stack.start("store")
    stack.start("worker")
    half = len(scenario) // 2
    produce(stack.settings, scenario[:half], speed=0)
    stack.wait_for("some events stored", lambda: stack.reader.scalar("SELECT count(*) FROM events") > 0)
    stack.stop("store", kill=True)
    produce(stack.settings, scenario[half:], speed=0)
    time.sleep(2)  # the worker keeps producing incidents while the writer is down
    stack.start("store-2")

    def complete() -> bool:
        rows = stack.stored_incidents()
        return {r["id"]: r["revision"] for r in rows} == {k: v.revision for k, v in expected.items()}

    stack.wait_for("every incident at its final revision", complete, timeout=120)
    stack.wait_for("every event archived", lambda: stack.reader.scalar("SELECT count(*) FROM events") == total_events)
    assert stack.reader.scalar("SELECT count(*) - count(DISTINCT id) FROM incidents") == 0
    assert stack.reader.scalar("SELECT count(*) - count(DISTINCT update_id) FROM incident_history") == 0
    created = stack.reader.scalar("SELECT count(*) FROM incident_history WHERE kind = 'created'")
    assert created == len(expected)
