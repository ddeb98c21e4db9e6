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
from kafka.errors import KafkaError
from kafka.structs import TopicPartition
from pydantic import ValidationError

from rules.lifecycle import Action
from rules.model import DeadLetterRecord, Incident
from rules.pipeline import dead_letter as make_dead_letter
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


def collect(
    settings: Settings, records: dict[TopicPartition, list[object]], poisoned: list[DeadLetter] | None = None
) -> Batch:
    """Turn polled Kafka records into a store batch (pure apart from logging).

    Unreadable records become dead letters in the batch, and are also appended to ``poisoned``
    (when given), so that the writer can publish them on the dead-letter topic.
    """
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
                if poisoned is not None:
                    poisoned.append(batch.dead_letters[-1])
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
            **s.kafka.consumer_options(),
        )
        # no idempotent producer: after a broker restart (or on Tansu) its InitProducerId fails for good
        producer = KafkaProducer(
            client_id="cityops-store", acks="all", linger_ms=5, enable_idempotence=False, **s.kafka.producer_options()
        )
        health = metrics.Health(stale_after_s=120.0)
        server = metrics.serve(s.metrics.host, s.metrics.store_port, health, process="store")
        logger.info("store writer running path=%s quack=%s topics=%s", self.store.path, uri, self.topics())
        last_prune = last_outbox = 0.0
        try:
            self.publish_updates(producer)  # whatever a previous run stored but did not publish
            while not self.stop_event.is_set():
                health.beat()
                records = consumer.poll(timeout_ms=s.store.poll_timeout_ms, max_records=s.store.batch_max_records)
                if records:
                    started = time.perf_counter()
                    poisoned: list[DeadLetter] = []
                    batch = collect(s, records, poisoned)
                    self.store.apply(batch)
                    self.publish_poison(producer, poisoned)
                    self.publish_updates(producer)
                    try:
                        consumer.commit()
                    except KafkaError as exc:  # a rebalance or a broker restart: the batch comes again, harmlessly
                        logger.warning("store: offset commit failed, the batch will be re-applied error=%s", exc)
                    metrics.observe_store_batch(batch, sum(map(len, records.values())), time.perf_counter() - started)
                elif time.monotonic() - last_outbox > 5:  # what a failed send left in the outbox
                    last_outbox = time.monotonic()
                    self.publish_updates(producer)
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

    def publish_poison(self, producer: KafkaProducer, letters: list[DeadLetter]) -> None:
        """Put the writer's own dead letters on the dead-letter topic too (after they are stored).

        Subscribers of the topic see every dead letter, whoever found it; reading them back is
        harmless (the store keeps one row per source). A crash before the commit publishes them again.
        """
        futures = []
        for d in letters:
            record = make_dead_letter(d.reason, d.kind, d.source, d.original)
            value = record.model_dump_json().encode()
            futures.append(producer.send(self.settings.kafka.deadletter_topic, key=d.source.encode(), value=value))
        if futures:
            producer.flush()
        for d, future in zip(letters, futures, strict=True):
            if future.failed():  # stored all the same; only the topic's copy is missing
                logger.error("store: dead letter not published source=%s error=%s", d.source, future.exception)

    def publish_updates(self, producer: KafkaProducer) -> int:
        """Publish the history outbox on the incident-updates topic (keyed by incident id), then mark it."""
        total = 0
        while True:
            pending = self.store.pending_updates()
            if not pending:
                return total
            futures = [
                producer.send(
                    self.settings.kafka.updates_topic, key=t.incident_id.encode(), value=t.model_dump_json().encode()
                )
                for t in pending
            ]
            producer.flush()
            sent = [t for t, future in zip(pending, futures, strict=True) if future.succeeded()]
            self.store.mark_published([t.update_id for t in sent])
            for t in sent:
                metrics.TRANSITIONS.labels(t.to_status, t.kind).inc()
            total += len(sent)
            if len(sent) < len(pending):  # e.g. the broker restarted: the rest stays in the outbox
                error = next(f.exception for f in futures if f.failed())
                logger.error(
                    "store: %d update(s) not published, retrying later error=%s", len(pending) - len(sent), error
                )
                return total

    def install_signal_handlers(self) -> None:
        def handler(signum: int, frame: FrameType | None) -> None:
            logger.info("store writer stopping signal=%d", signum)
            self.stop_event.set()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)
