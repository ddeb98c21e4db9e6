"""Consumer lag of the cityops consumer groups, for brokers that report end offsets correctly.

Off by default (``dashboard.consumer_lag``): the development broker, Tansu 0.6, answers
ListOffsets(LATEST) with the newest batch's base offset + 1, so its lag would be wrong, and a
wrong number in an operations room is worse than none. Turn it on for a real Kafka cluster.
"""

from __future__ import annotations

import logging
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer
from kafka.errors import KafkaError

from streams.settings import Settings

logger = logging.getLogger(__name__)

TIMEOUT_MS = 5_000


def groups(settings: Settings) -> dict[str, str]:
    """Consumer group id per cityops process."""
    app = settings.kafka.app_id
    return {"worker": app, "store": f"{app}-store", "alerts": f"{app}-alerts"}


def consumer_lag(settings: Settings) -> list[dict[str, Any]]:
    """Per process and topic: committed offsets, end offsets and their difference (summed over partitions).

    Raises:
        kafka.errors.KafkaError: when the broker cannot be asked.
    """
    options = settings.kafka.client_options()
    common = {"client_id": "cityops-dashboard-lag", "bootstrap_timeout_ms": TIMEOUT_MS, **options}
    admin = KafkaAdminClient(request_timeout_ms=TIMEOUT_MS, **common)
    consumer = KafkaConsumer(request_timeout_ms=TIMEOUT_MS + 1000, **common)
    try:
        out: list[dict[str, Any]] = []
        for process, group in groups(settings).items():
            offsets = admin.list_group_offsets({group: None}).get(group, {})
            committed = {tp: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}
            if not committed:
                continue
            ends = consumer.end_offsets(list(committed))
            per_topic: dict[str, list[int]] = {}
            for tp, offset in committed.items():
                lag = max(0, int(ends.get(tp, offset)) - int(offset))
                per_topic.setdefault(tp.topic, [0, 0])[0] += lag
                per_topic[tp.topic][1] += 1
            out.extend(
                {"process": process, "group": group, "topic": topic, "partitions": parts, "lag": lag}
                for topic, (lag, parts) in sorted(per_topic.items())
            )
        return out
    except KafkaError:
        logger.warning("dashboard consumer lag unavailable bootstrap=%s", settings.kafka.bootstrap)
        raise
    finally:
        consumer.close()
        admin.close()
