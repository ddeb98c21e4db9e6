"""Stopping the worker mid-stream (SIGTERM or SIGKILL) loses no incident and duplicates none."""

from __future__ import annotations

import json

import pytest
from stack import Stack, latest_by_id, read_topic

from rules.model import Incident
from rules.pack import load_pack
from rules.replay import replay
from streams.scenario import Message, scenario_events
from streams.simulate import produce

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("kill", [False, True], ids=["sigterm", "sigkill"])
def test_worker_restart_mid_stream_loses_and_duplicates_no_incident(
    stack: Stack, scenario: list[Message], kill: bool
) -> None:
    pack = load_pack(stack.settings.rules.pack)
    expected = {i.id: i for i in replay(pack, [json.dumps(e).encode() for e in scenario_events(scenario)]).incidents}
    half = len(scenario) // 2
    first, second = scenario[:half], scenario[half:]
    first_events = len(scenario_events(first))

    stack.start("store")
    stack.start("worker")
    produce(stack.settings, first, speed=0)
    stack.wait_for(
        "the first half in the store", lambda: stack.reader.scalar("SELECT count(*) FROM events") == first_events
    )
    stack.stop("worker", kill=kill)

    produce(stack.settings, second, speed=0)
    stack.start("worker-2")

    def complete() -> bool:
        rows = stack.stored_incidents()
        return {r["id"]: r["revision"] for r in rows} == {k: v.revision for k, v in expected.items()}

    stack.wait_for("every replayed incident, at its final revision", complete, timeout=120)
    assert stack.reader.scalar("SELECT count(*) - count(DISTINCT id) FROM incidents") == 0
    assert stack.reader.scalar("SELECT count(*) FROM events") == len(scenario_events(scenario))
    alerts = [
        Incident.model_validate_json(r.value) for r in read_topic(stack.settings, stack.settings.kafka.incidents_topic)
    ]
    assert latest_by_id(alerts) == expected
