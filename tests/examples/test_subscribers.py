"""The documented example subscribers (kcat, kafka-python, confluent-kafka) read real alert topics on the broker."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from alert_helpers import make, resolved
from kafka import KafkaProducer

from sinks.alerts import AlertPayload, AlertPublisher, Route, RouteTable
from streams.alerting import ensure_topics
from streams.broker import DevBroker
from streams.settings import Settings

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "subscribers"
DOC = (ROOT / "docs" / "alerts.md").read_text(encoding="utf-8")
A = "aaaaaaaaaaaaaaaaaaaaaaaa"  # flood, high: every route
B = "bbbbbbbbbbbbbbbbbbbbbbbb"  # air quality, low: json and sdm only


@dataclass
class Topics:
    bootstrap: str
    prefix: str
    sent: dict[str, list[tuple[bytes, AlertPayload]]]  # topic -> (key, payload) in send order

    def topic(self, name: str) -> str:
        return f"{self.prefix}.alerts.{name}"


@pytest.fixture(scope="module")
def topics(broker: DevBroker) -> Iterator[Topics]:
    """Alert topics filled through AlertPublisher, as `cityops alerts` would (A: new, update, resolved; B: new)."""
    s = Settings()
    s.kafka.bootstrap = broker.bootstrap
    s.kafka.topic_prefix = f"t.subs-{uuid.uuid4().hex[:6]}"
    s.kafka.partitions = 3
    table = RouteTable(
        [
            Route(name="all", topic="{prefix}.alerts.all", format="json"),
            Route(name="flood", topic="{prefix}.alerts.flood", format="cloudevents-binary", categories=["flood"]),
            Route(name="critical", topic="{prefix}.alerts.critical", format="cap", min_severity="high"),
            Route(name="ce", topic="{prefix}.alerts.ce", format="cloudevents-structured", categories=["flood"]),
            Route(name="sdm", topic="{prefix}.alerts.sdm", format="sdm-alert"),
        ],
        s.kafka.topic_prefix,
    )
    ensure_topics(s, table.enabled_topics())
    publisher = AlertPublisher(table)
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
    sent: dict[str, list[tuple[bytes, AlertPayload]]] = {}
    incidents = [
        make(id=A),
        make(id=A, revision=2, last_event_at="2026-07-01T00:02:00Z"),
        make(id=B, category="air_quality", severity="low", subject="aq-7"),
        resolved(id=A, revision=2, last_event_at="2026-07-01T00:02:00Z"),
    ]
    for inc in incidents:
        pub = publisher.publish(inc)
        assert pub.payload is not None
        for rec in pub.records:
            producer.send(rec.topic, key=rec.key, value=rec.value, headers=rec.headers)
            sent.setdefault(rec.topic, []).append((rec.key, pub.payload))
    producer.flush()
    producer.close()
    yield Topics(broker.bootstrap, s.kafka.topic_prefix, sent)


def lines_by_topic(stdout: str) -> dict[str, list[dict[str, str]]]:
    """`topic[p]@o key=... k=v ...` lines -> per topic, the fields of each line in order."""
    out: dict[str, list[dict[str, str]]] = {}
    for line in stdout.splitlines():
        m = re.match(r"^(\S+)\[(\d+)\]@(\d+) (.*)$", line)
        assert m, f"unexpected output line: {line!r}"
        fields = dict(re.findall(r"(\w+)=(\S+)", m.group(4).split(" title=")[0]))
        out.setdefault(m.group(1), []).append({"partition": m.group(2), "offset": m.group(3), **fields})
    return out


def run(argv: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=45, env=env, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_kafka_python_consumer_prints_every_format(topics: Topics) -> None:
    names = [topics.topic(n) for n in ("all", "critical", "sdm")]
    expected = sum(len(topics.sent[t]) for t in names)
    assert expected == 4 + 3 + 4
    proc = run(
        [
            sys.executable,
            str(EXAMPLES / "kafka_python_consumer.py"),
            "--bootstrap",
            topics.bootstrap,
            "--topic",
            ",".join(names),
            "--group",
            f"kp-{uuid.uuid4().hex[:6]}",
            "--max-messages",
            str(expected),
            "--timeout",
            "60",
        ]
    )
    got = lines_by_topic(proc.stdout)
    assert f"{expected} alert(s)" in proc.stderr
    assert {t: len(v) for t, v in got.items()} == {t: len(topics.sent[t]) for t in names}
    formats = {"all": "json", "critical": "cap", "sdm": "sdm-alert"}
    for name in formats:
        topic = topics.topic(name)
        for key in (A, B):
            lines = [f for f in got[topic] if f["key"] == key]
            payloads = [p for k, p in topics.sent[topic] if k == key.encode()]
            assert len({f["partition"] for f in lines}) <= 1  # one incident, one partition
            assert [f["message_id"] for f in lines] == [p.message_id for p in payloads]
            assert {f["format"] for f in lines} <= {formats[name]}
            assert {f["incident"] for f in lines} <= {key}
    a_json = [f["kind"] for f in got[topics.topic("all")] if f["key"] == A]
    assert a_json == ["new", "update", "resolved"]
    a_cap = [f["kind"] for f in got[topics.topic("critical")]]
    assert a_cap == ["Alert", "Update", "Cancel"]  # CAP msgType
    assert "title=Water level above 30 cm" in proc.stdout


def test_confluent_consumer_prints_cloudevents_binary_and_structured(topics: Topics) -> None:
    names = [topics.topic("flood"), topics.topic("ce")]
    proc = run(
        [
            sys.executable,
            str(EXAMPLES / "confluent_consumer.py"),
            "--bootstrap",
            topics.bootstrap,
            "--topic",
            ",".join(names),
            "--group",
            f"ck-{uuid.uuid4().hex[:6]}",
            "--max-messages",
            "6",
            "--timeout",
            "60",
        ]
    )
    got = lines_by_topic(proc.stdout)
    assert "6 alert(s)" in proc.stderr
    for topic in names:
        lines = got[topic]
        assert [f["type"] for f in lines] == [f"org.cityops.incident.{k}" for k in ("new", "update", "resolved")]
        assert [f["message_id"] for f in lines] == [p.message_id for _, p in topics.sent[topic]]
        assert [f["status"] for f in lines] == ["open", "open", "resolved"]
        assert {f["key"] for f in lines} == {A}


def documented_kcat(prefix: str) -> list[list[str]]:
    """The kcat command lines of docs/alerts.md (the ones starting with `kcat `)."""
    blocks = re.findall(r"```sh\n(.*?)```", DOC, flags=re.DOTALL)
    commands = [shlex.split(line) for b in blocks for line in b.splitlines() if line.startswith("kcat ")]
    assert len(commands) == 2, commands
    return commands


def kcat_argv(command: list[str], topics: Topics) -> list[str]:
    swapped = [
        topics.bootstrap if a == "127.0.0.1:9092" else a.replace("cityops.alerts.", f"{topics.prefix}.alerts.")
        for a in command
    ]
    assert swapped[0] == "kcat"
    return [str(EXAMPLES / "kcat-dev.sh"), *swapped[1:]]


def test_the_documented_kcat_command_prints_the_cloudevents_headers(topics: Topics) -> None:
    [read_to_end, _] = documented_kcat(topics.prefix)
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "PYTHON": sys.executable}
    proc = run(kcat_argv(read_to_end, topics), env=env)
    lines = proc.stdout.splitlines()
    heads, bodies = lines[0::2], lines[1::2]
    sent = topics.sent[topics.topic("flood")]
    assert len(heads) == len(bodies) == len(sent) == 3
    for head, body, (key, payload) in zip(heads, bodies, sent, strict=True):
        assert head.startswith(f"{topics.topic('flood')} [")
        assert f"key={key.decode()} " in head
        assert f"ce_type=org.cityops.incident.{payload.kind}," in head
        assert f"ce_id={payload.message_id}," in head
        assert "content-type=application/json" in head
        assert AlertPayload.model_validate_json(body) == payload


def test_the_documented_kcat_group_command_joins_and_reads(topics: Topics) -> None:
    [_, in_group] = documented_kcat(topics.prefix)
    argv = kcat_argv(in_group, topics)
    argv[argv.index("-G") + 1] = f"kcat-{uuid.uuid4().hex[:6]}"
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "PYTHON": sys.executable}
    proc = run([*argv[:-1], "-c", "3", argv[-1]], env=env)  # -c: stop after the 3 CAP alerts
    lines = proc.stdout.splitlines()
    heads, docs = lines[0::2], lines[1::2]  # each CAP document: XML declaration, newline, <alert>
    assert heads == [f"{A} <?xml version='1.0' encoding='utf-8'?>"] * 3
    assert [re.search(r"<msgType>(\w+)</msgType>", d).group(1) for d in docs] == ["Alert", "Update", "Cancel"]  # type: ignore[union-attr]
