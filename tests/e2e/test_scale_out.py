"""Two workers in one group split the partitions; rule state moves with its partitions.

Each test starts two `cityops worker` processes on the same topics and group and one store writer,
and feeds the Wuhan scenario with every subject's events keyed by the subject on the raw topic, so
that raw partitions, and both workers' ingest stages, carry part of the load while each subject's
events stay in order. The incidents in DuckDB and on the alert topic must equal `rules.replay`.
"""

from __future__ import annotations

import ast
import json
import re
from collections import defaultdict
from datetime import datetime

import orjson
import pytest
from kafka import KafkaProducer
from stack import Stack, latest_by_id, read_topic

from rules.model import Incident
from rules.pack import load_pack
from rules.replay import replay
from streams.scenario import Message, scenario_events
from streams.settings import Settings

pytestmark = pytest.mark.integration

ASSIGNED = re.compile(r"partitions assigned app_id=\S+ events=(\[[0-9, ]*\])")


def _short_sessions(stack: Stack) -> None:
    """A fast group: Tansu holds a join for half the session timeout (NOTES)."""
    stack.settings.kafka.session_timeout_s = 4.0
    stack.settings.kafka.heartbeat_s = 1.0


def _assignments(stack: Stack, name: str) -> list[list[int]]:
    """Every events-topic assignment a worker logged, oldest first."""
    path = stack.logs / f"{name}.log"
    text = path.read_text(errors="replace") if path.exists() else ""
    return [ast.literal_eval(m.group(1)) for m in ASSIGNED.finditer(text)]


def _current(stack: Stack, name: str) -> list[int] | None:
    found = _assignments(stack, name)
    return found[-1] if found else None


def _split(stack: Stack, a: str, b: str) -> bool:
    """Both workers hold partitions, none twice, and together all of them."""
    pa, pb = _current(stack, a), _current(stack, b)
    every = list(range(stack.settings.kafka.partitions))
    return bool(pa) and bool(pb) and not set(pa or []) & set(pb or []) and sorted((pa or []) + (pb or [])) == every


def _produce_by_subject(settings: Settings, messages: list[Message]) -> int:
    """Send the scenario to the raw topic, one record per subject and time step, keyed by the subject."""
    producer = KafkaProducer(client_id="scale-out-test", linger_ms=5, acks="all", **settings.kafka.producer_options())
    sent = 0
    try:
        for msg in messages:
            if msg.bad is not None:
                producer.send(settings.kafka.raw_topic, key=b"bad", value=msg.bad)
                continue
            by_subject: dict[str, list[dict[str, object]]] = defaultdict(list)
            for event in msg.events:
                subject = event.get("sensor_id") or event.get("object_id") or event["id"]
                by_subject[str(subject)].append(event)
            for subject, events in by_subject.items():
                producer.send(settings.kafka.raw_topic, key=subject.encode(), value=orjson.dumps({"events": events}))
                sent += len(events)
        producer.flush()
    finally:
        producer.close()
    return sent


def _expected(stack: Stack, scenario: list[Message]) -> dict[str, Incident]:
    pack = load_pack(stack.settings.rules.pack)
    return {i.id: i for i in replay(pack, [json.dumps(e).encode() for e in scenario_events(scenario)]).incidents}


def _start_two_workers(stack: Stack) -> None:
    stack.start("store")
    stack.start("worker-a")
    stack.wait_for("worker-a to own every partition", lambda: bool(_current(stack, "worker-a")))
    stack.start("worker-b")
    stack.wait_for("the two workers to split the partitions", lambda: _split(stack, "worker-a", "worker-b"))


