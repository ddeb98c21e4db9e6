"""The simulator: streams the scripted scenario to the raw topic in real (or compressed) time."""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime

import orjson
from kafka import KafkaProducer

from rules.pack import load_pack
from streams.scenario import Message, wuhan_scenario
from streams.settings import Settings

logger = logging.getLogger(__name__)

# One source, one key: Kafka keeps a key's messages in order, and sequence rules (sustained, geofence,
# silence) need each subject's events in event-time order.
SOURCE_KEY = b"simulator"


def build_scenario(settings: Settings, start: datetime, duration_s: float, seed: int = 7) -> list[Message]:
    pack = load_pack(settings.rules.pack)
    layer = next(iter(pack.layers.values()))
    return wuhan_scenario(layer, start, duration_s, seed=seed, extra_layers=pack.layers)


def produce(
    settings: Settings, messages: list[Message], *, speed: float = 1.0, stop: threading.Event | None = None
) -> int:
    """Send messages to the raw topic; ``speed`` 0 sends as fast as possible. Returns events sent."""
    producer = KafkaProducer(
        client_id="cityops-simulator", linger_ms=5, acks="all", **settings.kafka.producer_options()
    )
    topic = settings.kafka.raw_topic
    began = time.monotonic()
    sent = 0
    try:
        for msg in messages:
            if stop is not None and stop.is_set():
                break
            if speed > 0:
                delay = began + msg.at_s / speed - time.monotonic()
                if delay > 0 and stop is not None:
                    if stop.wait(delay):
                        break
                elif delay > 0:
                    time.sleep(delay)
            if msg.bad is not None:
                producer.send(topic, key=SOURCE_KEY, value=msg.bad)
            elif msg.events:
                producer.send(topic, key=SOURCE_KEY, value=orjson.dumps({"events": msg.events}))
                sent += len(msg.events)
        producer.flush()
    finally:
        producer.close()
    logger.info("simulator done events=%d messages=%d topic=%s", sent, len(messages), topic)
    return sent


def now_utc() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)
