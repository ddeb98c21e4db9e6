"""Topic layout and explicit creation (never rely on broker auto-creation)."""

from __future__ import annotations

import contextlib
import logging
import time

from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from streams.errors import BrokerError
from streams.settings import KafkaSettings

logger = logging.getLogger(__name__)


def create_topics(kafka: KafkaSettings, *, timeout: float = 20.0) -> list[str]:
    """Create every cityops topic with the declared partitions; existing ones are left alone."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            admin = KafkaAdminClient(client_id="cityops-admin", request_timeout_ms=5000, **kafka.client_options())
            break
        except KafkaError as exc:
            last = exc
            time.sleep(0.3)
    else:
        raise BrokerError(f"cannot reach the broker at {kafka.bootstrap}: {last}")
    try:
        existing = set(admin.list_topics())
        wanted = [t for t in kafka.all_topics() if t not in existing]
        for name in wanted:
            with contextlib.suppress(TopicAlreadyExistsError):
                configs = {"cleanup.policy": "compact"} if name in (kafka.rules_topic, kafka.silences_topic) else {}
                admin.create_topics([NewTopic(name, kafka.partitions, kafka.replication_factor, topic_configs=configs)])
            logger.info("topic created name=%s partitions=%d", name, kafka.partitions)
        return wanted
    finally:
        admin.close()