def _wait_for_replay(stack: Stack, expected: dict[str, Incident], timeout: float = 150.0) -> None:
    def complete() -> bool:
        rows = stack.stored_incidents()
        return {r["id"]: r["revision"] for r in rows} == {k: v.revision for k, v in expected.items()}

    stack.wait_for("the replayed incidents, at their final revisions, in the store", complete, timeout=timeout)
    assert stack.reader.scalar("SELECT count(*) - count(DISTINCT id) FROM incidents") == 0
    alerts = [
        Incident.model_validate_json(r.value) for r in read_topic(stack.settings, stack.settings.kafka.incidents_topic)
    ]
    assert latest_by_id(alerts) == expected


def test_two_workers_split_the_partitions_and_give_exactly_the_replayed_incidents(
    stack: Stack, scenario: list[Message]
) -> None:
    _short_sessions(stack)
    expected = _expected(stack, scenario)
    assert len({i.rule_id for i in expected.values()}) >= 8  # several kinds, many zones

    _start_two_workers(stack)
    sent = _produce_by_subject(stack.settings, scenario)
    assert sent == len(scenario_events(scenario))
    _wait_for_replay(stack, expected)
    assert stack.reader.scalar("SELECT count(*) FROM events") == sent
    assert _assignments(stack, "worker-b"), "worker-b never held a partition"


@pytest.mark.parametrize("changelog", [False, True], ids=["rebuilt-from-events", "from-changelog"])
def test_a_stopped_worker_hands_its_partitions_and_their_rule_state_to_the_survivor(
    stack: Stack, scenario: list[Message], changelog: bool
) -> None:
    """The survivor gets the partitions' rule state either by replaying their events (``rebuild_state``,
    the default) or from the Faust table's changelog (``state_changelog``)."""
    _short_sessions(stack)
    stack.settings.worker.state_changelog = changelog
    stack.settings.worker.rebuild_state = not changelog  # one path at a time
    expected = _expected(stack, scenario)
    half = len(scenario) // 2
    first, second = scenario[:half], scenario[half:]
    # incidents that begin before the stop and go on after it: their rule state has to move
    cut = max(datetime.fromisoformat(str(e["ts"])) for e in scenario_events(first))
    parts = _zone_partitions(stack)
    spanning = [i for i in expected.values() if i.zone_id in parts and i.first_event_at <= cut < i.last_event_at]

    _start_two_workers(stack)
    # stop the worker whose partitions hold most of them (with 13 districts, one partition is hot)
    held = {name: set(_current(stack, name) or []) for name in ("worker-a", "worker-b")}
    victim = max(held, key=lambda name: sum(parts[str(i.zone_id)] in held[name] for i in spanning))
    survivor = "worker-b" if victim == "worker-a" else "worker-a"
    moved = [i for i in spanning if parts[str(i.zone_id)] in held[victim]]
    assert moved, "no incident spans the hand-over: the scenario would not test moved state"

    first_events = _produce_by_subject(stack.settings, first)
    stack.wait_for(
        "the first half in the store", lambda: stack.reader.scalar("SELECT count(*) FROM events") == first_events
    )
    stack.stop(victim)  # SIGTERM: it leaves the group; its partitions' inputs stay in the events topic
    every = list(range(stack.settings.kafka.partitions))
    stack.wait_for(f"{survivor} to take over every partition", lambda: _current(stack, survivor) == every)

    _produce_by_subject(stack.settings, second)
    # the survivor restored the moved state and continued those incidents (sustained runs, windows): replay's result
    _wait_for_replay(stack, expected)
    assert stack.reader.scalar("SELECT count(*) FROM events") == len(scenario_events(scenario))


def _zone_partitions(stack: Stack) -> dict[str, int]:
    """The events-topic partition of every district, as ingest keys it (``zone:<id>``, Kafka's murmur2)."""
    from kafka.partitioner.default import murmur2

    layer = load_pack(stack.settings.rules.pack).layers["districts"]
    n = stack.settings.kafka.partitions
    return {z: (murmur2(f"zone:{z}".encode()) & 0x7FFFFFFF) % n for z in layer.ids}


