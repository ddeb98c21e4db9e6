"""Prometheus metrics of every cityops process, defined here and only here, and the server for them.

Each process serves ``/metrics`` (Prometheus text format), ``/healthz`` (liveness: its main loop
beat recently) and ``/readyz`` (it started and is beating) on its own port; see
``MetricsSettings`` (``CITYOPS_METRICS__WORKER_PORT`` and so on; 0 = off). ``rules/`` and
``sinks/`` know nothing of Prometheus: the worker counts around its calls into the pure pipeline,
and the alerts process and the gateways expose the plain counters their objects already keep
through collectors that read them at scrape time. docs/operations.md lists every metric.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import orjson
from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from wsgiref.types import StartResponse, WSGIEnvironment

    from rules.pipeline import Detected, Ingested
    from sinks.store import Batch

__all__ = [
    "BATCH_SECONDS",
    "DEAD_LETTERS",
    "ENVELOPES_READ",
    "ENVELOPES_REDERIVED",
    "EVENTS_IN",
    "EVENTS_OUT",
    "EVENT_TO_INCIDENT",
    "MESSAGES_IN",
    "RULE_HITS",
    "SEND_RETRIES",
    "STORE_RECORDS",
    "TRANSITIONS",
    "Health",
    "MetricsServer",
    "StatsCollector",
    "observe_detect",
    "observe_ingest",
    "observe_store_batch",
    "serve",
]

logger = logging.getLogger(__name__)

#: Event time -> incident emitted: from milliseconds (live) to minutes (catching up after an outage).
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0)
#: One batch: a Kafka message of the worker, one poll of the store writer or the alerts process.
BATCH_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

MESSAGES_IN = Counter("cityops_messages_in", "Kafka messages taken in, by stage.", ["stage"])
EVENTS_IN = Counter("cityops_events_in", "Events taken in, by stage (ingest, detect, store, gateway_*).", ["stage"])
EVENTS_OUT = Counter("cityops_events_out", "Events passed on: enriched and routed (ingest), stored (store).", ["stage"])
DEAD_LETTERS = Counter("cityops_dead_letters", "Records dead-lettered, by stage and kind.", ["stage", "kind"])
RULE_HITS = Counter(
    "cityops_rule_hits", "Incident snapshots emitted by the worker, by rule id and rule status.", ["rule_id", "status"]
)
TRANSITIONS = Counter(
    "cityops_incident_transitions",
    "Incident history entries published by the store writer, by new status and kind.",
    ["to_status", "kind"],
)
SEND_ERRORS = Counter(
    "cityops_send_errors", "Records the worker's producer failed to deliver after its retries, by topic.", ["topic"]
)
SEND_RETRIES = Counter(
    "cityops_send_retries",
    "Records the worker sent again after a failed send, by topic and outcome (delivered, gave_up).",
    ["topic", "outcome"],
)
OUTBOX_RESENT = Counter(
    "cityops_outbox_resent",
    "Incident snapshots and dead letters detect sent again after an assignment because the rule-state "
    "changelog held them as not confirmed (worker.state_changelog; streams/outbox.py).",
)
RAW_WITHHELD = Counter(
    "cityops_raw_unacknowledged",
    "Raw messages ingest never acknowledged because a send made for them was not delivered: their "
    "offsets stay uncommitted, so the partition's next owner reads them again.",
)
ENVELOPES_REDERIVED = Counter(
    "cityops_envelopes_rederived",
    "Events envelopes detect found lost (a broken link) and derived again from the raw topic.",
)
ENVELOPES_READ = Counter(
    "cityops_envelopes_read",
    "Events envelopes detect read, by how it got their events: handoff (this worker's ingest sent it "
    "and still held its events) or parsed.",
    ["how"],
)
STORE_RECORDS = Counter("cityops_store_records", "Records applied by the store writer, by table.", ["table"])
EVENT_TO_INCIDENT = Histogram(
    "cityops_event_to_incident_seconds",
    "From the event time of an incident's newest evidence to the worker emitting the incident.",
    buckets=LATENCY_BUCKETS,
)
BATCH_SECONDS = Histogram(
    "cityops_batch_seconds", "Processing time of one batch, by stage.", ["stage"], buckets=BATCH_BUCKETS
)


# -- around the pure pipeline (worker) and the store writer -------------------------------------------


def observe_ingest(out: Ingested, seconds: float) -> None:
    """One raw message through ``ingest``: events routed on, dead letters by kind."""
    MESSAGES_IN.labels("ingest").inc()
    routed = out.count
    EVENTS_IN.labels("ingest").inc(routed + len(out.dead))
    EVENTS_OUT.labels("ingest").inc(routed)
    for dead in out.dead:
        DEAD_LETTERS.labels("ingest", dead.kind).inc()
    BATCH_SECONDS.labels("ingest").observe(seconds)


def observe_detect(
    out: Detected, seconds: float, events: int = 0, *, now: float | None = None, messages: int = 1
) -> None:
    """Enriched messages through ``detect`` (one, or a run of ``messages``): rule hits, latency per
    incident, dead letters by kind."""
    MESSAGES_IN.labels("detect").inc(messages)
    if out.read is not None:
        ENVELOPES_READ.labels(out.read).inc(messages)
    if events:
        EVENTS_IN.labels("detect").inc(events)
    wall = time.time() if now is None else now
    hits: dict[tuple[str, str], int] = {}
    observe = EVENT_TO_INCIDENT.observe
    for incident in out.incidents:
        key = (incident.rule_id, incident.status)
        hits[key] = hits.get(key, 0) + 1
        observe(max(0.0, wall - incident.last_event_at.timestamp()))
    for (rule_id, status), n in hits.items():  # one labelled child per rule and status, not per incident
        RULE_HITS.labels(rule_id, status).inc(n)
    for dead in out.dead:
        DEAD_LETTERS.labels("detect", dead.kind).inc()
    BATCH_SECONDS.labels("detect").observe(seconds)


def observe_store_batch(batch: Batch, messages: int, seconds: float) -> None:
    """One store transaction: records per table and the time it took (collect, apply, publish)."""
    MESSAGES_IN.labels("store").inc(messages)
    EVENTS_IN.labels("store").inc(len(batch.events))
    EVENTS_OUT.labels("store").inc(len(batch.events))
    for table, rows in (
        ("events", batch.events),
        ("incidents", batch.incidents),
        ("actions", batch.actions),
        ("silences", batch.silences),
        ("dead_letters", batch.dead_letters),
    ):
        if rows:
            STORE_RECORDS.labels(table).inc(len(rows))
    BATCH_SECONDS.labels("store").observe(seconds)


# -- plain counters kept by pure objects, read at scrape time ----------------------------------------


class StatsCollector(Collector):
    """Turns a ``stats()`` callable's plain numbers into metrics at scrape time.

    ``families`` maps a key prefix of the stats dict to (metric name, help, label name); a key
    ``"route:flood"`` under prefix ``"route:"`` becomes ``<name>{<label>="flood"}``; with a tuple of
    labels the rest of the key is split on its last dots (``"hook.a.delivered"`` under ``"hook."``
    with labels ``("endpoint", "outcome")`` gives ``endpoint="a", outcome="delivered"``). ``totals``
    maps single keys to unlabelled counters, ``gauges`` single keys that are levels. Nested dicts
    are flattened with ``.`` (``{"outbox": {"sent": 3}}`` has the key ``"outbox.sent"``).
    """

    def __init__(
        self,
        stats: Callable[[], Mapping[str, Any]],
        families: Mapping[str, tuple[str, str, str | tuple[str, ...]]],
        *,
        totals: Mapping[str, tuple[str, str]] | None = None,
        gauges: Mapping[str, tuple[str, str]] | None = None,
        const_labels: Mapping[str, str] | None = None,
    ) -> None:
        self.stats = stats
        self.families = families
        self.totals = totals or {}
        self.gauges = gauges or {}
        self.const = dict(const_labels or {})

    def describe(self) -> Iterable[Metric]:
        return []  # names are only known at scrape time; they never clash with the registered metrics

    def collect(self) -> Iterator[Metric]:
        try:
            flat = dict(_flatten(self.stats()))
        except Exception:  # a scrape must never take the process down
            logger.exception("metrics: stats() failed")
            return
        names = list(self.const)
        for prefix, (name, doc, label) in self.families.items():
            labels = (label,) if isinstance(label, str) else label
            family = CounterMetricFamily(name, doc, labels=[*names, *labels])
            for key, value in flat.items():
                if key.startswith(prefix) and isinstance(value, int | float) and not isinstance(value, bool):
                    parts = key[len(prefix) :].rsplit(".", len(labels) - 1)
                    if len(parts) == len(labels):
                        family.add_metric([*self.const.values(), *parts], float(value))
            yield family
        for key, (name, doc) in self.totals.items():
            total = CounterMetricFamily(name, doc, labels=names)
            value = flat.get(key)
            if isinstance(value, int | float):
                total.add_metric(list(self.const.values()), float(value))
            yield total
        for key, (name, doc) in self.gauges.items():
            gauge = GaugeMetricFamily(name, doc, labels=names)
            value = flat.get(key)
            if isinstance(value, int | float):
                gauge.add_metric(list(self.const.values()), float(value))
            yield gauge


def _flatten(stats: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in stats.items():
        if isinstance(value, Mapping):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


# -- health and the HTTP server --------------------------------------------------------------------


class Health:
    """Liveness and readiness of one process: its main loop calls :meth:`beat`."""

    def __init__(self, stale_after_s: float = 60.0, *, ready_check: Callable[[], bool] | None = None) -> None:
        self.stale_after_s = stale_after_s
        self.ready_check = ready_check
        self.started = time.monotonic()
        self.last_beat: float | None = None

    def beat(self) -> None:
        self.last_beat = time.monotonic()

    def state(self) -> dict[str, Any]:
        now = time.monotonic()
        age = None if self.last_beat is None else now - self.last_beat
        live = (now - self.started < self.stale_after_s) if age is None else age < self.stale_after_s
        ready = age is not None and age < self.stale_after_s
        if ready and self.ready_check is not None:
            ready = bool(self.ready_check())
        return {"live": live, "ready": ready, "last_beat_s": None if age is None else round(age, 3)}


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes every few seconds would flood the log."""


class MetricsServer:
    """``/metrics``, ``/healthz`` and ``/readyz`` from a daemon thread."""

    def __init__(self, host: str, port: int, health: Health) -> None:
        self.health = health
        self.httpd = make_server(host, port, self._app, server_class=_Server, handler_class=_QuietHandler)
        self.port = int(self.httpd.server_port)
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="metrics", daemon=True)

    def start(self) -> MetricsServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _app(self, environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path == "/metrics":
            body = generate_latest(REGISTRY)
            start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST)])
            return [body]
        if path in ("/healthz", "/readyz"):
            state = self.health.state()
            ok = state["live"] if path == "/healthz" else state["ready"]
            start_response("200 OK" if ok else "503 Service Unavailable", [("Content-Type", "application/json")])
            return [orjson.dumps(state)]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"try /metrics, /healthz or /readyz\n"]


def serve(host: str, port: int, health: Health | None = None, *, process: str) -> MetricsServer | None:
    """Start the metrics server on ``host:port`` (None when ``port`` is 0: metrics off)."""
    if port == 0:
        return None
    server = MetricsServer(host, port, health or Health()).start()
    logger.info("metrics server listening process=%s url=http://%s:%d/metrics", process, host, server.port)
    return server
