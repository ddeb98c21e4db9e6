"""`cityops alerts` on the real broker: routes, formats, ordering per incident, webhooks, dead letters, commits."""

from __future__ import annotations

import contextlib
import itertools
import json
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from alert_helpers import cap_schema, make, resolved
from cloudevents.core.bindings import kafka as ce_kafka
from cloudevents.core.formats.json import JSONFormat
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from stack import read_topic

from rules.model import DeadLetterRecord, Incident
from sinks.alerts import AlertPayload, Route, WebhookEndpoint
from streams.alerting import AlertRunner
from streams.broker import DevBroker, free_port
from streams.procs import Child, spawn
from streams.settings import Settings

NS = {"cap": "urn:oasis:names:tc:emergency:cap:1.2"}
PARTITIONS = 3  # not Tansu's auto-create default (4): proves the topics were created explicitly

A = "aaaaaaaaaaaaaaaaaaaaaaaa"  # flood, high: every route
B = "bbbbbbbbbbbbbbbbbbbbbbbb"  # air quality, medium: the json and sdm routes only


class Hooks:
    """A local webhook receiver that answers 500 to the first request, then 200."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.lock = threading.Lock()
        hooks = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with hooks.lock:
                    hooks.bodies.append(body)
                    first = len(hooks.bodies) == 1
                self.send_response(500 if first else 204)
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/alerts"
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def hooks() -> Iterator[Hooks]:
    h = Hooks()
    try:
        yield h
    finally:
        h.close()


def alert_settings(broker: DevBroker, hook_url: str) -> Settings:
    tag = uuid.uuid4().hex[:6]
    s = Settings()
    s.kafka.bootstrap = broker.bootstrap
    s.kafka.topic_prefix = f"t.alerts-{tag}"
    s.kafka.app_id = f"w-alerts-{tag}"
    s.kafka.partitions = PARTITIONS
    s.alerts.routes = [
        Route(name="all", topic="{prefix}.alerts.all", format="json"),
        Route(name="flood", topic="{prefix}.alerts.flood", format="cloudevents-binary", categories=["flood"]),
        Route(name="critical", topic="{prefix}.alerts.critical", format="cap", min_severity="high"),
        Route(name="ce-structured", topic="{prefix}.alerts.ce", format="cloudevents-structured", min_severity="high"),
        Route(name="sdm", topic="{prefix}.alerts.sdm", format="sdm-alert"),
        Route(name="off", topic="{prefix}.alerts.off", enabled=False),
    ]
    s.alerts.webhooks = [
        WebhookEndpoint(name="ops", url=hook_url, backoff_base_s=0.05, max_attempts=3),
        WebhookEndpoint(
            name="gone", url=f"http://127.0.0.1:{free_port()}/", routes=["flood"], max_attempts=2, backoff_base_s=0.01
        ),
    ]
    s.alerts.stats_interval_s = 1.0
    return s


def incidents() -> list[Incident]:
    """A: revisions 1..5, a redelivered 3, then resolved; B: two revisions. In topic order per key."""
    a = [make(id=A, revision=r, last_event_at=f"2026-07-01T00:0{r}:00Z") for r in range(1, 6)]
    a.insert(4, a[2])  # a duplicate revision 3 after revision 4
    a.append(resolved(id=A, revision=5, last_event_at="2026-07-01T00:05:00Z"))
    b = [make(id=B, revision=r, category="air_quality", severity="medium", subject="aq-1") for r in (1, 2)]
    return a + b


def produce(settings: Settings, items: list[Incident | bytes]) -> None:
    producer = KafkaProducer(bootstrap_servers=settings.kafka.bootstrap)
    for item in items:
        if isinstance(item, bytes):
            producer.send(settings.kafka.incidents_topic, key=b"broken", value=item)
        else:
            producer.send(settings.kafka.incidents_topic, key=item.id.encode(), value=item.model_dump_json().encode())
    producer.flush()
    producer.close()


def wait_running(child: Child, timeout: float = 30.0) -> None:
    """Until the runner has created its topics (reading a topic before would let the broker auto-create it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert child.alive(), child.log.read_text(errors="replace")[-3000:]
        if "alerts running" in child.log.read_text(errors="replace"):
            return
        time.sleep(0.1)
    raise AssertionError(f"alerts did not start in {timeout:.0f}s\n{child.log.read_text()[-3000:]}")


def wait_for_records(child: Child, settings: Settings, topic: str, count: int, timeout: float = 60.0) -> list[Any]:
    deadline = time.monotonic() + timeout
    records: list[Any] = []
    while time.monotonic() < deadline:
        assert child.alive(), child.log.read_text(errors="replace")[-3000:]
        records = read_topic(settings, topic, timeout_s=1.0)
        if len(records) >= count:
            return sorted(records, key=lambda r: (r.partition, r.offset))
        time.sleep(0.5)
    raise AssertionError(
        f"{topic}: {len(records)} of {count} records after {timeout:.0f}s\n{child.log.read_text()[-3000:]}"
    )


def by_key(records: list[Any], decode: Callable[[Any], Any]) -> dict[bytes, list[Any]]:
    out: dict[bytes, list[Any]] = {}
    for rec in records:
        out.setdefault(rec.key, []).append((rec.partition, decode(rec)))
    return out


@pytest.mark.integration
def test_alerts_process_routes_formats_orders_delivers_and_commits(
    broker: DevBroker, hooks: Hooks, tmp_path: Path
) -> None:
    s = alert_settings(broker, hooks.url)
    s.alerts.coalesce = False  # one alert per revision: the whole sequence of kinds is checked below
    p = s.kafka.topic_prefix
    child = spawn("alerts", ["cityops", "alerts"], s.to_env(), tmp_path)
    try:
        wait_running(child)
        produce(s, [*incidents(), b'{"not": "an incident"}'])

        # json route: every message, keyed by incident id, one partition per incident, in revision order
        alls = wait_for_records(child, s, f"{p}.alerts.all", 8)
        assert len(alls) == 8  # 6 for A (the redelivered revision 3 is not repeated), 2 for B
        got = by_key(alls, lambda r: AlertPayload.model_validate_json(r.value))
        assert set(got) == {A.encode(), B.encode()}
        for key, items in got.items():
            assert len({part for part, _ in items}) == 1, f"{key!r} spread over partitions"
        a_items = [pl for _, pl in got[A.encode()]]
        assert [(pl.kind, pl.incident.revision, pl.incident.status) for pl in a_items] == [
            ("new", 1, "open"),
            ("update", 2, "open"),
            ("update", 3, "open"),
            ("update", 4, "open"),
            ("update", 5, "open"),
            ("resolved", 5, "resolved"),
        ]
        assert [pl.kind for _, pl in got[B.encode()]] == ["new", "update"]
        assert all(dict(r.headers)["content-type"] == b"application/json" for r in alls)

        # CloudEvents binary: floods only, parsed by the SDK
        floods = wait_for_records(child, s, f"{p}.alerts.flood", 6)
        events = [
            ce_kafka.from_binary(ce_kafka.KafkaMessage(dict(r.headers), r.key, r.value), JSONFormat()) for r in floods
        ]
        assert [e.get_type() for e in events] == [
            f"org.cityops.incident.{k}" for k in ("new", "update", "update", "update", "update", "resolved")
        ]
        assert [e.get_id() for e in events] == [pl.message_id for pl in a_items]
        assert {r.key for r in floods} == {A.encode()}

        # CloudEvents structured
        structured = wait_for_records(child, s, f"{p}.alerts.ce", 6)
        assert [
            ce_kafka.from_structured(ce_kafka.KafkaMessage(dict(r.headers), r.key, r.value), JSONFormat()).get_id()
            for r in structured
        ] == [pl.message_id for pl in a_items]

        # CAP: high and above, Alert -> Update... -> Cancel, valid, references chained
        caps = wait_for_records(child, s, f"{p}.alerts.critical", 6)
        xsd = cap_schema()
        for r in caps:
            xsd.validate(r.value.decode())
        docs = [ET.fromstring(r.value) for r in caps]
        assert [d.findtext("cap:msgType", namespaces=NS) for d in docs] == ["Alert"] + ["Update"] * 4 + ["Cancel"]
        for before, after in itertools.pairwise(docs):
            assert (after.findtext("cap:references", namespaces=NS) or "").split(",")[1] == before.findtext(
                "cap:identifier", namespaces=NS
            )
        # the pack's district outline, not a box (zone outlines are loaded from the configured pack)
        assert len((docs[0].findtext("cap:info/cap:area/cap:polygon", namespaces=NS) or "").split(" ")) > 5

        sdm = wait_for_records(child, s, f"{p}.alerts.sdm", 8)
        assert {json.loads(r.value)["id"] for r in sdm} == {
            f"urn:ngsi-ld:Alert:cityops:{A}",
            f"urn:ngsi-ld:Alert:cityops:{B}",
        }

        # dead letters: the unreadable incident, and every flood message the unreachable webhook gave up on
        dead = [DeadLetterRecord.model_validate_json(r.value) for r in wait_for_records(child, s, f"{p}.deadletter", 7)]
        poison = [d for d in dead if d.kind == "poison"]
        webhook = [d for d in dead if d.kind == "webhook"]
        assert len(poison) == 1
        assert poison[0].source.startswith(f"{p}.incidents[")
        assert len(webhook) == 6
        assert all("webhook 'gone'" in d.reason and "after 2 attempt(s)" in d.reason for d in webhook)
        assert sorted(d.source.split("#")[1] for d in webhook) == sorted(pl.message_id for pl in a_items)

        # the working webhook got every message once, after one retry of the first
        deadline = time.monotonic() + 20
        while len(hooks.bodies) < 9 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(hooks.bodies) == 9  # 8 messages + 1 retry
        assert hooks.bodies[0] == hooks.bodies[1]
        assert {AlertPayload.model_validate_json(b).message_id for b in hooks.bodies} == {
            AlertPayload.model_validate_json(r.value).message_id for r in alls
        }

        # topics were created explicitly with the configured partitions; disabled routes get no topic
        probe = KafkaConsumer(bootstrap_servers=s.kafka.bootstrap)
        topics = probe.topics()
        for name in ("all", "flood", "critical", "ce", "sdm"):
            assert probe.partitions_for_topic(f"{p}.alerts.{name}") == set(range(PARTITIONS)), name
        assert f"{p}.alerts.off" not in topics
        probe.close()
    finally:
        code = child.stop(grace=20)
    log = child.log.read_text(errors="replace")
    assert code == 0, log[-3000:]
    assert "alerts stopped stats" in log
    stats_line = [line for line in log.splitlines() if "alerts stopped stats" in line][-1]
    assert "'consumed': 10" in stats_line  # 7 for A, 2 for B, 1 unreadable
    assert "'unchanged': 1" in stats_line
    assert "'ops': {'delivered': 8, 'retried': 1, 'failed': 0}" in stats_line
    assert "'gone': {'delivered': 0, 'retried': 6, 'failed': 6}" in stats_line

    # restart: committed offsets are not re-read; the next revision is announced as new (memory is per process)
    child = spawn("alerts-2", ["cityops", "alerts"], s.to_env(), tmp_path)
    try:
        wait_running(child)
        produce(s, [make(id=A, revision=6, last_event_at="2026-07-01T00:06:00Z")])
        alls = wait_for_records(child, s, f"{p}.alerts.all", 9)
        time.sleep(2.0)
        alls = read_topic(s, f"{p}.alerts.all", timeout_s=1.0)
        assert len(alls) == 9
        last = AlertPayload.model_validate_json(
            max((r for r in alls if r.key == A.encode()), key=lambda r: r.offset).value
        )
        assert (last.kind, last.message_id) == ("new", f"{A}.r6.open")
    finally:
        with contextlib.suppress(Exception):
            child.stop(grace=20)


class _Future:
    def get(self, timeout: float | None = None) -> None:
        return None


class _Producer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes]] = []

    def send(self, topic: str, key: bytes | None = None, value: bytes = b"", headers: object = None) -> _Future:
        self.sent.append((topic, key, value))
        return _Future()

    def flush(self) -> None:
        pass


