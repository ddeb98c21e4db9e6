"""The store-writer process: Kafka -> one DuckDB transaction per batch -> commit offsets.

The only process that opens the DuckDB file; it also serves reads over Quack. A crash between
the transaction and the offset commit re-applies the batch, which leaves the store unchanged.
"""

from __future__ import annotations

import base64
import logging
import signal
import threading
import time
from datetime import UTC, datetime
from types import FrameType

from kafka import KafkaConsumer, KafkaProducer
from kafka.structs import TopicPartition
from pydantic import ValidationError

from rules.lifecycle import Action
from rules.model import DeadLetterRecord, Incident
from rules.pipeline import decode_enriched, source_label
from rules.silences import Silence
from sinks.store import Batch, DeadLetter, Store
from streams import metrics
from streams.settings import Settings

logger = logging.getLogger(__name__)


def _poison(topic: str, partition: int, offset: int, raw: bytes, exc: Exception) -> DeadLetter:
    source = source_label(topic, partition, offset)
    logger.warning("store: unreadable record source=%s error=%s", source, exc)
    metrics.DEAD_LETTERS.labels("store", "poison").inc()
    return DeadLetter(
        source=source,
        kind="poison",
        reason=f"store writer could not read record: {exc}",
        original=raw,
        failed_at=datetime.now(UTC),
    )


def collect(settings: Settings, records: dict[TopicPartition, list[object]]) -> Batch:
    """Turn polled Kafka records into a store batch (pure apart from logging)."""
    kafka = settings.kafka
    batch = Batch()
    for tp, recs in records.items():
        for rec in recs:
            raw: bytes = getattr(rec, "value", b"") or b""
            offset: int = getattr(rec, "offset", -1)
            try:
                if tp.topic == kafka.incidents_topic:
                    batch.incidents.append(Incident.model_validate_json(raw))
                elif tp.topic == kafka.events_topic:
                    batch.events.extend(decode_enriched(raw))
                elif tp.topic == kafka.actions_topic:
                    batch.actions.append(Action.model_validate_json(raw))
                elif tp.topic == kafka.silences_topic:
                    batch.silences.append(Silence.model_validate_json(raw))
                elif tp.topic == kafka.deadletter_topic:
                    d = DeadLetterRecord.model_validate_json(raw)
                    batch.dead_letters.append(
                        DeadLetter(d.source, d.kind, d.reason, base64.b64decode(d.original_b64), d.failed_at)
                    )
            except (ValidationError, ValueError) as exc:
                batch.dead_letters.append(_poison(tp.topic, tp.partition, offset, raw, exc))
    return batch


class Writer:
    """Consume, apply, commit; until stopped."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stop_event = threading.Event()
        self.store = Store(settings.store.path)

    def topics(self) -> list[str]:
        k = self.settings.kafka
        return [k.incidents_topic, k.events_topic, k.deadletter_topic, k.actions_topic, k.silences_topic]

    def run(self) -> None:
        s = self.settings
        uri = self.store.serve(s.store.quack_host, s.store.quack_port, s.store.token.get_secret_value())
        consumer = KafkaConsumer(
            *self.topics(),
            group_id=f"{s.kafka.app_id}-store",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=int(s.kafka.session_timeout_s * 1000),
            heartbeat_interval_ms=1000,
            max_poll_records=s.store.batch_max_records,
            client_id="cityops-store",
            **s.kafka.client_options(),
        )
        producer = KafkaProducer(client_id="cityops-store", acks="all", linger_ms=5, **s.kafka.producer_options())
        health = metrics.Health(stale_after_s=120.0)
        server = metrics.serve(s.metrics.host, s.metrics.store_port, health, process="store")
        logger.info("store writer running path=%s quack=%s topics=%s", self.store.path, uri, self.topics())
        last_prune = 0.0
        try:
            self.publish_updates(producer)  # whatever a previous run stored but did not publish
            while not self.stop_event.is_set():
                health.beat()
                records = consumer.poll(timeout_ms=s.store.poll_timeout_ms, max_records=s.store.batch_max_records)
                if records:
                    started = time.perf_counter()
                    batch = collect(s, records)
                    self.store.apply(batch)
                    self.publish_updates(producer)
                    consumer.commit()
                    metrics.observe_store_batch(batch, sum(map(len, records.values())), time.perf_counter() - started)
                if time.monotonic() - last_prune > 600:
                    last_prune = time.monotonic()
                    self.store.prune_events(s.store.event_retention_days)
        finally:
            if server is not None:
                server.stop()
            producer.close(timeout=5)
            consumer.close(autocommit=False)
            self.store.close()
            logger.info("store writer stopped")

    def publish_updates(self, producer: KafkaProducer) -> int:
        """Publish the history outbox on the incident-updates topic (keyed by incident id), then mark it."""
        total = 0
        while True:
            pending = self.store.pending_updates()
            if not pending:
                return total
            for t in pending:
                producer.send(
                    self.settings.kafka.updates_topic, key=t.incident_id.encode(), value=t.model_dump_json().encode()
                )
            producer.flush()
            self.store.mark_published([t.update_id for t in pending])
            for t in pending:
                metrics.TRANSITIONS.labels(t.to_status, t.kind).inc()
            total += len(pending)

    def install_signal_handlers(self) -> None:
        def handler(signum: int, frame: FrameType | None) -> None:
            logger.info("store writer stopping signal=%d", signum)
            self.stop_event.set()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)
