"""The worker's Kafka transport: Faust's aiokafka driver with a configurable fetch wait, and a
seek to committed offsets that also rewinds partitions that have none.

faust-streaming 0.15 builds its worker consumer with ``fetch_max_wait_ms=1500`` and no setting
for it. Tansu (the dev broker) holds every fetch for the whole wait even when records arrive
meanwhile, so each Faust hop added up to 1.5 s of latency (measured by ``cityops bench``: p50 of
1.6 s at 200 events/s, 125 ms with a 100 ms wait). The subclasses below replace that number,
before the consumer starts (aiokafka reads it when it builds its fetcher in ``start()``).

Faust drops records it has fetched but not yet handed to an agent in several places (a suspended
flow, a generation change) and relies on ``perform_seek`` (after a recovery, or when it finds the
flow stopped) to fetch them again from the committed offsets. aiokafka's ``seek_to_committed``
seeks only partitions whose committed offset is above 0, so a partition with no commit yet (a
worker's first half second, or a restart before its first commit) stayed where the dropped fetch
had left it, and its next message was the only thing that showed the gap. ``rewind_uncommitted``
closes that hole: such a partition goes back to its earliest offset (the worker's
``auto_offset_reset``), and what it processed before is processed again, which the pipeline's
source positions make harmless. (Records Faust drops *after* its seek, when it resumes flow, are
the gap guard's to repair: ``streams.agents.gaps``.)
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from typing import Any

import faust
from aiokafka import TopicPartition
from faust.transport.drivers import aiokafka as driver

logger = logging.getLogger(__name__)


async def rewind_uncommitted(
    consumer: Any, committed: Mapping[TopicPartition, int | None], skip_topics: Collection[str] = ()
) -> list[TopicPartition]:
    """Seek every partition of ``committed`` without a committed offset above 0 to its earliest
    offset, as aiokafka's ``seek_to_committed`` (which returned ``committed``) does not.

    ``consumer`` is the aiokafka consumer; partitions of ``skip_topics`` (Faust's changelogs, which
    its recovery positions itself) are left alone. Returns the partitions rewound.
    """
    fresh = [tp for tp, offset in committed.items() if not offset and tp.topic not in skip_topics]
    if fresh:
        await consumer.seek_to_beginning(*fresh)
        logger.info(
            "rewound partitions without a committed offset to their start: %s",
            ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(fresh)),
        )
    return fresh


def transport_class(fetch_max_wait_ms: int) -> type[driver.Transport]:
    """Faust's aiokafka Transport whose worker consumer waits at most ``fetch_max_wait_ms`` per fetch."""

    class ConsumerThread(driver.AIOKafkaConsumerThread):  # type: ignore[misc]
        def _create_worker_consumer(self, transport: Any) -> Any:
            consumer = super()._create_worker_consumer(transport)
            consumer._fetch_max_wait_ms = fetch_max_wait_ms  # read by AIOKafkaConsumer.start()
            return consumer

        async def seek_to_committed(self) -> Mapping[TopicPartition, int | None]:
            return await self.call_thread(self._seek_to_committed)  # type: ignore[no-any-return]

        async def _seek_to_committed(self) -> Mapping[TopicPartition, int | None]:
            consumer = self._ensure_consumer()
            committed = await consumer.seek_to_committed()
            await rewind_uncommitted(consumer, committed, self.app.tables.changelog_topics)
            return committed  # type: ignore[no-any-return]

    class Consumer(driver.Consumer):  # type: ignore[misc]
        def _new_consumer_thread(self) -> Any:
            return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    class Transport(driver.Transport):  # type: ignore[misc]
        pass

    Transport.Consumer = Consumer
    return Transport


class App(faust.App):  # type: ignore[misc]
    """A Faust app whose consumer transport honours ``fetch_max_wait_ms``."""

    def __init__(self, *args: Any, fetch_max_wait_ms: int = 100, **kwargs: Any) -> None:
        self.fetch_max_wait_ms = fetch_max_wait_ms
        super().__init__(*args, **kwargs)

    def _new_transport(self) -> Any:
        return transport_class(self.fetch_max_wait_ms)(self.conf.broker_consumer, self)
