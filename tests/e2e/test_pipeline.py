"""End to end on the real broker: the incidents on the alert topic and in DuckDB equal replay."""

from __future__ import annotations

import json

import pytest
from stack import Stack, latest_by_id, read_topic

from rules.engine import Engine
from rules.model import Incident
from rules.pack import load_pack
from rules.pipeline import Pipeline, decode_envelope, partition_for
from rules.replay import replay
from streams.scenario import Message, scenario_events
from streams.simulate import produce

pytestmark = pytest.mark.integration

EXPECTED_RULES = {  # 12 of the demo pack's 15 kinds of finding fire in the 4-minute night scenario
    ("air.pm25-near-school", "aq-school-01"),
    ("air.pm25-very-high", "aq-420107-2"),
    ("airspace.drone-no-fly-entry", "uav-3"),
    ("airspace.drone-too-high", "uav-2"),
    ("flood.water-level-high", "wl-420103-0"),
    ("flood.water-level-high", "wl-420106-1"),
    ("flood.water-level-sustained", "wl-420103-0"),
    ("flood.water-level-sustained", "wl-420106-1"),
    ("flood.waterlogging-confirmed", "wl-420103-0"),
    ("flood.waterlogging-reports", "420103"),
    ("infra.manhole-tilt", "mh-420106-1"),
    ("mobility.robotaxi-stalled", "rt-1"),
    ("sanitation.dumping-cluster", "cell:5659:18277"),
    ("sanitation.dumping-reports", "420111"),
}


def _replayed(stack: Stack, messages: list[Message]) -> dict[str, Incident]:
    pack = load_pack(stack.settings.rules.pack)
    lines = [json.dumps(e).encode() for e in scenario_events(messages)]
    return {i.id: i for i in replay(pack, lines).incidents}


def test_scenario_gives_exactly_the_replayed_incidents_on_the_alert_topic_and_in_duckdb(
    stack: Stack, scenario: list[Message]
) -> None:
    expected = _replayed(stack, scenario)
    assert {(i.rule_id, i.subject) for i in expected.values()} == EXPECTED_RULES

    stack.start("store")
    stack.start("worker")
    sent = produce(stack.settings, scenario, speed=0)
    assert sent == len(scenario_events(scenario))

    def store_matches() -> bool:
        rows = stack.stored_incidents()
        return {r["id"]: r["revision"] for r in rows} == {k: v.revision for k, v in expected.items()}

    stack.wait_for("the store to hold the replayed incidents", store_matches)

    rows = {r["id"]: r for r in stack.stored_incidents()}
    for inc_id, inc in expected.items():
        row = rows[inc_id]
        assert (row["rule_id"], row["subject"], row["zone_id"]) == (inc.rule_id, inc.subject, inc.zone_id)
        assert row["value"] == inc.value
        assert row["evidence_count"] == inc.evidence.count
        assert json.loads(row["evidence"]) == inc.evidence.model_dump()
    assert stack.reader.scalar("SELECT count(*) FROM events") == sent

    alerts = [
        Incident.model_validate_json(r.value) for r in read_topic(stack.settings, stack.settings.kafka.incidents_topic)
    ]
    for record_key, inc in (
        (r.key, Incident.model_validate_json(r.value))
        for r in read_topic(stack.settings, stack.settings.kafka.incidents_topic)
    ):
        assert record_key == inc.id.encode(), "alert records are keyed by incident id"
    assert latest_by_id(alerts) == expected

    # batched repartitioning: one envelope per target partition per raw message, routed by zone/object
    pipeline = Pipeline(Engine(load_pack(stack.settings.rules.pack)), partitions=stack.settings.kafka.partitions)
    seen: dict[tuple[int, tuple[int, int]], list[set[str]]] = {}
    for record in read_topic(stack.settings, stack.settings.kafka.events_topic):
        items, src = decode_envelope(record.value)
        if not items:
            continue  # a tick
        assert src is not None, "every envelope names its raw message"
        seen.setdefault((record.partition, src), []).append({i.event.id for i in items})
        assert {partition_for(pipeline.route_key(i), stack.settings.kafka.partitions) for i in items} == {
            record.partition
        }
    # One envelope per raw message and partition. The only repeat is the envelope detect derived
    # again for a lost one (a failed send, resent late; links.py sends it for the store's archive),
    # and it carries the same events.
    repeats = {key: ids for key, ids in seen.items() if len(ids) > 1}
    for (partition, src), ids in repeats.items():
        assert all(i == ids[0] for i in ids), f"envelopes of raw message {src} in partition {partition} differ"
    if repeats:
        assert "detect relink: a lost envelope" in stack.log_tail("worker", 10**6), f"repeated envelopes {repeats}"
    assert len({src for _, src in seen}) < len(seen), "some raw messages were split over several partitions"
