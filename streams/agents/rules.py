"""Hot swap of rule packs: every worker follows the compacted rules topic and swaps atomically.

Each worker reads the whole topic (no consumer group: every worker needs every pack). A bundle
for the pack this worker runs, with a new digest, is validated with the same loader as files;
a valid one replaces the engine between two messages (the event-time watermark carries over),
an invalid one is refused, dead-lettered with the reason, and the last good pack stays.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import ValidationError

from rules.bundle import PackBundle, unpack
from rules.engine import Engine
from rules.errors import PackError
from rules.pipeline import dead_letter, source_label
from streams import metrics
from streams.security import aiokafka_options

if TYPE_CHECKING:
    from streams.app import Runtime

logger = logging.getLogger(__name__)


def apply_bundle(rt: Runtime, raw: bytes, source: str) -> str:
    """Swap to the bundle when it is for this worker's pack and new; returns what happened."""
    current = rt.pipeline.engine.pack
    try:
        bundle = PackBundle.model_validate_json(raw)
    except ValidationError as exc:
        return _refuse(rt, f"not a rule-pack bundle: {exc.errors()[0]['msg']}", source, raw)
    if bundle.pack != current.spec.pack:
        return "other-pack"
    if bundle.digest == rt.pack_digest:
        return "unchanged"
    try:
        loaded = unpack(bundle)
        engine = Engine(loaded)
    except (PackError, ValueError, OSError) as exc:
        detail = "; ".join(exc.problems) if isinstance(exc, PackError) else str(exc)
        return _refuse(rt, f"invalid pack {bundle.pack}@{bundle.version}: {detail}", source, raw)
    engine.watermark_ms = rt.pipeline.engine.watermark_ms
    rt.pipeline.engine = engine
    rt.pack_digest = bundle.digest
    logger.warning(
        "rule pack swapped pack=%s version=%s digest=%s rules=%d published_by=%s",
        bundle.pack,
        bundle.version,
        bundle.digest,
        len(loaded.spec.rules),
        bundle.published_by or "-",
    )
    return "swapped"


def _refuse(rt: Runtime, reason: str, source: str, raw: bytes) -> str:
    logger.error(
        "rule pack refused, keeping pack=%s version=%s: %s",
        rt.pipeline.engine.pack.spec.pack,
        rt.pipeline.engine.pack.version,
        reason,
    )
    rt.refused.append(dead_letter(reason, "invalid_pack", source, raw))
    return "refused"


def attach(rt: Runtime) -> None:
    kafka = rt.settings.kafka

    @rt.app.task  # type: ignore[untyped-decorator]
    async def follow_rules() -> None:
        consumer = AIOKafkaConsumer(
            **aiokafka_options(kafka),
            enable_auto_commit=False,
            group_id=None,
            client_id=f"{kafka.app_id}-rules",
            fetch_max_bytes=64 * 2**20,
            max_partition_fetch_bytes=32 * 2**20,
        )
        await consumer.start()
        try:
            consumer.assign([TopicPartition(kafka.rules_topic, p) for p in range(kafka.partitions)])
            await consumer.seek_to_beginning()
            while True:
                batches: Any = await consumer.getmany(timeout_ms=1000)
                for tp, messages in batches.items():
                    for msg in messages:
                        apply_bundle(rt, msg.value or b"", source_label(tp.topic, tp.partition, msg.offset))
                while rt.refused:
                    dl = rt.refused.pop(0)
                    await rt.deadletter.send(key=dl.source.encode(), value=dl.model_dump_json().encode())
                    metrics.DEAD_LETTERS.labels("rules", dl.kind).inc()
        finally:
            await consumer.stop()
