"""Every kind of Kafka client cityops uses logs in with the Settings' SASL and TLS options.

The broker is Tansu behind the test proxy (kafka_proxy.py), which checks SCRAM, PLAIN and
certificates the way a production broker does: Tansu 0.6.0 cannot (docs/operations.md).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import KafkaError
from pydantic import SecretStr
from secure import USERS, SecureBroker, TlsFiles

from streams.alerting import ensure_topics
from streams.gateways.outbox import KafkaOutbox
from streams.security import aiokafka_options
from streams.settings import KafkaSettings, Settings

pytestmark = pytest.mark.integration

Make = Callable[..., SecureBroker]


def sasl_settings(bootstrap: str, mechanism: str, user: str = "cityops", password: str | None = None) -> Settings:
    s = Settings()
    s.kafka = KafkaSettings(
        bootstrap=bootstrap,
        topic_prefix=f"sec.{uuid.uuid4().hex[:6]}",
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism=mechanism,  # type: ignore[arg-type]
        sasl_username=user,
        sasl_password=SecretStr(USERS[user] if password is None else password),
    )
    return s


def tls_kafka(bootstrap: str, tls: TlsFiles, **extra: Any) -> KafkaSettings:
    return KafkaSettings(bootstrap=bootstrap, security_protocol="SSL", ssl_cafile=tls.ca, **extra)


def round_trip(kafka: KafkaSettings, topic: str, value: bytes) -> list[bytes]:
    """Produce ``value`` and read the topic back in a consumer group, both with ``client_options()``."""
    producer = KafkaProducer(acks="all", bootstrap_timeout_ms=10_000, **kafka.client_options())
    producer.send(topic, value).get(10)
    producer.close()
    consumer = KafkaConsumer(
        topic,
        group_id=f"g-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest",
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
        **kafka.client_options(),
    )
    got: list[bytes] = []
    deadline = time.monotonic() + 20
    try:
        while not got and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                got.extend(r.value for r in records)
        return got
    finally:
        consumer.close()


async def aio_round_trip(kafka: KafkaSettings, topic: str, value: bytes) -> list[bytes]:
    producer = AIOKafkaProducer(**aiokafka_options(kafka))
    await producer.start()
    try:
        await producer.send_and_wait(topic, value)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(topic, auto_offset_reset="earliest", group_id=None, **aiokafka_options(kafka))
    await consumer.start()
    try:
        batches = await consumer.getmany(timeout_ms=5000)
        return [m.value for msgs in batches.values() for m in msgs]
    finally:
        await consumer.stop()


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"])
def test_kafka_python_producer_and_group_consumer_log_in_with_the_configured_mechanism(
    secure_broker: Make, mechanism: str
) -> None:
    broker = secure_broker(users=USERS)
    s = sasl_settings(broker.bootstrap, mechanism)
    assert round_trip(s.kafka, s.kafka.raw_topic, b"hello") == [b"hello"]
    attempts = broker.proxy.log.attempts
    assert attempts and all(a.ok and a.user == "cityops" and a.mechanism == mechanism for a in attempts)
    assert broker.proxy.log.unauthenticated == []


def test_aiokafka_clients_log_in_with_scram(secure_broker: Make) -> None:
    broker = secure_broker(users=USERS)
    s = sasl_settings(broker.bootstrap, "SCRAM-SHA-256", "reader")
    assert asyncio.run(aio_round_trip(s.kafka, s.kafka.rules_topic, b"pack")) == [b"pack"]
    assert broker.proxy.log.users() == {"reader"} and broker.proxy.log.users(ok=False) == set()


def test_a_wrong_password_is_refused_and_nothing_is_written(secure_broker: Make) -> None:
    broker = secure_broker(users=USERS)
    wrong = sasl_settings(broker.bootstrap, "SCRAM-SHA-512", password="not-the-password")
    with pytest.raises(KafkaError):
        KafkaProducer(bootstrap_timeout_ms=4000, **wrong.kafka.client_options())
    assert broker.proxy.log.users(ok=False) == {"cityops"} and broker.proxy.log.users() == set()
    right = sasl_settings(broker.bootstrap, "SCRAM-SHA-512")
    consumer = KafkaConsumer(**right.kafka.client_options())
    try:
        assert right.kafka.raw_topic not in consumer.topics()
    finally:
        consumer.close()


def test_a_client_without_credentials_is_refused(secure_broker: Make) -> None:
    broker = secure_broker(users=USERS)
    with pytest.raises(KafkaError):
        KafkaProducer(bootstrap_timeout_ms=3000, **KafkaSettings(bootstrap=broker.bootstrap).client_options())
    assert broker.proxy.log.unauthenticated, "the plaintext client's first request was refused"


def test_the_gateway_outbox_and_the_alerts_admin_client_log_in(secure_broker: Make) -> None:
    broker = secure_broker(users=USERS)
    s = sasl_settings(broker.bootstrap, "SCRAM-SHA-512")
    assert ensure_topics(s, [s.kafka.raw_topic], timeout=10) == [s.kafka.raw_topic]
    outbox = KafkaOutbox(s.kafka, max_in_flight=10, client_id="cityops-http-gateway")
    try:
        acked: list[BaseException | None] = []
        outbox.send(s.kafka.raw_topic, b'{"events": []}', None, acked.append)
        outbox.flush(10)
        assert acked == [None]
    finally:
        outbox.close()
    assert {"cityops-alerts", "cityops-http-gateway"} <= broker.proxy.log.client_ids()


def test_tls_with_the_configured_ca_and_a_client_certificate(secure_broker: Make, tls_files: TlsFiles) -> None:
    broker = secure_broker(server_ssl=tls_files.server_context(client_certs=True))
    mutual = tls_kafka(
        broker.bootstrap, tls_files, ssl_certfile=tls_files.client_cert, ssl_keyfile=tls_files.client_key
    )
    assert round_trip(mutual, "tls-topic", b"over tls") == [b"over tls"]
    assert asyncio.run(aio_round_trip(mutual, "tls-aio", b"aio over tls")) == [b"aio over tls"]
    without_cert = tls_kafka(broker.bootstrap, tls_files)
    with pytest.raises(KafkaError):
        KafkaProducer(bootstrap_timeout_ms=3000, **without_cert.client_options())


def test_ssl_check_hostname_reaches_the_clients(secure_broker: Make, tls_files: TlsFiles) -> None:
    broker = secure_broker(server_ssl=tls_files.server_context(other_name=True))  # certificate for broker.test
    with pytest.raises(KafkaError):
        KafkaProducer(bootstrap_timeout_ms=3000, **tls_kafka(broker.bootstrap, tls_files).client_options())
    relaxed = tls_kafka(broker.bootstrap, tls_files, ssl_check_hostname=False)
    assert round_trip(relaxed, "tls-name", b"x") == [b"x"]
    assert asyncio.run(aio_round_trip(relaxed, "tls-name-aio", b"y")) == [b"y"]


def test_sasl_over_tls_with_scram(secure_broker: Make, tls_files: TlsFiles) -> None:
    broker = secure_broker(users=USERS, server_ssl=tls_files.server_context())
    kafka = KafkaSettings(
        bootstrap=broker.bootstrap,
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="cityops",
        sasl_password=SecretStr(USERS["cityops"]),
        ssl_cafile=tls_files.ca,
    )
    assert round_trip(kafka, "sasl-ssl", b"z") == [b"z"]
    assert asyncio.run(aio_round_trip(kafka, "sasl-ssl-aio", b"w")) == [b"w"]
    assert broker.proxy.log.users() == {"cityops"}
