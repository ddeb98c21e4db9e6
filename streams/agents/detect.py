"""Detect agent: enriched events -> rule engine (state in a Faust table) -> incidents."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from rules.pipeline import Detected, encode_tick
from streams import metrics
from streams.agents.failures import dead_letter_failure
from streams.agents.gaps import GapGuard
from streams.agents.ingest import context
from streams.agents.links import Relinker

if TYPE_CHECKING:
    from streams.app import Runtime


logger = logging.getLogger(__name__)


def attach(rt: Runtime) -> None:
    topic_name = rt.settings.kafka.events_topic
    every = rt.settings.worker.expire_interval_s
    last_expiry: dict[int, float] = {}

    @rt.app.timer(interval=rt.settings.worker.tick_s)  # type: ignore[untyped-decorator]
    async def ticks() -> None:
        """A tick to every partition, so time-driven rules fire when no events arrive."""
        clock = int(time.time() * 1000)
        for partition in range(rt.settings.kafka.partitions):
            await rt.events.send(value=encode_tick(clock), partition=partition)

    guard = GapGuard(rt, topic_name, "detect")

    links = Relinker(rt, context(rt))

    async def emit(out: Detected) -> None:
        for inc in out.incidents:
            await rt.incidents.send(key=inc.id.encode(), value=inc.model_dump_json().encode())
        for dl in out.dead:
            await rt.deadletter.send(key=dl.source.encode(), value=dl.model_dump_json().encode())

    async def handle(msg: Any, *, live: bool = True) -> None:
        """Detect on one events message (replays of skipped ones are not judged late)."""
        started = time.perf_counter()
        value = msg.value or b""
        try:
            out = rt.pipeline.detect(value, rt.state, topic_name, msg.partition, msg.offset, check_late=live)
            if out.missing is not None:  # an envelope before this one was lost: derive it first
                await links.repair(msg.partition, msg.offset, out.missing, live, emit)
                out = rt.pipeline.detect(
                    value, rt.state, topic_name, msg.partition, msg.offset, check_late=live, chain=False
                )
        except Exception as exc:  # a bug must not stop the stream: dead-letter and go on
            await dead_letter_failure(rt, "detect", topic_name, msg, exc)
            return
        await emit(out)
        metrics.observe_detect(out, time.perf_counter() - started)
        rt.health.beat()

    async def replayed(msg: Any) -> None:
        await handle(msg, live=False)

    @rt.app.agent(rt.events, name="detect")  # type: ignore[untyped-decorator]
    async def detect(stream: Any) -> None:
        async for event in stream.events():
            msg = event.message
            # inside the agent: table writes of a replay land in this partition's changelog
            await guard.before(msg.partition, msg.offset, replayed)
            await handle(msg)
            now = time.monotonic()
            if now - last_expiry.get(msg.partition, 0.0) > every:
                last_expiry[msg.partition] = now
                dropped = rt.pipeline.expire(rt.state, msg.partition)
                if dropped:
                    logger.info("rule state expired partition=%d entries=%d", msg.partition, dropped)
            guard.finished(msg.partition, msg.offset, msg.timestamp)
            if rt.checkpoints.due():  # between two messages: the state and the offsets agree
                cut = rt.checkpoints.cut(rt.state, rt.pipeline.engine, rt.pack_digest)
                if cut is not None:
                    await rt.checkpoints.write(cut, rt.app.producer.flush)
