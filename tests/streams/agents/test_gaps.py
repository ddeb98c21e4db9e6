"""The ingest sweep repairs what the consumer is past while no message shows the gap (``GapGuard.sweep``).

A real broker and raw topic: the repair reads the gap with a side consumer, as the worker does.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer
from stack import make_settings

from streams.agents.gaps import GapGuard
from streams.app import build_runtime
from streams.broker import DevBroker
from streams.topics import create_topics

RAW = 20  # messages in partition 0 of the raw topic


@pytest.fixture
def guard(broker: DevBroker, tmp_path: Path) -> GapGuard:
    s = make_settings(broker, tmp_path, "gaps")
    create_topics(s.kafka)
    producer = KafkaProducer(**s.kafka.producer_options())
    for i in range(RAW):
        producer.send(s.kafka.raw_topic, f"m{i}".encode(), partition=0)
    producer.flush()
    producer.close()
    return GapGuard(build_runtime(s), s.kafka.raw_topic, "ingest")


class Agent:
    """What the ingest agent does around each message: ``before``, the handling, ``finished``."""

    def __init__(self, guard: GapGuard) -> None:
        self.guard = guard
        self.handled: list[int] = []

    async def handle(self, msg: Any) -> None:
        self.handled.append(msg.offset)

    async def take(self, offset: int, *, finish: bool = True) -> None:
        await self.guard.before(0, offset, self.handle)
        self.handled.append(offset)
        if finish:
            self.guard.finished(0, offset)


def test_a_partition_that_stopped_short_is_repaired_at_the_second_still_sweep(guard: GapGuard) -> None:
    """Messages 0-4 handled, the consumer at 20 (Faust dropped 5-19 after fetching them), no later message."""

    async def scenario() -> None:
        agent = Agent(guard)
        for offset in range(5):
            await agent.take(offset)
        assert await guard.sweep({0: RAW}, agent.handle) == 0  # first look: records may still be queued
        assert agent.handled == [0, 1, 2, 3, 4]
        assert await guard.sweep({0: RAW}, agent.handle) == 15
        assert agent.handled == list(range(RAW))
        assert guard.expected[0] == RAW
        assert await guard.sweep({0: RAW}, agent.handle) == 0  # caught up: nothing more

    asyncio.run(scenario())


def test_progress_or_a_moving_position_between_sweeps_is_not_a_gap(guard: GapGuard) -> None:
    async def scenario() -> None:
        agent = Agent(guard)
        for offset in range(5):
            await agent.take(offset)
        await guard.sweep({0: 10}, agent.handle)
        await agent.take(5)  # the agent moved: what is queued is on its way
        assert await guard.sweep({0: 10}, agent.handle) == 0
        assert await guard.sweep({0: 12}, agent.handle) == 0  # the consumer moved: still fetching
        assert agent.handled == [0, 1, 2, 3, 4, 5]
        assert await guard.sweep({0: 12}, agent.handle) == 6  # now both stood still: 6-11
        assert agent.handled == list(range(12))

    asyncio.run(scenario())


def test_a_message_still_being_handled_is_not_a_gap(guard: GapGuard) -> None:
    """The agent took message 5 and has not finished it (a send held up by the broker)."""

    async def scenario() -> None:
        agent = Agent(guard)
        for offset in range(5):
            await agent.take(offset)
        await agent.take(5, finish=False)
        assert await guard.sweep({0: RAW}, agent.handle) == 0
        assert await guard.sweep({0: RAW}, agent.handle) == 0
        guard.finished(0, 5)
        assert await guard.sweep({0: RAW}, agent.handle) == 14  # finished, and nothing moved since
        assert agent.handled == list(range(RAW))

    asyncio.run(scenario())


def test_a_partition_no_message_reached_is_repaired_at_the_first_sweep(guard: GapGuard) -> None:
    async def scenario() -> None:
        agent = Agent(guard)
        assert await guard.sweep({0: 7}, agent.handle) == 7  # rebuild_state: from the start
        assert agent.handled == list(range(7))

    asyncio.run(scenario())