@dataclass
class _Rec:
    value: bytes
    key: bytes
    offset: int


def test_one_bad_snapshot_is_dead_lettered_and_the_batch_goes_on() -> None:
    """No broker: the runner's batch handling with a fake producer."""

    def broken_zones(layer: str | None, zone_id: str | None) -> list[list[tuple[float, float]]]:
        if zone_id == "420199":
            return [[(114.0, 30.0), (114.1, 30.0)]]  # two points: not a CAP polygon
        return []

    s = Settings()
    s.kafka.topic_prefix = "unit"
    runner = AlertRunner(s, zones=broken_zones)
    producer = _Producer()
    runner._producer = producer
    tp = TopicPartition("unit.incidents", 2)
    runner.handle(
        {
            tp: [
                _Rec(make(id=A, zone_id="420199").model_dump_json().encode(), A.encode(), 7),
                _Rec(b"{not json", b"x", 8),
                _Rec(make(id=B).model_dump_json().encode(), B.encode(), 9),
            ]
        }
    )
    topics = [t for t, _, _ in producer.sent]
    assert topics.count("unit.deadletter") == 2
    assert [t for t in topics if t != "unit.deadletter"] == [
        "unit.alerts.all",
        "unit.alerts.flood",
        "unit.alerts.critical",
    ]
    # unreadable records are dead-lettered while the batch is read, unrenderable ones while it is published
    dead = {
        d.source: d
        for d in (DeadLetterRecord.model_validate_json(v) for t, _, v in producer.sent if t == "unit.deadletter")
    }
    assert set(dead) == {"unit.incidents[2]@7", "unit.incidents[2]@8"}
    assert "cannot render" in dead["unit.incidents[2]@7"].reason
    assert "at least 4 points" in dead["unit.incidents[2]@7"].reason
    assert "unreadable incident" in dead["unit.incidents[2]@8"].reason
    assert runner.counters["unrenderable"] == 1
    assert runner.counters["invalid"] == 1
    assert runner.counters["produced"] == 5


