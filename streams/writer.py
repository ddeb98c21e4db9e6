"""The store-writer process: Kafka -> one DuckDB transaction per batch -> commit offsets.

The only process that opens the DuckDB file; it also serves reads over Quack. A crash between
the transaction and the offset commit re-applies the batch, which leaves the store unchanged.
"""

from __future__ import annotations

import base64
import logging
import signal
import threading
from datetime import UTC, datetime
from types import FrameType

from kafka import KafkaConsumer
from kafka.structs import TopicPartition
from pydantic import ValidationError

from rules.model import DeadLetterRecord, Incident
from rules.pipeline import decode_enriched, source_label
from sinks.store import Batch, DeadLetter, Store
from streams.settings import Settings

logger = logging.getLogger(__name__)


def _poison(topic: str, partition: int, offset: int, raw: bytes, exc: Exception) -> DeadLetter:
    source = source_label(topic, partition, offset)
    logger.warning("store: unreadable record source=%s error=%s", source, exc)
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

    def run(self) -> None:
        s = self.settings
        uri = self.store.serve(s.store.quack_host, s.store.quack_port, s.store.token.get_secret_value())
        consumer = KafkaConsumer(
            s.kafka.incidents_topic,
            s.kafka.events_topic,
            s.kafka.deadletter_topic,
            group_id=f"{s.kafka.app_id}-store",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=int(s.kafka.session_timeout_s * 1000),
            heartbeat_interval_ms=1000,
            max_poll_records=s.store.batch_max_records,
            client_id="cityops-store",
            **s.kafka.client_options(),
        )
        logger.info(
            "store writer running path=%s quack=%s topics=%s",
            self.store.path,
            uri,
            [s.kafka.incidents_topic, s.kafka.events_topic, s.kafka.deadletter_topic],
        )
        try:
            while not self.stop_event.is_set():
                records = consumer.poll(timeout_ms=s.store.poll_timeout_ms, max_records=s.store.batch_max_records)
                if not records:
                    continue
                batch = collect(s, records)
                self.store.apply(batch)
                consumer.commit()
                logger.debug(
                    "store batch incidents=%d events=%d dead=%d",
                    len(batch.incidents),
                    len(batch.events),
                    len(batch.dead_letters),
                )
        finally:
            consumer.close(autocommit=False)
            self.store.close()
            logger.info("store writer stopped")

    def install_signal_handlers(self) -> None:
        def handler(signum: int, frame: FrameType | None) -> None:
            logger.info("store writer stopping signal=%d", signum)
            self.stop_event.set()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)
