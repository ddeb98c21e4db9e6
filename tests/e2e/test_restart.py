"""Stopping the worker mid-stream (SIGTERM or SIGKILL) loses no incident and duplicates none."""

from __future__ import annotations

import json

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata
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


def test_raw_messages_the_consumer_resumes_past_are_ingested_though_no_message_follows(
    stack: Stack, scenario: list[Message]
) -> None:
    """The group's committed raw offsets are past every message (as a crash between commit and ingest
    leaves them on this broker), and nothing is produced afterwards: the sweep replays the gap."""
    settings = stack.settings
    pack = load_pack(settings.rules.pack)
    expected = {i.id: i for i in replay(pack, [json.dumps(e).encode() for e in scenario_events(scenario)]).incidents}
    produce(settings, scenario, speed=0)
    raw = read_topic(settings, settings.kafka.raw_topic)
    ends: dict[int, int] = {}
    for record in raw:
        ends[record.partition] = max(ends.get(record.partition, 0), record.offset + 1)
    assert sum(ends.values()) == len(raw) > 100
    committer = KafkaConsumer(
        group_id=settings.kafka.app_id, enable_auto_commit=False, **settings.kafka.client_options()
    )
    committer.assign([TopicPartition(settings.kafka.raw_topic, p) for p in ends])
    committer.commit(
        {TopicPartition(settings.kafka.raw_topic, p): OffsetAndMetadata(end, "", -1) for p, end in ends.items()}
    )
    committer.close()

    stack.start("store")
    stack.start("worker")

    def complete() -> bool:
        rows = stack.stored_incidents()
        return {r["id"]: r["revision"] for r in rows} == {k: v.revision for k, v in expected.items()}

    stack.wait_for("every replayed incident, with no new raw message", complete, timeout=120)
    assert "sweep: partition" in stack.log_tail("worker", 400)
    assert stack.reader.scalar("SELECT count(*) FROM events") == len(scenario_events(scenario))


def test_the_worker_commits_every_raw_message_it_ingested_and_delivered(stack: Stack, scenario: list[Message]) -> None:
    """Raw messages are acked by hand once their envelopes are delivered (``streams.delivery``): the
    group's committed raw offsets still reach the end of every partition while the worker runs,
    past a message that gave only a dead letter too."""
    settings = stack.settings
    poison = KafkaProducer(**settings.kafka.producer_options())
    poison.send(settings.kafka.raw_topic, b"{not json", partition=0)
    poison.flush()
    poison.close()
    produce(settings, scenario, speed=0)
    ends: dict[int, int] = {}
    for record in read_topic(settings, settings.kafka.raw_topic):
        ends[record.partition] = max(ends.get(record.partition, 0), record.offset + 1)
    assert sum(ends.values()) > 100
    stack.start("worker")
    reader = KafkaConsumer(group_id=settings.kafka.app_id, enable_auto_commit=False, **settings.kafka.client_options())
    parts = [TopicPartition(settings.kafka.raw_topic, p) for p in ends]
    try:

        def committed() -> dict[int, int | None]:
            return {tp.partition: reader.committed(tp) for tp in parts}

        stack.wait_for("the raw offsets committed to the end", lambda: committed() == ends, timeout=90)
    finally:
        reader.close()
    assert "not acknowledged" not in stack.log_tail("worker", 2000)
    sources = [json.loads(r.value)["source"] for r in read_topic(settings, settings.kafka.deadletter_topic)]
    assert f"{settings.kafka.raw_topic}[0]@0" in sources, "the poison message was dead-lettered"