def _border_reports(stack: Stack, zones_a: set[str], zones_b: set[str]) -> list[dict[str, object]]:
    """Three illegal-dumping reports within 150 m and 4 minutes: two in a zone of A, one in a zone of B."""
    import numpy as np
    import shapely

    layer = load_pack(stack.settings.rules.pack).layers["districts"]
    geoms = dict(zip(layer.ids, layer.geoms, strict=True))
    for a in sorted(zones_a):
        for b in sorted(zones_b):
            border = geoms[a].boundary.intersection(geoms[b].boundary)
            if border.length < 0.01:
                continue
            p = border.interpolate(0.5, normalized=True)
            rng = np.random.default_rng(3)
            lon, lat = p.x + rng.uniform(-0.001, 0.001, 400), p.y + rng.uniform(-0.001, 0.001, 400)
            where = layer.locate(lon, lat)
            in_a = [(x, y) for x, y, w in zip(lon, lat, where, strict=True) if w == [a]][:2]
            in_b = [(x, y) for x, y, w in zip(lon, lat, where, strict=True) if w == [b]][:1]
            if len(in_a) == 2 and len(in_b) == 1 and shapely.Point(p.x, p.y).is_valid:
                return [
                    {
                        "kind": "report",
                        "id": f"border-{n}",
                        "ts": f"2026-07-01T23:0{2 * n}:00+08:00",
                        "lon": round(float(x), 6),
                        "lat": round(float(y), 6),
                        "category": "illegal_dumping",
                    }
                    for n, (x, y) in enumerate([*in_a, *in_b])
                ]
    raise AssertionError("no district border between the two workers' partitions")


def _send(stack: Stack, reports: list[dict[str, object]]) -> None:
    producer = KafkaProducer(client_id="scale-out-test", acks="all", **stack.settings.kafka.producer_options())
    for r in reports:
        producer.send(stack.settings.kafka.raw_topic, key=str(r["id"]).encode(), value=orjson.dumps(r))
    producer.flush()
    producer.close()


def test_a_cluster_across_a_border_between_two_partitions_is_found_by_one_worker(stack: Stack) -> None:
    """One worker holds both partitions' state in one table; the next test splits them over two workers."""
    _short_sessions(stack)
    stack.start("store")
    stack.start("worker")
    stack.wait_for("the worker to own every partition", lambda: bool(_current(stack, "worker")))
    parts = _zone_partitions(stack)
    hot = max(set(parts.values()), key=list(parts.values()).count)
    reports = _border_reports(
        stack, {z for z, p in parts.items() if p == hot}, {z for z, p in parts.items() if p != hot}
    )
    pack = load_pack(stack.settings.rules.pack)
    expected = {i.id: i for i in replay(pack, [json.dumps(r).encode() for r in reports]).incidents}
    assert {i.rule_id for i in expected.values()} == {"sanitation.dumping-cluster"}
    _send(stack, reports)
    stack.wait_for("the three reports in the store", lambda: stack.reader.scalar("SELECT count(*) FROM events") == 3)
    _wait_for_replay(stack, expected, timeout=45)


def test_a_cluster_across_a_border_between_two_workers_partitions_is_found(stack: Stack) -> None:
    _short_sessions(stack)
    _start_two_workers(stack)
    parts = _zone_partitions(stack)
    owned_a, owned_b = set(_current(stack, "worker-a") or []), set(_current(stack, "worker-b") or [])
    reports = _border_reports(
        stack, {z for z, p in parts.items() if p in owned_a}, {z for z, p in parts.items() if p in owned_b}
    )
    pack = load_pack(stack.settings.rules.pack)
    expected = {i.id: i for i in replay(pack, [json.dumps(r).encode() for r in reports]).incidents}
    assert {i.rule_id for i in expected.values()} == {"sanitation.dumping-cluster"}

    _send(stack, reports)
    stack.wait_for("the three reports in the store", lambda: stack.reader.scalar("SELECT count(*) FROM events") == 3)
    _wait_for_replay(stack, expected, timeout=45)  # one worker finds it within seconds
