"""Records sent straight to the producer keep what Topic.send gave: delivery, and resends of failures."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from stack import checkpointing_runtime, make_settings, read_topic

from streams.broker import DevBroker
from streams.delivery import Deliveries
from streams.publisher import Publisher
from streams.settings import Settings


class RefusingFirst:
    """A real aiokafka producer, except that the first send of each record fails in flight, as a
    broker error fails a batch; resends (``send_and_wait``, as ``SendErrors`` calls it) go through."""

    def __init__(self, producer: Any) -> None:
        self.producer = producer
        self.refused: list[bytes] = []

    async def send(self, topic: str, key: Any, value: bytes, partition: Any, timestamp: Any, headers: Any) -> Any:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.refused.append(value)
        asyncio.get_running_loop().call_soon(fut.set_exception, RuntimeError("NotLeaderForPartitionError"))
        return fut

    async def send_and_wait(
        self, topic: str, key: Any, value: bytes, *, partition: Any, timestamp: Any, headers: Any
    ) -> Any:
        return await self.producer.send_and_wait(topic, value=value, key=key, partition=partition, headers=headers)


class Host:
    """What Publisher needs of the Faust app."""

    def __init__(self, producer: Any) -> None:
        self.producer = producer

    async def maybe_start_producer(self) -> Any:
        return self.producer


@pytest.mark.integration
def test_a_record_sent_directly_reaches_its_topic_with_its_key_and_partition(broker: DevBroker, tmp_path: Path) -> None:
    from streams.app import build_runtime
    from streams.topics import create_topics

    s = make_settings(broker, tmp_path, "publisher")
    create_topics(s.kafka)
    rt = build_runtime(s)
    publisher = Publisher(rt.app, rt.resends)

    async def body() -> None:
        await rt.app.producer.start()
        try:
            keyed = await publisher.send(s.kafka.incidents_topic, b"inc-1", b'{"id":"inc-1"}')
            placed = await publisher.send(s.kafka.deadletter_topic, b"src", b"bad", partition=2)
            await asyncio.wait_for(asyncio.gather(keyed, placed), 30)
        finally:
            await rt.app.producer.stop()

    asyncio.run(body())
    [incident] = read_topic(s, s.kafka.incidents_topic)
    assert (incident.key, incident.value) == (b"inc-1", b'{"id":"inc-1"}')
    [dead] = read_topic(s, s.kafka.deadletter_topic)
    assert (dead.partition, dead.key, dead.value) == (2, b"src", b"bad")


@pytest.mark.integration
def test_a_direct_send_that_fails_is_sent_again_and_its_future_finds_the_outcome(
    broker: DevBroker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """SendErrors resends it to the same topic and partition; Deliveries waits for that resend."""
    from streams.topics import create_topics

    s = make_settings(broker, tmp_path, "publisher-retry")
    create_topics(s.kafka)
    rt, sensor = checkpointing_runtime(s, retry_s=30)
    deliveries = Deliveries(sensor)
    outcomes: list[bool] = []
    refused: list[bytes] = []

    async def body() -> None:
        aio = AIOKafkaProducer(bootstrap_servers=s.kafka.bootstrap)
        await aio.start()
        refusing = RefusingFirst(aio)
        publisher = Publisher(Host(refusing), rt.resends)
        try:
            fut = await publisher.send(s.kafka.incidents_topic, b"inc-7", b"rev-3", partition=1)
            deliveries.when_sent([fut], outcomes.append)
            await asyncio.sleep(0.05)
            assert fut.done() and fut.exception() is not None, "the first attempt failed"
            assert outcomes == [], "not settled while the resend is pending"
            assert not rt.checkpoints.due(), "checkpoints pause while a record is resent"
            await asyncio.wait_for(asyncio.gather(*sensor.pending), 30)
            await asyncio.sleep(0)
        finally:
            refused.extend(refusing.refused)
            await aio.stop()

    with caplog.at_level(logging.WARNING):
        asyncio.run(body())
    assert refused == [b"rev-3"]
    assert outcomes == [True], "settled as delivered, found through the send's own future"
    assert [(r.partition, r.key, r.value) for r in read_topic(s, s.kafka.incidents_topic)] == [(1, b"inc-7", b"rev-3")]
    assert f"send failed topic={s.kafka.incidents_topic} partition=1" in caplog.text
    assert rt.checkpoints.due(), "checkpoints resume once it is delivered"
    assert not sensor.outcomes


def test_without_a_resend_sensor_a_failed_direct_send_is_counted_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    from streams import metrics

    topic = "t.incidents"
    before = metrics.SEND_ERRORS.labels(topic)._value.get()

    async def body() -> None:
        publisher = Publisher(Host(RefusingFirst(None)), None)
        fut = await publisher.send(topic, b"k", b"v", partition=3)
        await asyncio.sleep(0.01)
        assert fut.done()

    with caplog.at_level(logging.ERROR):
        asyncio.run(body())
    assert metrics.SEND_ERRORS.labels(topic)._value.get() == before + 1
    assert f"send failed topic={topic} partition=3" in caplog.text


def test_a_send_cancelled_at_shutdown_counts_as_failed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A record the producer dropped when it stopped was not delivered: checkpoints must not promise it."""
    s = Settings()
    s.worker.data_dir = tmp_path
    rt, _ = checkpointing_runtime(s, retry_s=0)

    class Dropping:
        async def send(self, *args: Any) -> Any:
            fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            asyncio.get_running_loop().call_soon(fut.cancel)
            return fut

    async def body() -> None:
        await Publisher(Host(Dropping()), rt.resends).send(s.kafka.incidents_topic, b"k", b"v", partition=0)
        await asyncio.sleep(0.01)

    with caplog.at_level(logging.ERROR):
        asyncio.run(body())
    assert "cancelled" in caplog.text and not rt.checkpoints.due()
