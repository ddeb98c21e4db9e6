"""The worker's consumer: the configured fetch wait (Faust hard-codes 1,500 ms), and partitions
without a committed offset rewound when Faust seeks to committed offsets."""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from faust.transport.drivers import aiokafka as driver

from streams.app import build_runtime
from streams.broker import DevBroker
from streams.settings import Settings
from streams.transport import rewind_uncommitted


def worker_fetch_wait(tmp_path: Path, settings: Settings) -> int:
    settings.worker.data_dir = tmp_path / "faust"
    rt = build_runtime(settings)

    async def build() -> int:
        thread = rt.app.consumer._new_consumer_thread()
        consumer = thread._create_worker_consumer(rt.app.transport)
        try:
            return int(consumer._fetch_max_wait_ms)
        finally:
            await consumer.stop()

    return asyncio.run(build())


def test_the_worker_consumer_waits_as_configured(tmp_path: Path) -> None:
    s = Settings()
    s.kafka.fetch_max_wait_ms = 123
    assert worker_fetch_wait(tmp_path, s) == 123


def test_the_default_wait_is_short(tmp_path: Path) -> None:
    assert worker_fetch_wait(tmp_path, Settings()) == 20


def test_store_and_alert_consumers_get_it_too() -> None:
    s = Settings()
    s.kafka.fetch_max_wait_ms = 250
    assert s.kafka.consumer_options()["fetch_max_wait_ms"] == 250
    assert "fetch_max_wait_ms" not in s.kafka.producer_options()


# -- partitions without a committed offset (streams.transport.rewind_uncommitted) ------------------


async def _fetched_without_commit(
    broker: DevBroker, topic: str, group: str
) -> tuple[AIOKafkaConsumer, list[TopicPartition]]:
    """A group consumer that has fetched all 5 records of both partitions of a new ``topic``, and
    committed offset 3 of partition 0 only."""
    admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
    await producer.start()
    try:
        for i in range(10):
            await producer.send_and_wait(topic, str(i).encode(), partition=i % 2)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=broker.bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    tps = [TopicPartition(topic, 0), TopicPartition(topic, 1)]
    got = 0
    async with asyncio.timeout(30):
        while got < 10:
            batch = await consumer.getmany(timeout_ms=500)
            got += sum(len(records) for records in batch.values())
    await consumer.commit({tps[0]: 3})
    return consumer, tps


def test_a_partition_without_a_commit_goes_back_to_its_start(broker: DevBroker) -> None:
    async def scenario() -> None:
        consumer, (p0, p1) = await _fetched_without_commit(broker, "t.rewind-a", "g.rewind-a")
        try:
            committed = await consumer.seek_to_committed()
            assert committed == {p0: 3, p1: None}
            # the hole: aiokafka seeks p0 back to its commit, but leaves p1 after what it fetched
            assert (await consumer.position(p0), await consumer.position(p1)) == (3, 5)
            assert await rewind_uncommitted(consumer, committed) == [p1]
            assert (await consumer.position(p0), await consumer.position(p1)) == (3, 0)
            again: dict[int, list[bytes]] = {0: [], 1: []}
            async with asyncio.timeout(30):
                while len(again[0]) < 2 or len(again[1]) < 5:
                    for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                        again[tp.partition] += [r.value for r in records]
            assert again == {0: [b"6", b"8"], 1: [b"1", b"3", b"5", b"7", b"9"]}
        finally:
            await consumer.stop()

    asyncio.run(scenario())


def test_partitions_of_skipped_topics_stay_where_they_are(broker: DevBroker) -> None:
    async def scenario() -> None:
        consumer, (p0, p1) = await _fetched_without_commit(broker, "t.rewind-b", "g.rewind-b")
        try:
            committed = await consumer.seek_to_committed()
            assert await rewind_uncommitted(consumer, committed, {"t.rewind-b"}) == []
            assert (await consumer.position(p0), await consumer.position(p1)) == (3, 5)
        finally:
            await consumer.stop()

    asyncio.run(scenario())


def test_the_worker_consumer_rewinds_after_seeking_to_committed(tmp_path: Path) -> None:
    """The worker's consumer thread is the one that closes the hole (not only a helper that exists)."""
    settings = Settings()
    settings.worker.data_dir = tmp_path / "faust"
    rt = build_runtime(settings)
    thread = rt.app.consumer._new_consumer_thread()
    assert type(thread).seek_to_committed is not driver.AIOKafkaConsumerThread.seek_to_committed
    assert type(thread)._seek_to_committed.__qualname__.endswith("ConsumerThread._seek_to_committed")
