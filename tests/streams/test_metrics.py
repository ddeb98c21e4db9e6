"""The metrics module: plain counters as Prometheus metrics, health, the server and the gateways' metrics."""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlencode

import pytest
from factories import T0, incident
from gateways.gateway_client import request, settings_for_tests
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from rules.pack import load_pack
from rules.pipeline import Detected
from streams import metrics
from streams.broker import free_port
from streams.gateways.http import BackgroundServer, HttpGateway
from streams.gateways.observe import http_metrics, mqtt_metrics
from streams.gateways.outbox import MemoryOutbox


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def values(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_stats_collector_turns_plain_counters_into_labelled_metrics() -> None:
    stats: dict[str, Any] = {
        "consumed": 7,
        "route:flood": 3,
        "route:all": 5,
        "tracked": 2,
        "webhooks": {"ops.eu": {"delivered": 4, "retried": 1, "failed": 0}},
    }
    collector = metrics.StatsCollector(
        lambda: stats,
        {"route:": ("t_published", "p", "route"), "webhooks.": ("t_hooks", "h", ("endpoint", "outcome"))},
        totals={"consumed": ("t_consumed", "c")},
        gauges={"tracked": ("t_tracked", "t")},
        const_labels={"process": "alerts"},
    )
    found = {(s.name, frozenset(s.labels.items())): s.value for m in collector.collect() for s in m.samples}
    assert found[("t_published_total", frozenset({("process", "alerts"), ("route", "flood")}))] == 3
    assert (
        found[("t_hooks_total", frozenset({("process", "alerts"), ("endpoint", "ops.eu"), ("outcome", "retried")}))]
        == 1
    )
    assert found[("t_consumed_total", frozenset({("process", "alerts")}))] == 7
    assert found[("t_tracked", frozenset({("process", "alerts")}))] == 2


def test_a_failing_stats_callable_does_not_break_the_scrape() -> None:
    def broken() -> dict[str, Any]:
        raise RuntimeError("boom")

    assert list(metrics.StatsCollector(broken, {"x": ("t_x", "x", "k")}).collect()) == []


def test_health_is_live_while_beating_and_ready_only_after_the_first_beat() -> None:
    health = metrics.Health(stale_after_s=0.2)
    assert health.state()["live"] and not health.state()["ready"]
    health.beat()
    assert health.state()["ready"]
    time.sleep(0.3)
    assert not health.state()["live"] and not health.state()["ready"]
    gated = metrics.Health(ready_check=lambda: False)
    gated.beat()
    assert gated.state()["live"] and not gated.state()["ready"]


def test_the_server_answers_metrics_healthz_readyz_and_404() -> None:
    assert metrics.serve("127.0.0.1", 0, process="test") is None, "port 0 means off"
    health = metrics.Health(stale_after_s=60)
    server = metrics.serve("127.0.0.1", free_port(), health, process="test")
    assert server is not None
    try:
        metrics.TRANSITIONS.labels("acknowledged", "transition").inc()
        status, text = get(server.port, "/metrics")
        assert status == 200 and "cityops_incident_transitions_total" in text
        assert get(server.port, "/readyz")[0] == 503
        health.beat()
        assert get(server.port, "/readyz")[0] == 200 and get(server.port, "/healthz")[0] == 200
        assert get(server.port, "/")[0] == 404
    finally:
        server.stop()


@pytest.fixture
def clean_registry() -> Any:
    before = set(REGISTRY._collector_to_names)
    yield
    for collector in set(REGISTRY._collector_to_names) - before:
        REGISTRY.unregister(collector)


def test_the_http_gateway_serves_request_event_and_dead_letter_metrics(clean_registry: None) -> None:
    s = settings_for_tests()
    s.metrics.gateway_http_port = free_port()
    gateway = HttpGateway(s, MemoryOutbox(), load_pack(s.rules.pack))
    app = gateway.app()
    metrics_server = http_metrics(s, gateway, app)
    assert metrics_server is not None
    before = values(get(metrics_server.port, "/metrics")[1])
    server = BackgroundServer(app).start()
    try:
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        good = urlencode({"service_code": "waterlogging", "lat": "30.59", "long": "114.27"}).encode()
        assert request(server.url, "POST", "/requests.json", good, form).status == 201
        assert request(server.url, "POST", "/requests.json", b"lat=x", form).status == 400
        deadline = time.monotonic() + 5
        while get(metrics_server.port, "/readyz")[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert get(metrics_server.port, "/readyz")[0] == 200, "the aiohttp loop beats the health"
        after = values(get(metrics_server.port, "/metrics")[1])
    finally:
        server.stop()
        metrics_server.stop()

    def delta(name: str, **labels: str) -> float:
        key = (name, frozenset(labels.items()))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta("cityops_events_in_total", stage="gateway_http") == 1
    assert delta("cityops_gateway_requests_total", gateway="http", outcome="accepted_requests") == 1
    assert after[("cityops_gateway_outbox_total", frozenset({("gateway", "http"), ("counter", "sent")}))] >= 1
    dead = sum(
        v for (n, ls), v in after.items() if n == "cityops_dead_letters_total" and ("stage", "gateway_http") in ls
    )
    assert (
        dead
        - sum(
            v for (n, ls), v in before.items() if n == "cityops_dead_letters_total" and ("stage", "gateway_http") in ls
        )
        == 1
    )


class FakeBridge:
    def __init__(self) -> None:
        self.connected = threading.Event()
        self.stopping = threading.Event()

    def stats(self) -> dict[str, Any]:
        return {"messages": 5, "acked": 4, "retries": 1, "unacked_batches": 1, "outbox": {"sent": 4, "in_flight": 1}}


def test_the_mqtt_bridge_is_ready_only_while_connected(clean_registry: None) -> None:
    s = settings_for_tests()
    s.metrics.gateway_mqtt_port = free_port()
    bridge = FakeBridge()
    server = mqtt_metrics(s, bridge)  # type: ignore[arg-type]
    assert server is not None
    try:
        assert get(server.port, "/healthz")[0] == 200 and get(server.port, "/readyz")[0] == 503
        bridge.connected.set()
        assert get(server.port, "/readyz")[0] == 200
        found = values(get(server.port, "/metrics")[1])
        assert found[("cityops_gateway_mqtt_messages_total", frozenset({("gateway", "mqtt")}))] == 5
        assert found[("cityops_gateway_in_flight", frozenset({("gateway", "mqtt")}))] == 1
    finally:
        bridge.stopping.set()
        server.stop()


def test_detect_counts_rule_hits_per_rule_and_status_and_one_latency_per_incident() -> None:
    def hits(rule: str, status: str) -> float:
        return REGISTRY.get_sample_value("cityops_rule_hits_total", {"rule_id": rule, "status": status}) or 0.0

    def latencies() -> float:
        return REGISTRY.get_sample_value("cityops_event_to_incident_seconds_count") or 0.0

    before = {k: hits(*k) for k in [("m.a", "open"), ("m.a", "resolved"), ("m.b", "open")]}
    seen = latencies()
    out = Detected(
        incidents=[
            incident(1, 1, rule="m.a"),
            incident(2, 3, rule="m.a"),
            incident(3, 2, rule="m.a", status="resolved"),
            incident(4, 1, rule="m.b"),
        ]
    )
    metrics.observe_detect(out, 0.01, now=T0.timestamp() + 60)
    assert hits("m.a", "open") - before[("m.a", "open")] == 2
    assert hits("m.a", "resolved") - before[("m.a", "resolved")] == 1
    assert hits("m.b", "open") - before[("m.b", "open")] == 1
    assert latencies() - seen == 4


def test_a_detect_run_counts_each_of_its_messages() -> None:
    def sample(name: str, labels: dict[str, str]) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    messages = sample("cityops_messages_in_total", {"stage": "detect"})
    handed = sample("cityops_envelopes_read_total", {"how": "handoff"})
    metrics.observe_detect(Detected(read="handoff"), 0.01, messages=3)
    assert sample("cityops_messages_in_total", {"stage": "detect"}) - messages == 3
    assert sample("cityops_envelopes_read_total", {"how": "handoff"}) - handed == 3
