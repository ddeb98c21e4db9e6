"""The HTTP gateway on a real Kafka-protocol broker: what it produces, dead letters, a paused broker, the CLI."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import orjson
import pytest
from gateway_client import PACK, request, served
from stack import make_settings, read_topic

from rules.model import DeadLetterRecord
from streams.broker import DevBroker, free_port
from streams.gateways.emit import emit
from streams.gateways.outbox import KafkaOutbox
from streams.procs import spawn
from streams.scenario import wuhan_scenario
from streams.settings import Settings
from streams.topics import create_topics

pytestmark = pytest.mark.integration
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def kafka_settings(broker: DevBroker, tmp_path: Path, name: str) -> Settings:
    s = make_settings(broker, tmp_path, name)
    s.rules.pack = PACK
    create_topics(s.kafka)
    return s


def outbox(s: Settings, **kw: Any) -> KafkaOutbox:
    return KafkaOutbox(
        s.kafka,
        max_in_flight=s.gateway.max_in_flight,
        linger_ms=1,
        warm_topics=(s.kafka.raw_topic, s.kafka.deadletter_topic),
        **kw,
    )


def raw(s: Settings) -> list[dict[str, Any]]:
    return [e for r in read_topic(s, s.kafka.raw_topic, 2.0) for e in json.loads(r.value)["events"]]


def dead(s: Settings) -> list[DeadLetterRecord]:
    return [DeadLetterRecord.model_validate_json(r.value) for r in read_topic(s, s.kafka.deadletter_topic, 2.0)]


def test_accepted_requests_are_on_the_raw_topic_and_refusals_on_the_dead_letter_topic(
    broker: DevBroker, tmp_path: Path
) -> None:
    s = kafka_settings(broker, tmp_path, "gwkafka")
    box = outbox(s)
    with served(s, box) as (_, _, url):
        ok = request(
            url,
            "POST",
            "/requests.json",
            urlencode({"service_code": "noise", "lat": 30.6, "long": 114.3}).encode(),
            FORM,
        )
        assert ok.status == 201
        bad = request(url, "POST", "/requests.json", b"service_code=noise&lat=95&long=114.3", FORM)
        assert bad.status == 400
    box.close()
    [event] = raw(s)
    assert event["id"] == ok.json[0]["service_request_id"] and event["category"] == "noise"
    [letter] = dead(s)
    assert letter.kind == "invalid" and "lat: must be a number" in letter.reason
    assert letter.source.startswith("http:POST /requests.json#2@")
    assert letter.original_size == len(b"service_code=noise&lat=95&long=114.3")


def test_a_paused_broker_gets_503_then_the_gateway_recovers(tmp_path: Path) -> None:
    with DevBroker(log_path=tmp_path / "tansu.log") as paused:
        s = kafka_settings(paused, tmp_path, "gwpause")
        s.gateway.ack_timeout_s = 1.0
        box = outbox(s, request_timeout_ms=20_000)
        body = b"service_code=noise&lat=30.6&long=114.3"
        with served(s, box) as (_, _, url):
            assert request(url, "POST", "/requests.json", body, FORM).status == 201
            assert paused.proc is not None
            os.kill(paused.proc.pid, signal.SIGSTOP)
            try:
                slow = request(url, "POST", "/requests.json", body, FORM)
                assert slow.status == 503 and slow.headers["retry-after"] == "1"
                assert "did not acknowledge within 1s" in slow.json[0]["description"]
            finally:
                os.kill(paused.proc.pid, signal.SIGCONT)
            deadline = time.monotonic() + 20
            status = 0
            while time.monotonic() < deadline and status != 201:
                status = request(url, "POST", "/requests.json", body, FORM).status
                time.sleep(0.2)
            assert status == 201
        box.close()
        # the 503'd request may still have reached Kafka: at least once, never lost after a 201
        assert len(raw(s)) >= 2


def test_cityops_gateway_http_serves_and_produces(broker: DevBroker, tmp_path: Path) -> None:
    s = kafka_settings(broker, tmp_path, "gwcli")
    port = free_port()
    env = {**s.to_env(), "CITYOPS_GATEWAY__HTTP__PORT": str(port), "CITYOPS_GATEWAY__HTTP__API_KEYS": '["cli-key-1"]'}
    child = spawn("gateway-http", ["cityops", "gateway", "http"], env, tmp_path / "logs")
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if request(url, "GET", "/health").status == 200:
                    break
            except OSError:
                time.sleep(0.2)
        body = urlencode({"service_code": "waterlogging", "lat": 30.59, "long": 114.27, "api_key": "cli-key-1"})
        reply = request(url, "POST", "/requests.json", body.encode(), FORM)
        assert reply.status == 201, reply.body
        assert request(url, "POST", "/requests.json", b"service_code=noise", FORM).status == 403
    finally:
        child.stop()
    [event] = raw(s)
    assert event["id"] == reply.json[0]["service_request_id"]
    assert [d.kind for d in dead(s)] == ["unauthorized"]


def test_cityops_gateway_http_refuses_a_public_address_without_keys(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from streams.cli import main

    result = CliRunner().invoke(main, ["gateway", "http", "--host", "0.0.0.0"])
    assert result.exit_code != 0
    assert "without API keys" in result.output


def test_the_simulator_sends_reports_through_open311_and_the_rest_through_kafka(
    broker: DevBroker, tmp_path: Path
) -> None:
    from datetime import datetime

    from rules.pack import load_pack

    s = kafka_settings(broker, tmp_path, "gwsim")
    messages = wuhan_scenario(
        load_pack(PACK).layers["districts"],
        datetime.fromisoformat("2026-07-01T08:00:00+08:00"),
        30.0,
        bad_records=False,
    )
    reports = sum(1 for m in messages for e in m.events if e["kind"] == "report")
    box = outbox(s)
    with served(s, box) as (_, _, url):
        counts = emit(s, messages, "gcj02-app", speed=0, base_url=url)
    box.close()
    assert counts["http_201"] == reports and reports > 0
    events = raw(s)
    gateway_reports = [e for e in events if e.get("channel") == "open311"]
    assert len(gateway_reports) == reports
    originals = [e for m in messages for e in m.events if e["kind"] == "report"]
    for got in gateway_reports:
        # GCJ-02 came back to WGS-84 exactly (the raw GCJ-02 offset here is ~0.005 deg)
        assert min(abs(got["lon"] - o["lon"]) + abs(got["lat"] - o["lat"]) for o in originals) < 1e-6
    assert sum(1 for e in events if e.get("channel") != "open311") == sum(len(m.events) for m in messages) - reports
    assert orjson.dumps(counts)
