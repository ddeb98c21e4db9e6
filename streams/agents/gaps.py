"""Gap repair: never let a message be skipped, whatever the consumer did across a restart.

Each agent remembers the next offset it expects per partition. When a message arrives beyond it
(after a restart or a rebalance the consumer may resume past messages it never processed), the
missing range is read with a side consumer and processed first. At the first message after a
start, the expected offset is unknown, so the range is the partition's whole history. Both
stages are idempotent (ingest output carries its raw position, which detect skips when already
applied; detect state remembers positions), so re-processing is safe.

A gap is seen when the next message arrives. For a partition that gets no next message, the
ingest agent's sweep (a timer) compares the consumer's position with what the agent handled:

- a partition no message has reached yet (the consumer resumed past messages after a crash);
- a partition that stopped short: the consumer's position is ahead of what the agent handled, and
  neither moved for a whole sweep interval. Faust clears its stream queues whenever it resumes
  flow (``mode.utils.queues.FlowControlEvent.resume``), and after a table recovery it resumes the
  stream partitions, seeks them, and only then resumes flow: records fetched during the seek are
  dropped after it, with the consumer's position past them. A later message shows that gap; the
  sweep repairs it when none comes. (The events topic gets a tick per partition every
  ``worker.tick_s``, so detect always sees a later message.)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from streams.app import Runtime

logger = logging.getLogger(__name__)

Handler = Callable[[Any], Awaitable[None]]


class GapGuard:
    """Per-partition next-expected offsets of one agent."""

    def __init__(self, rt: Runtime, topic: str, stage: str) -> None:
        self.rt = rt
        self.topic = topic
        self.stage = stage
        self.expected: dict[int, int] = {}
        # first offset not yet handled in full (its sends awaited): what a checkpoint may promise
        self.done: dict[int, int] = {}
        self.stamps: dict[int, int] = {}  # Kafka timestamp (ms) of the message before ``done``
        self.seen: set[int] = set()  # partitions a message has reached the agent from, since the start
        # per seen partition: (expected, consumer position) at the last sweep (see sweep)
        self.swept: dict[int, tuple[int | None, int]] = {}
        self._lock = asyncio.Lock()  # a sweep and the agent never repair one partition at once
        rt.checkpoints.track(stage, self)

    async def before(self, partition: int, offset: int, handle: Handler) -> None:
        """Process whatever this partition skipped before ``offset`` (with ``handle``)."""
        async with self._lock:
            self.seen.add(partition)
            start = self.expected.get(partition, 0 if self.rt.settings.worker.rebuild_state else offset)
            if offset > start:
                await replay_range(self.rt, self.topic, partition, start, offset, handle, self.stage, guard=self)
            self.expected[partition] = offset + 1

    async def sweep(self, positions: Mapping[int, int | None], handle: Handler) -> int:
        """Repair partitions the consumer is past without a message to show it (see the module).

        ``positions`` are the consumer's next offsets (its committed ones, before it has fetched).
        A partition no message has reached yet is repaired up to its position at once. A partition
        that has had messages is repaired when its position is ahead of what the agent handled,
        neither changed since the previous sweep (records still queued for the agent would have
        moved it meanwhile), and the agent has finished its last message. A message the consumer
        still delivers after a repair is handled again, which both stages skip as applied.
        Returns how many messages were replayed.
        """
        replayed = 0
        async with self._lock:
            for partition, position in sorted(positions.items()):
                if position is None:
                    continue
                if partition in self.seen:
                    start = self._stopped_short(partition, position)
                    if start is None:
                        continue
                    logger.warning(
                        "%s sweep: partition %d is at %d but its messages stop at %d; replaying the gap",
                        self.stage,
                        partition,
                        position,
                        start,
                    )
                else:
                    self.seen.add(partition)
                    start = self.expected.get(partition, 0 if self.rt.settings.worker.rebuild_state else None)
                    if start is None or position <= start:
                        continue
                    logger.warning(
                        "%s sweep: partition %d resumes at %d, handled up to %d; replaying the gap before any message",
                        self.stage,
                        partition,
                        position,
                        start,
                    )
                replayed += await replay_range(
                    self.rt, self.topic, partition, start, position, handle, self.stage, guard=self
                )
                self.expected[partition] = position
        return replayed

    def _stopped_short(self, partition: int, position: int) -> int | None:
        """Where to repair a seen partition from: what the agent handled, when the consumer has been
        past it, without either moving, since the previous sweep, and the agent is not in the middle
        of a message of it (a send held up by the broker); None otherwise."""
        expected = self.expected.get(partition)
        previous, self.swept[partition] = self.swept.get(partition), (expected, position)
        if expected is None or position <= expected or previous != (expected, position):
            return None
        return expected if self.done.get(partition) == expected else None

    def finished(self, partition: int, offset: int, timestamp_s: float | None = None) -> None:
        """The message at ``offset`` (Faust's timestamp: seconds) is handled and its sends are queued."""
        self.done[partition] = offset + 1
        if timestamp_s is not None:
            self.stamps[partition] = round(timestamp_s * 1000)
        else:
            self.stamps.pop(partition, None)


async def replay_range(
    rt: Runtime,
    topic: str,
    partition: int,
    start: int,
    upto: int,
    handle: Handler,
    stage: str,
    *,
    guard: GapGuard | None = None,
    timeout_s: float | None = None,
) -> int:
    """Feed messages [start, upto) of one partition to ``handle``; returns how many.

    It gives up after ``timeout_s`` (default ``worker.rebuild_timeout_s``) without a record. Each
    message handled counts as finished on ``guard`` at once: a checkpoint cut while a long
    replay runs (the ingest agent's, cut from the detect agent) keeps the progress made so far.
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from streams.security import aiokafka_options

    began = time.perf_counter()
    consumer = AIOKafkaConsumer(
        enable_auto_commit=False,
        group_id=None,
        client_id=f"{rt.settings.kafka.app_id}-{stage}-replay",
        **aiokafka_options(rt.settings.kafka),
    )
    await consumer.start()
    done = 0
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        consumer.seek(tp, start)
        deadline = time.monotonic() + (rt.settings.worker.rebuild_timeout_s if timeout_s is None else timeout_s)
        position = start
        while position < upto:
            batches: Any = await consumer.getmany(tp, timeout_ms=1000, max_records=500)
            records = batches.get(tp, [])
            if not records:
                if time.monotonic() > deadline:  # never block a partition for good: say so and go on
                    logger.error(
                        "%s replay incomplete topic=%s partition=%d reached=%d upto=%d",
                        stage,
                        topic,
                        partition,
                        position,
                        upto,
                    )
                    break
                continue
            for record in records:
                if record.offset >= upto:
                    position = upto
                    break
                await handle(record)
                position = record.offset + 1
                done += 1
                if guard is not None:
                    guard.finished(partition, record.offset, record.timestamp / 1000)
    finally:
        await consumer.stop()
    if done:
        rt.checkpoints.request()  # what the replay applied outlives a crash soon after it
    logger.warning(
        "%s replayed topic=%s partition=%d range=[%d,%d) messages=%d seconds=%.2f",
        stage,
        topic,
        partition,
        start,
        upto,
        done,
        time.perf_counter() - began,
    )
    return done
