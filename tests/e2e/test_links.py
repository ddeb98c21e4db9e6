"""A lost events envelope (a failed send) is found by its link and derived again from the raw topic."""

from __future__ import annotations

import json
from collections.abc import Iterable

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata
from stack import Stack, read_topic

from rules.engine import Engine
from rules.formats.cloudevents_in import ingest_record
from rules.model import Incident
from rules.pack import load_pack
from rules.pipeline import Chain, Pipeline
from rules.replay import replay
from streams.scenario import Message, scenario_events
from streams.simulate import produce

pytestmark = pytest.mark.integration


def test_envelopes_lost_between_ingest_and_detect_are_derived_again_in_order(
    stack: Stack, scenario: list[Message]
) -> None:
    settings = stack.settings
    # no rebuild at start: ingest must not derive the raw messages again by itself (that needs the
    # changelog-backed state, and one record per batch on this broker)
    settings.worker.rebuild_state = False
    settings.worker.state_changelog = True
    settings.kafka.producer_max_batch_size = 1
    kafka = settings.kafka
    pack = load_pack(settings.rules.pack)
    expected = {i.id: i for i in replay(pack, [json.dumps(e).encode() for e in scenario_events(scenario)]).incidents}

    produce(settings, scenario, speed=0)
    raw = sorted(read_topic(settings, kafka.raw_topic), key=lambda r: (r.offset, r.partition))
    # the envelopes the ingest agent sends for these raw messages, links included
    pipeline = Pipeline(Engine(pack), partitions=kafka.partitions)
    chain = Chain()
    envelopes: list[tuple[int, int, int, bytes, set[str]]] = []  # events partition, raw partition, offset, ...
    for r in raw:
        out = ingest_record(pipeline, r.value, r.headers, kafka.raw_topic, r.partition, r.offset)
        for part in out.targets():
            value = out.envelope(part, (r.partition, r.offset), chain.link(r.partition, part, r.offset))
            envelopes.append((part, r.partition, r.offset, value, {i.event.id for i in out.routed.get(part, ())}))

    # lose two envelopes in a row of one stream and one of another, each with a successor in its
    # stream, chosen so that losing them changes replay's incidents (revision, evidence or value)
    def signature(incidents: Iterable[Incident]) -> dict[str, tuple[int, int, float | None]]:
        return {i.id: (i.revision, i.evidence.count, i.value) for i in incidents}

    events = scenario_events(scenario)

    def matters(ns: set[int]) -> bool:
        ids = set().union(*(envelopes[n][4] for n in ns))
        kept = [json.dumps(e).encode() for e in events if e.get("id") not in ids]
        return signature(replay(pack, kept).incidents) != signature(expected.values())

    streams: dict[tuple[int, int], list[int]] = {}
    for n, (part, rp, *_rest) in enumerate(envelopes):
        streams.setdefault((part, rp), []).append(n)
    ordered = sorted(streams.values(), key=len, reverse=True)
    pairs = [{s[k], s[k + 1]} for s in ordered for k in range(1, len(s) - 2)]
    first = next(p for p in pairs if matters(p))
    singles = [{s[k]} for s in ordered for k in range(1, len(s) - 1) if s[k] not in first and s[k] - 1 not in first]
    other = next(
        x for x in singles if not {envelopes[n][:2] for n in x} & {envelopes[n][:2] for n in first} and matters(x)
    )
    lost = first | other

    producer = KafkaProducer(**kafka.producer_options())
    for n, (part, _rp, _o, value, _ids) in enumerate(envelopes):
        if n not in lost:
            producer.send(kafka.events_topic, value, partition=part)
    producer.flush()
    producer.close()
    # the raw messages count as ingested (their envelopes were sent): the worker's ingest skips them
    ends: dict[int, int] = {}
    for r in raw:
        ends[r.partition] = max(ends.get(r.partition, 0), r.offset + 1)
    committer = KafkaConsumer(group_id=kafka.app_id, enable_auto_commit=False, **kafka.client_options())
    committer.assign([TopicPartition(kafka.raw_topic, p) for p in ends])
    committer.commit({TopicPartition(kafka.raw_topic, p): OffsetAndMetadata(e, "", -1) for p, e in ends.items()})
    committer.close()

    stack.start("store")
    stack.start("worker")

    def complete() -> bool:
        rows = stack.stored_incidents()
        return {r["id"]: (r["revision"], r["evidence_count"], r["value"]) for r in rows} == signature(expected.values())

    stack.wait_for("every replayed incident, at its final revision, evidence and value", complete, timeout=120)
    log = stack.log_tail("worker", 2000)
    assert log.count("detect relink: a lost envelope") == 2, log[-3000:]
    assert "2 envelope(s) applied in order" in log and "1 envelope(s) applied in order" in log
    assert stack.reader.scalar("SELECT count(*) - count(DISTINCT id) FROM incidents") == 0
    # the lost envelopes' events are archived too (the derived envelopes were sent): backtests see them
    lost_ids = set().union(*(envelopes[n][4] for n in lost))
    assert lost_ids
    stack.wait_for(
        "every event in the store's archive",
        lambda: stack.reader.scalar("SELECT count(*) FROM events") == len(events),
        timeout=60,
    )
    archived = {r["id"] for r in stack.reader.rows("SELECT id FROM events")}
    assert lost_ids <= archived
