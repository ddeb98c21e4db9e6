"""The alerts process (``cityops alerts``): incidents topic -> routes -> alert topics and webhooks.

One kafka-python consumer in group ``<app_id>-alerts`` reads ``<prefix>.incidents``; each snapshot
goes through ``sinks.alerts.AlertPublisher``; the records are produced (key = incident id, one
request in flight, so one incident's messages stay in order), flushed, then sent to webhooks, and
only then are the offsets committed. A crash before the commit re-sends the batch with the same
deterministic message ids. Unreadable incidents and undeliverable webhooks go to the dead-letter
topic, never silently away.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from types import FrameType
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError
from pydantic import ValidationError

from rules.model import DeadLetterRecord, Incident
from rules.pipeline import dead_letter as make_dead_letter
from rules.pipeline import source_label
from rules.silences import Silence, silenced_by
from sinks.alerts import AlertError, AlertPublisher, RouteTable, WebhookDeadLetter, WebhookSink
from sinks.alerts.publisher import ZoneLookup, coalesce
from sinks.alerts.zones import ZoneOutlines
from streams import metrics
from streams.errors import BrokerError
from streams.settings import Settings

logger = logging.getLogger(__name__)


def ensure_topics(settings: Settings, topics: list[str], *, timeout: float = 20.0) -> list[str]:
    """Create ``topics`` with the declared partitions (existing ones are left alone); returns those created."""
    kafka = settings.kafka
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while True:
        try:
            admin = KafkaAdminClient(client_id="cityops-alerts", request_timeout_ms=5000, **kafka.client_options())
            break
        except KafkaError as exc:
            last = exc
            if time.monotonic() > deadline:
                raise BrokerError(f"cannot reach the broker at {kafka.bootstrap}: {last}") from exc
            time.sleep(0.3)
    try:
        existing = set(admin.list_topics())
        wanted = [t for t in dict.fromkeys(topics) if t not in existing]
        for name in wanted:
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics([NewTopic(name, kafka.partitions, kafka.replication_factor)])
            logger.info("topic created name=%s partitions=%d", name, kafka.partitions)
        return wanted
    finally:
        admin.close()


def zone_lookup(settings: Settings) -> ZoneLookup | None:
    """Zone outlines from the configured pack, or None (CAP then draws a box around the point)."""
    if not settings.alerts.zone_outlines:
        return None
    from rules.errors import RulesError
    from rules.pack import load_pack

    try:
        pack = load_pack(settings.rules.pack)
    except (RulesError, OSError) as exc:
        logger.warning("alerts: no zone outlines, pack %s did not load: %s", settings.rules.pack, exc)
        return None
    return ZoneOutlines(pack.layers)


def dead_letter(source: str, kind: str, reason: str, original: bytes) -> DeadLetterRecord:
    """A dead-letter record for the dead-letter topic (the store writer keeps them)."""
    return make_dead_letter(reason, kind, source, original)


class AlertRunner:
    """Consume incidents, publish alerts, deliver webhooks, commit; until stopped."""

    def __init__(
        self,
        settings: Settings,
        *,
        sleep: Callable[[float], None] = time.sleep,
        zones: ZoneLookup | None = None,
    ) -> None:
        self.settings = settings
        alerts, kafka = settings.alerts, settings.kafka
        self.stop_event = threading.Event()
        self.table = RouteTable(alerts.routes, kafka.topic_prefix)
        self.publisher = AlertPublisher(
            self.table,
            alerts.format_options(),
            zones=zones if zones is not None else zone_lookup(settings),
            max_tracked=alerts.max_tracked_incidents,
        )
        self.deadletter_topic = alerts.deadletter_topic_name(kafka.topic_prefix)
        self.counters: Counter[str] = Counter()
        self.seconds: dict[str, float] = dict.fromkeys(("poll", "publish", "flush", "commit"), 0.0)
        self.webhooks = WebhookSink(alerts.webhooks, dead_letter=self._webhook_failed, sleep=sleep)
        self._producer: KafkaProducer | None = None
        self._futures: list[Any] = []
        self.silences: dict[str, Silence] = {}

    def follow_silences(self, consumer: KafkaConsumer) -> None:
        """Read new silences (every alerts process reads the whole compacted topic)."""
        for recs in consumer.poll(timeout_ms=0).values():
            for rec in recs:
                try:
                    item = Silence.model_validate_json(rec.value or b"")
                except (ValidationError, ValueError) as exc:
                    logger.warning("alerts: unreadable silence offset=%s error=%s", rec.offset, exc)
                    continue
                self.silences[item.silence_id] = item

    # -- dead letters ----------------------------------------------------------------------------

    def _send_dead(self, record: DeadLetterRecord, key: bytes | None) -> None:
        assert self._producer is not None, "dead letters are produced from inside run()"
        value = record.model_dump_json().encode()
        self._futures.append(self._producer.send(self.deadletter_topic, key=key, value=value))
        self.counters["dead_letters"] += 1
        metrics.DEAD_LETTERS.labels("alerts", record.kind).inc()

    def _webhook_failed(self, dead: WebhookDeadLetter) -> None:
        reason = f"webhook '{dead.endpoint}' ({dead.url}) gave up after {dead.attempts} attempt(s): {dead.reason}"
        self._send_dead(dead_letter(f"webhook:{dead.endpoint}#{dead.message_id}", "webhook", reason, dead.body), None)

    # -- one batch -------------------------------------------------------------------------------

    def handle(self, records: Mapping[Any, list[Any]]) -> None:
        """Publish one polled batch: produce, flush, webhooks, flush. Raises if a send failed."""
        assert self._producer is not None
        producer = self._producer
        to_webhooks = []
        readable: list[tuple[tuple[Any, Any], Incident]] = []
        for tp, recs in records.items():
            for rec in recs:
                raw: bytes = rec.value or b""
                self.counters["consumed"] += 1
                try:
                    readable.append(((tp, rec), Incident.model_validate_json(raw)))
                except (ValidationError, ValueError) as exc:
                    source = source_label(tp.topic, tp.partition, rec.offset)
                    logger.warning("alerts: unreadable incident source=%s error=%s", source, exc)
                    self.counters["invalid"] += 1
                    self._send_dead(dead_letter(source, "poison", f"alerts: unreadable incident: {exc}", raw), rec.key)
        if self.settings.alerts.coalesce:
            kept = coalesce(readable)
            self.counters["coalesced"] += len(readable) - len(kept)
            readable = kept
        for (tp, rec), incident in readable:
            raw = rec.value or b""
            if silenced_by(incident, list(self.silences.values())):
                # a silence suppresses the notification; the store still records and counts it
                self.counters["silenced"] += 1
                continue
            try:
                pub = self.publisher.publish(incident)
            except (AlertError, ValueError) as exc:  # one bad snapshot must not stop the others
                source = source_label(tp.topic, tp.partition, rec.offset)
                logger.warning("alerts: cannot render incident %s source=%s error=%s", incident.id, source, exc)
                self.counters["unrenderable"] += 1
                self._send_dead(dead_letter(source, "poison", f"alerts: cannot render: {exc}", raw), rec.key)
                continue
            if pub.kind is None or pub.payload is None:
                self.counters["unchanged"] += 1
                continue
            self.counters[f"kind:{pub.kind}"] += 1
            for out in pub.records:
                self._futures.append(producer.send(out.topic, key=out.key, value=out.value, headers=out.headers))
                self.counters[f"route:{out.route}"] += 1
            if self.webhooks.endpoints:
                to_webhooks.append((pub.payload, pub.routes))
        self._flush()
        for payload, routes in to_webhooks:
            self.webhooks.deliver(payload, routes)
        self._flush()

    def _flush(self) -> None:
        assert self._producer is not None
        started = time.perf_counter()
        self._producer.flush()
        self.seconds["flush"] += time.perf_counter() - started
        futures, self._futures = self._futures, []
        for future in futures:
            future.get(timeout=30)  # raises the send error: the batch is not committed
        self.counters["produced"] += len(futures)

    def stats(self) -> dict[str, Any]:
        """Counters so far, webhook counters included."""
        hooks = {name: vars(c) for name, c in self.webhooks.counters.items()}
        spent = {name: round(value, 3) for name, value in self.seconds.items()}
        return {
            **dict(sorted(self.counters.items())),
            "tracked": len(self.publisher),
            "webhooks": hooks,
            "seconds": spent,
        }

    # -- the loop --------------------------------------------------------------------------------

    def run(self) -> None:
        s = self.settings
        kafka, alerts = s.kafka, s.alerts
        ensure_topics(
            s, [kafka.incidents_topic, kafka.silences_topic, self.deadletter_topic, *self.table.enabled_topics()]
        )
        consumer = KafkaConsumer(
            kafka.incidents_topic,
            group_id=f"{kafka.app_id}-alerts",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=int(kafka.session_timeout_s * 1000),
            heartbeat_interval_ms=1000,
            max_poll_records=alerts.batch_max_records,
            client_id="cityops-alerts",
            **kafka.consumer_options(),
        )
        self._producer = KafkaProducer(
            client_id="cityops-alerts",
            acks="all",
            linger_ms=5,
            max_in_flight_requests_per_connection=1,
            enable_idempotence=False,  # its InitProducerId fails for good after a broker restart
            **{**kafka.producer_options(), "batch_size": alerts.producer_batch_bytes},
        )
        logger.info(
            "alerts running source=%s routes=%s webhooks=%s deadletter=%s",
            kafka.incidents_topic,
            {r.name: f"{self.table.topic(r)} ({r.format})" for r in self.table.routes if r.enabled},
            [f"{w.name} ({w.safe_url()})" for w in alerts.webhooks if w.enabled],
            self.deadletter_topic,
        )
        silences = KafkaConsumer(
            enable_auto_commit=False, client_id="cityops-alerts-silences", **kafka.client_options()
        )
        silences.assign([TopicPartition(kafka.silences_topic, p) for p in range(kafka.partitions)])
        silences.seek_to_beginning()
        last_stats = time.monotonic()
        health, server = observe_alerts(self)
        try:
            while not self.stop_event.is_set():
                health.beat()
                self.follow_silences(silences)
                polled = time.perf_counter()
                records = consumer.poll(timeout_ms=alerts.poll_timeout_ms, max_records=alerts.batch_max_records)
                self.seconds["poll"] += time.perf_counter() - polled
                if records:
                    started = time.perf_counter()
                    before = {
                        key.decode(errors="replace"): self.publisher.last(key.decode(errors="replace"))
                        for key in {rec.key for recs in records.values() for rec in recs if rec.key}
                    }
                    try:
                        self.handle(records)
                        self.seconds["publish"] += time.perf_counter() - started
                        committing = time.perf_counter()
                        consumer.commit()
                        self.seconds["commit"] += time.perf_counter() - committing
                    except KafkaError as exc:  # e.g. the broker restarted: publish the batch again
                        self.rewind(consumer, records, before, exc)
                        continue
                    metrics.BATCH_SECONDS.labels("alerts").observe(time.perf_counter() - started)
                if time.monotonic() - last_stats >= alerts.stats_interval_s:
                    logger.info("alerts stats %s", self.stats())
                    last_stats = time.monotonic()
        finally:
            if server is not None:
                server.stop()
            silences.close()
            consumer.close(autocommit=False)
            self._producer.close(timeout=10)
            logger.info("alerts stopped stats %s", self.stats())

    def rewind(
        self,
        consumer: KafkaConsumer,
        records: Mapping[Any, list[Any]],
        before: Mapping[str, Any],
        exc: Exception,
    ) -> None:
        """A batch failed to publish or commit: forget it and seek back, so it is published again.

        ``before`` is what the publisher remembered of the batch's incidents (keyed by id), so the
        retry is not judged "unchanged". Re-publishing is harmless: alert message ids are
        deterministic. The pause keeps a broker that is down from turning this into a busy loop.
        """
        self._futures = []
        for incident_id, state in before.items():
            self.publisher.restore(incident_id, state)
        logger.error("alerts: batch not published, retrying error=%s", exc)
        for tp, recs in records.items():
            if recs:
                with contextlib.suppress(KafkaError, AssertionError):  # a partition revoked meanwhile
                    consumer.seek(tp, recs[0].offset)
        self.counters["retried_batches"] += 1
        self.stop_event.wait(1.0)

    def install_signal_handlers(self) -> None:
        def handler(signum: int, frame: FrameType | None) -> None:
            logger.info("alerts stopping signal=%d", signum)
            self.stop_event.set()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)


def observe_alerts(runner: AlertRunner) -> tuple[metrics.Health, metrics.MetricsServer | None]:
    """Serve the alerts process's metrics (``CITYOPS_METRICS__ALERTS_PORT``) from its plain counters."""
    s = runner.settings
    # webhook retries back off for up to max_attempts x backoff_max_s inside one batch
    longest = max((w.max_attempts * (w.backoff_max_s + w.timeout_s) for w in s.alerts.webhooks), default=0.0)
    health = metrics.Health(stale_after_s=max(120.0, longest * 2))
    if s.metrics.alerts_port == 0:
        return health, None
    from prometheus_client import REGISTRY

    REGISTRY.register(
        metrics.StatsCollector(
            runner.stats,
            {
                "route:": ("cityops_alerts_published", "Alert records produced, by route.", "route"),
                "kind:": ("cityops_alerts_by_kind", "Alerts published, by alert kind (opened, updated, ...).", "kind"),
                "webhooks.": (
                    "cityops_webhook_deliveries",
                    "Webhook deliveries by endpoint and outcome (delivered, retried, failed).",
                    ("endpoint", "outcome"),
                ),
            },
            totals={
                "consumed": ("cityops_alerts_consumed", "Incident snapshots read by the alerts process."),
                "produced": ("cityops_alerts_produced", "Kafka records produced (alerts and dead letters)."),
                "silenced": ("cityops_alerts_silenced", "Snapshots suppressed by a silence."),
                "unchanged": ("cityops_alerts_unchanged", "Snapshots that changed nothing worth an alert."),
            },
            gauges={"tracked": ("cityops_alerts_tracked_incidents", "Incidents whose last alert is remembered.")},
        )
    )
    return health, metrics.serve(s.metrics.host, s.metrics.alerts_port, health, process="alerts")