def test_a_silence_suppresses_the_notification_of_matching_incidents_only() -> None:
    """No broker: a silenced incident produces no alert record; an unsilenced one does."""
    from datetime import timedelta

    from rules.silences import Silence

    s = Settings()
    s.kafka.topic_prefix = "unit"
    runner = AlertRunner(s, zones=lambda layer, zone_id: [])
    producer = _Producer()
    runner._producer = producer
    silenced = make(id=A)
    runner.silences["roadworks"] = Silence(
        silence_id="roadworks",
        starts_at=silenced.first_event_at - timedelta(hours=1),
        ends_at=silenced.first_event_at + timedelta(days=3),
        zones=[silenced.zone_id or ""],
        rules=[silenced.rule_id],
        created_by="ops",
    )
    other = make(id=B, zone_id="420106")
    tp = TopicPartition("unit.incidents", 0)
    runner.handle(
        {
            tp: [
                _Rec(silenced.model_dump_json().encode(), A.encode(), 1),
                _Rec(other.model_dump_json().encode(), B.encode(), 2),
            ]
        }
    )
    keys = {k for _, k, _ in producer.sent}
    assert keys == {B.encode()}
    assert runner.counters["silenced"] == 1


def test_a_batch_publishes_the_newest_of_each_run_of_same_status_snapshots() -> None:
    """No broker: ten updates of one open incident in one batch give one alert; a resolve is kept."""
    s = Settings()
    s.kafka.topic_prefix = "unit"
    s.alerts.routes = [Route(name="all", topic="{prefix}.alerts.all", format="json")]
    runner = AlertRunner(s, zones=lambda layer, zone_id: [])
    producer = _Producer()
    runner._producer = producer
    tp = TopicPartition("unit.incidents", 0)
    snaps = [make(id=A, revision=r) for r in range(1, 11)] + [make(id=B), resolved(id=A, revision=10)]
    runner.handle({tp: [_Rec(i.model_dump_json().encode(), i.id.encode(), n) for n, i in enumerate(snaps)]})
    sent = [(k, AlertPayload.model_validate_json(v)) for t, k, v in producer.sent if t == "unit.alerts.all"]
    assert [(k.decode(), p.kind, p.incident.revision) for k, p in sent] == [
        (A, "new", 10),
        (B, "new", 1),
        (A, "resolved", 10),
    ]
    assert runner.counters["coalesced"] == 9 and runner.counters["consumed"] == 12
    s.alerts.coalesce = False
    every = AlertRunner(s, zones=lambda layer, zone_id: [])
    every._producer = _Producer()
    every.handle({tp: [_Rec(i.model_dump_json().encode(), i.id.encode(), n) for n, i in enumerate(snaps)]})
    assert len(every._producer.sent) == 12
