"""With the rule state in a changelog, what detect sends is held in the table until delivered, and
what a restart restores as unconfirmed is sent again (streams/outbox.py)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from kafka import KafkaProducer
from stack import Stack, read_topic

from rules.model import Incident
from rules.pack import load_pack
from rules.replay import replay
from streams.outbox import OUTBOX_PREFIX
from streams.scenario import Message, scenario_events
from streams.simulate import produce

pytestmark = pytest.mark.integration


def _outbox(stack: Stack) -> dict[str, tuple[int, Any]]:
    """The outbox entries of the rule-state changelog: key -> (partition, last value, None if deleted)."""
    topic = f"{stack.settings.kafka.app_id}-rule-state-changelog"
    last: dict[str, tuple[int, Any]] = {}
    for record in read_topic(stack.settings, topic, timeout_s=3):
        key = json.loads(record.key)
        if key.startswith(OUTBOX_PREFIX + "|"):
            last[key] = (record.partition, json.loads(record.value) if record.value is not None else None)
    return last


def test_a_snapshot_the_changelog_holds_as_unsent_is_sent_after_a_restart(
    stack: Stack, scenario: list[Message]
) -> None:
    settings = stack.settings
    settings.worker.state_changelog = True
    settings.worker.rebuild_state = False
    settings.worker.tick_s = 1.0
    kafka = settings.kafka
    stack.start("worker")
    produce(settings, scenario, speed=0)

    # a run: every incident snapshot went through the outbox, and each entry was deleted once delivered
    pack = load_pack(settings.rules.pack)
    expected = {i.id for i in replay(pack, [json.dumps(e).encode() for e in scenario_events(scenario)]).incidents}
    stack.wait_for(
        "the scenario's incidents on the alert topic",
        lambda: {r.key.decode() for r in read_topic(settings, kafka.incidents_topic, 2)} == expected,
        timeout=120,
    )
    stack.wait_for(
        "every outbox entry deleted",
        lambda: bool(_outbox(stack)) and all(v is None for _p, v in _outbox(stack).values()),
        timeout=120,
    )
    sent = [Incident.model_validate_json(r.value) for r in read_topic(settings, kafka.incidents_topic)]
    held = _outbox(stack)
    assert {k.split("|", 2)[2] for k in held if k.startswith(f"{OUTBOX_PREFIX}|incidents|")} == {i.id for i in sent}
    stack.stop("worker")

    # what a worker killed between its changelog write and its incident send leaves behind: an entry
    # for a snapshot the alert topic never got (a copy of a real one under a new id)
    model = sent[-1]
    lost = model.model_copy(update={"id": "0utb0x0000000000000000ff", "revision": model.revision})
    partition = next(p for k, (p, _v) in held.items() if k.endswith(f"|{model.id}"))
    entry = f"{OUTBOX_PREFIX}|incidents|{lost.id}"
    producer = KafkaProducer(**kafka.producer_options())
    producer.send(
        f"{kafka.app_id}-rule-state-changelog",
        key=json.dumps(entry).encode(),
        value=json.dumps(
            {"home": partition, "topic": "incidents", "rev": lost.revision, "value": lost.model_dump_json()}
        ).encode(),
        partition=partition,
    ).get(10)
    producer.close()
    assert lost.id not in {r.key.decode() for r in read_topic(settings, kafka.incidents_topic)}

    stack.start("worker-2")

    def arrived() -> bool:
        return any(r.key == lost.id.encode() for r in read_topic(settings, kafka.incidents_topic, 2))

    stack.wait_for("the held snapshot on the alert topic", arrived, timeout=90)
    again = [Incident.model_validate_json(r.value) for r in read_topic(settings, kafka.incidents_topic)]
    assert [i for i in again if i.id == lost.id] == [lost]
    stack.wait_for("its entry deleted once delivered", lambda: _outbox(stack)[entry][1] is None, timeout=60)
    assert re.search(rf"outbox sent again partition={partition} entries=\d+", (stack.logs / "worker-2.log").read_text())
