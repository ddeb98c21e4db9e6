"""The MQTT bridge: topics on an MQTT broker -> envelopes on the raw Kafka topic, at least once.

paho-mqtt runs the MQTT session (v5, persistent, QoS 1, ``manual_ack``); a batcher thread packs
decoded events into ``{"events": [...]}`` envelopes. An MQTT message is acknowledged only after
Kafka acknowledged its envelope and its dead letters, and acknowledgements go out in the order
the messages arrived (MQTT requires it). While Kafka is slow the bridge holds its acks; the
broker stops sending once ``max_unacked`` messages are unacknowledged (Receive Maximum). After a
reconnect the broker redelivers what was not acknowledged: duplicates are possible, losses are
not, and event ids are deterministic so that the rule state counts a duplicate once.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from operator import attrgetter
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from rules.decode import Decoded, encode_envelopes
from rules.formats.mqtt_payload import PayloadContext, decode_payload, format_for
from rules.formats.sensorthings import LocationCache
from rules.pipeline import dead_letter
from rules.sources import by_source
from streams import metrics
from streams.gateways.observe import mqtt_metrics
from streams.gateways.outbox import GatewayError, Outbox
from streams.gateways.settings import is_loopback
from streams.settings import Settings

logger = logging.getLogger(__name__)

SESSION_EXPIRY_S = 3600
RETRY_BACKOFF_S = (0.2, 0.5, 1.0, 2.0, 5.0)


@dataclass
class Message:
    """One MQTT message between arrival and its acknowledgement."""

    generation: int
    mid: int
    qos: int
    topic: str
    decoded: Decoded
    source: str


@dataclass
class Batch:
    """Messages whose records go to Kafka together; acked when ``remaining`` reaches 0."""

    messages: list[Message]
    records: list[tuple[str, bytes, bytes | None]] = field(default_factory=list)
    remaining: int = 0
    done: bool = False


def check_startup(settings: Settings) -> None:
    """Refuse to talk to a non-loopback MQTT broker without credentials."""
    mqtt = settings.gateway.mqtt
    if not is_loopback(mqtt.host) and not (mqtt.username and mqtt.password):
        raise GatewayError(
            f"refusing to connect to the MQTT broker at {mqtt.host} without credentials: set "
            "CITYOPS_GATEWAY__MQTT__USERNAME and CITYOPS_GATEWAY__MQTT__PASSWORD"
        )


class MqttBridge:
    """Subscribe, decode, batch, produce, acknowledge. ``start()`` / ``stop()``; thread-based."""

    def __init__(self, settings: Settings, outbox: Outbox) -> None:
        self.settings = settings
        self.cfg = settings.gateway.mqtt
        self.outbox = outbox
        self.raw_topic = settings.kafka.raw_topic
        self.dead_topic = settings.kafka.deadletter_topic
        self.ctx = PayloadContext(
            mapping=self.cfg.mapping,
            cache=LocationCache(settings.gateway.datastream_cache_size),
            metrics=settings.gateway.sensorthings_metrics,
            default_crs=settings.gateway.crs.mqtt,
            max_bytes=settings.worker.max_message_bytes,
        )
        self.inbox: queue.Queue[Message] = queue.Queue()
        self.retries: queue.Queue[tuple[Batch, tuple[str, bytes, bytes | None], int]] = queue.Queue()
        self.order: deque[Batch] = deque()
        self.lock = threading.Lock()
        self.generation = 0
        self.connected = threading.Event()
        self.stopping = threading.Event()
        self.boot = format(int(time.time() * 1000), "x")
        self.seq = 0
        self.counts = {"messages": 0, "events": 0, "rejected": 0, "acked": 0, "stale_acks": 0, "retries": 0}
        self.client = self._client()
        self._batcher = threading.Thread(target=self._run_batcher, name="mqtt-batcher", daemon=True)

    def _client(self) -> paho.Client:
        client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self.cfg.client_id,
            protocol=paho.MQTTv5,
            manual_ack=True,
        )
        if self.cfg.username:
            password = self.cfg.password.get_secret_value() if self.cfg.password else None
            client.username_pw_set(self.cfg.username, password)
        client.reconnect_delay_set(min_delay=1, max_delay=max(1, int(self.cfg.reconnect_max_s)))
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        return client

    # -- lifecycle ----------------------------------------------------------------------------------
    def start(self) -> MqttBridge:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = SESSION_EXPIRY_S
        props.ReceiveMaximum = min(self.cfg.max_unacked, 65535)
        self.client.connect_async(
            self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive_s, clean_start=False, properties=props
        )
        self.client.loop_start()
        self._batcher.start()
        logger.info(
            "mqtt bridge started broker=%s:%d topics=%s raw_topic=%s",
            self.cfg.host,
            self.cfg.port,
            self.cfg.topics,
            self.raw_topic,
        )
        return self

    def wait_connected(self, timeout: float = 10.0) -> bool:
        return self.connected.wait(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop reading, give Kafka ``timeout`` s for what is in flight, ack what completed, disconnect."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and (self.inbox.qsize() or self._pending()):
            time.sleep(0.05)
        self.stopping.set()
        self._batcher.join(timeout=5)
        self.client.disconnect()
        self.client.loop_stop()
        self.outbox.flush(max(0.1, deadline - time.monotonic()))
        logger.info("mqtt bridge stopped counts=%s", self.counts)

    def _pending(self) -> int:
        with self.lock:
            return len(self.order)

    # -- paho callbacks (network thread) --------------------------------------------------------------
    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if getattr(reason, "is_failure", False):
            logger.warning("mqtt connect refused reason=%s", reason)
            return
        with self.lock:
            self.generation += 1
        client.subscribe([(t, int(self.cfg.qos)) for t in self.cfg.topics])
        self.connected.set()
        logger.info(
            "mqtt connected broker=%s:%d session_present=%s",
            self.cfg.host,
            self.cfg.port,
            getattr(flags, "session_present", None),
        )

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        with self.lock:
            self.generation += 1  # acks of earlier messages would now name the wrong packet ids
        self.connected.clear()
        if not self.stopping.is_set():
            logger.warning("mqtt disconnected reason=%s: reconnecting", reason)

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        with self.lock:
            generation = self.generation
            self.seq += 1
            seq = self.seq
        try:
            topic = msg.topic
        except UnicodeDecodeError:
            topic = repr(msg._topic)[:200]
        decoded = decode_payload(
            topic, bytes(msg.payload), format_for(topic, self.cfg.formats), self.ctx, received_at=datetime.now(UTC)
        )
        source = f"mqtt:{topic}#{msg.mid}@{self.boot}-{seq}"
        self.inbox.put(Message(generation, msg.mid, msg.qos, topic, decoded, source))

    # -- batching and producing (batcher thread) -------------------------------------------------------
    def _run_batcher(self) -> None:
        linger = self.cfg.batch_linger_s
        while not self.stopping.is_set():
            self._drain_retries()
            try:
                first = self.inbox.get(timeout=0.1)
            except queue.Empty:
                continue
            messages = [first]
            events = len(first.decoded.events)
            until = time.monotonic() + linger
            while events < self.cfg.batch_max:
                left = until - time.monotonic()
                try:
                    item = self.inbox.get(timeout=left) if left > 0 else self.inbox.get_nowait()
                except queue.Empty:
                    break
                messages.append(item)
                events += len(item.decoded.events)
            self._submit(Batch(messages))

    def _submit(self, batch: Batch) -> None:
        decoded: list[Any] = []
        for m in batch.messages:
            decoded.extend(m.decoded.events)
            for rej in m.decoded.rejected:
                where = m.source + (f"[{rej.index}]" if rej.index is not None else "")
                letter = dead_letter(rej.reason, rej.kind, where, rej.original)
                batch.records.append((self.dead_topic, letter.model_dump_json().encode(), where.encode()))
                logger.info("mqtt dead letter source=%s kind=%s reason=%s", where, rej.kind, rej.reason)
                metrics.DEAD_LETTERS.labels("gateway_mqtt", rej.kind).inc()
        # one envelope per source key (several, in order, when one would be too large): a sensor's
        # readings always share a key, so they stay in order
        rejected = len(batch.records)
        groups = by_source(decoded, attrgetter("subject"), self.settings.kafka.partitions)
        envelopes = [
            (self.raw_topic, envelope, key)
            for key, group in groups
            for envelope in encode_envelopes(group, self.settings.gateway.envelope_max_bytes)
        ]
        batch.records[:0] = envelopes
        events = decoded
        if events:
            metrics.EVENTS_IN.labels("gateway_mqtt").inc(len(events))
        with self.lock:
            self.counts["messages"] += len(batch.messages)
            self.counts["events"] += len(events)
            self.counts["rejected"] += rejected
            batch.remaining = len(batch.records)
            self.order.append(batch)
        if not batch.records:
            self._finished(batch)
        for record in batch.records:
            self._send(batch, record, 0)

    def _send(self, batch: Batch, record: tuple[str, bytes, bytes | None], attempt: int) -> None:
        while not self.outbox.reserve():  # Kafka is behind: hold (and with it, every MQTT ack)
            if self.stopping.is_set():
                return
            time.sleep(0.01)
        topic, value, key = record

        def done(exc: BaseException | None) -> None:
            if exc is None:
                with self.lock:
                    batch.remaining -= 1
                    finished = batch.remaining == 0
                if finished:
                    self._finished(batch)
            else:
                logger.warning("kafka send failed topic=%s attempt=%d error=%s: will retry", topic, attempt + 1, exc)
                self.retries.put((batch, record, attempt + 1))

        self.outbox.send(topic, value, key, done)

    def _drain_retries(self) -> None:
        while True:
            try:
                batch, record, attempt = self.retries.get_nowait()
            except queue.Empty:
                return
            with self.lock:
                self.counts["retries"] += 1
            time.sleep(RETRY_BACKOFF_S[min(attempt, len(RETRY_BACKOFF_S)) - 1])
            self._send(batch, record, attempt)

    def _finished(self, batch: Batch) -> None:
        """Mark a batch acknowledged by Kafka; ack the leading finished batches, in arrival order."""
        to_ack: list[Message] = []
        with self.lock:
            batch.done = True
            while self.order and self.order[0].done:
                for m in self.order.popleft().messages:
                    if m.qos == 0:
                        continue
                    if m.generation == self.generation:
                        to_ack.append(m)
                    else:
                        self.counts["stale_acks"] += 1
            self.counts["acked"] += len(to_ack)
        for m in to_ack:
            self.client.ack(m.mid, m.qos)

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {**self.counts, "unacked_batches": len(self.order), "outbox": self.outbox.stats()}


def run_mqtt(settings: Settings) -> None:
    """Run the bridge until SIGINT/SIGTERM."""
    import signal

    from streams.gateways.outbox import KafkaOutbox

    check_startup(settings)
    logger.info("mqtt bridge config %s", settings.gateway.model_dump(mode="json"))
    outbox = KafkaOutbox(
        settings.kafka,
        max_in_flight=settings.gateway.max_in_flight,
        linger_ms=settings.gateway.linger_ms,
        client_id="cityops-mqtt-bridge",
        warm_topics=(settings.kafka.raw_topic, settings.kafka.deadletter_topic),
    )
    bridge = MqttBridge(settings, outbox).start()
    server = mqtt_metrics(settings, bridge)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    try:
        while not done.wait(30):
            logger.info("mqtt bridge stats %s", bridge.stats())
    finally:
        if server is not None:
            server.stop()
        bridge.stop()
        outbox.close()
