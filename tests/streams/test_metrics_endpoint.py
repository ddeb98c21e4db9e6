"""/metrics of a real worker, store writer and alerts process after a small run; JSON logs from each.

Runs on the session broker: the scenario (with its malformed messages) goes in, incidents come
out, and every process serves the documented metric names with values that fit what went in.
"""

from __future__ import annotations

import http.server
import json
import threading
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from stack import Stack, make_settings

from sinks.alerts import WebhookEndpoint
from streams.broker import DevBroker, free_port
from streams.simulate import build_scenario, produce

pytestmark = pytest.mark.integration

START = datetime.fromisoformat("2026-07-01T23:00:00+08:00")

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int, path: str = "/metrics") -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def samples(port: int) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(scrape(port)[1]):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def total(found: Samples, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    return sum(v for (n, ls), v in found.items() if n == name and set(labels.items()) <= set(ls))


class _Hook(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/hook"
    finally:
        server.shutdown()
        server.server_close()


def test_every_process_serves_its_metrics_health_and_json_logs(broker: DevBroker, tmp_path: Path, webhook: str) -> None:
    s = make_settings(broker, tmp_path, "metrics")
    s.log_json = True
    ports = {"worker": free_port(), "store": free_port(), "alerts": free_port()}
    s.metrics.worker_port, s.metrics.store_port, s.metrics.alerts_port = (
        ports["worker"],
        ports["store"],
        ports["alerts"],
    )
    s.alerts.webhooks = [WebhookEndpoint(name="ops", url=webhook)]
    messages = build_scenario(s, START, 90.0)
    bad = sum(1 for m in messages if m.bad)
    assert bad >= 1, "the scenario carries malformed messages"
    stack = Stack(s, tmp_path / "logs")
    try:
        for name in ("store", "worker", "alerts"):
            stack.start(name)
        stack.wait_for("every metrics server", lambda: all(scrape(p, "/healthz")[0] == 200 for p in ports.values()))
        sent = produce(s, messages, speed=0)
        stack.wait_for("incidents in the store", lambda: len(stack.stored_incidents()) > 0, timeout=120)
        stack.wait_for(
            "the worker to count every raw message",
            lambda: total(samples(ports["worker"]), "cityops_messages_in_total", stage="ingest") >= len(messages),
        )
        stack.wait_for(
            "a webhook delivery",
            lambda: total(samples(ports["alerts"]), "cityops_webhook_deliveries_total", outcome="delivered") > 0,
        )
        stack.wait_for(  # the store may still be catching up when the worker has counted everything
            "the store to count every event",
            lambda: total(samples(ports["store"]), "cityops_store_records_total", table="events") >= sent,
        )
        stack.wait_for(
            "the store to count transitions",
            lambda: total(samples(ports["store"]), "cityops_incident_transitions_total", to_status="open") > 0,
        )
        worker, store, alerts = (samples(ports[n]) for n in ("worker", "store", "alerts"))
        stored_rules = {r["rule_id"] for r in stack.stored_incidents()}
        ready = {name: scrape(port, "/readyz") for name, port in ports.items()}
        not_ready = {name: body for name, (code, body) in ready.items() if code != 200}
        assert not not_ready, (not_ready, {name: stack.log_tail(name) for name in not_ready})
        for port in ports.values():
            assert json.loads(scrape(port, "/healthz")[1])["live"] is True
    finally:
        stack.close()

    # worker: events in and out, dead letters by kind, rule hits, latency and batch histograms
    assert total(worker, "cityops_events_out_total", stage="ingest") == sent
    assert total(worker, "cityops_dead_letters_total", stage="ingest") >= bad
    hits = {dict(ls)["rule_id"] for (n, ls), v in worker.items() if n == "cityops_rule_hits_total" and v > 0}
    assert stored_rules and stored_rules <= hits
    assert total(worker, "cityops_event_to_incident_seconds_count") == total(worker, "cityops_rule_hits_total")
    assert total(worker, "cityops_batch_seconds_count", stage="detect") > 0
    assert total(worker, "cityops_batch_seconds_sum", stage="ingest") > 0
    # one worker owns every partition: detect reads back what its own ingest sent, without parsing
    assert total(worker, "cityops_envelopes_read_total", how="handoff") > 0
    # store: what it applied and the transitions it published
    assert total(store, "cityops_store_records_total", table="events") == sent
    assert total(store, "cityops_store_records_total", table="dead_letters") >= bad
    assert total(store, "cityops_incident_transitions_total", to_status="open") >= 1
    assert total(store, "cityops_batch_seconds_count", stage="store") >= 1
    # alerts: consumed snapshots, published alerts per route, webhook deliveries
    assert total(alerts, "cityops_alerts_consumed_total") >= 1
    assert total(alerts, "cityops_alerts_published_total") >= 1
    assert total(alerts, "cityops_webhook_deliveries_total", endpoint="ops", outcome="delivered") >= 1
    assert total(alerts, "cityops_batch_seconds_count", stage="alerts") >= 1

    # --log-json: every line every process wrote is one JSON object
    for name in ("worker", "store", "alerts"):
        lines = [line for line in (tmp_path / "logs" / f"{name}.log").read_text().splitlines() if line.strip()]
        assert lines, name
        for line in lines:
            doc = json.loads(line)
            assert {"ts", "level", "logger", "msg"} <= set(doc), (name, line)
