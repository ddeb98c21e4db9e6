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
from streams.delivery import Deliveries
from streams.outbox import Held, Outbox, Staged, Topic
from streams.publisher import Publisher

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

    # With the state in a changelog, what detect sends is held in the table until delivered
    # (streams.outbox); with checkpoints a restart replays from the last one, which needs no outbox.
    outbox = Outbox(rt.state) if rt.settings.worker.state_changelog and rt.resends is not None else None
    confirmations = Deliveries(rt.resends) if outbox is not None and rt.resends is not None else None
    if outbox is not None:
        rt.outbox = outbox
    # one record per incident snapshot: sent past Faust's Topic.send, whose cost per record was
    # most of what Kafka and Faust add to detect (streams.publisher)
    publisher = Publisher(rt.app, rt.resends)
    kafka = rt.settings.kafka
    topics: dict[Topic, str] = {"incidents": kafka.incidents_topic, "deadletter": kafka.deadletter_topic}

    async def send(partition: int, topic: Topic, key: bytes, value: bytes, revision: int = 0) -> None:
        if outbox is None or confirmations is None:
            await publisher.send(topics[topic], key, value)
            return
        held = outbox.hold(partition, topic, key, value, revision)
        await resend(partition, held)

    async def resend(partition: int, held: Held) -> None:
        assert outbox is not None and confirmations is not None
        fut = await publisher.send(topics[held.topic], held.key, held.value)
        confirmations.when_sent([fut], lambda ok: outbox.delivered(partition, held) if ok else None)

    async def emit_to(partition: int, out: Detected) -> None:
        for inc in out.incidents:
            await send(partition, "incidents", inc.id.encode(), inc.model_dump_json().encode(), inc.revision)
        for dl in out.dead:
            await send(partition, "deadletter", dl.source.encode(), dl.model_dump_json().encode())

    async def handle(msg: Any, *, live: bool = True) -> None:
        """Detect on one events message (replays of skipped ones are not judged late)."""
        started = time.perf_counter()
        value = msg.value or b""

        async def emit(out: Detected) -> None:
            await emit_to(msg.partition, out)

        # with an outbox, the message's state changes reach the table after the sends it holds
        state = Staged(rt.state) if outbox is not None else rt.state
        try:
            try:
                out = rt.pipeline.detect(value, state, topic_name, msg.partition, msg.offset, check_late=live)
                if out.missing is not None:  # an envelope before this one was lost: derive it first
                    await links.repair(msg.partition, msg.offset, out.missing, live, emit, state)
                    out = rt.pipeline.detect(
                        value, state, topic_name, msg.partition, msg.offset, check_late=live, chain=False
                    )
            except Exception as exc:  # a bug must not stop the stream: dead-letter and go on
                await dead_letter_failure(rt, "detect", topic_name, msg, exc)
                return
            await emit(out)
        finally:
            if isinstance(state, Staged):
                state.flush()
        metrics.observe_detect(out, time.perf_counter() - started)
        rt.health.beat()

    async def settle(partition: int) -> None:
        """Before a partition's message: drop delivered outbox entries, send again what a restart restored."""
        if outbox is None:
            return
        outbox.settle(partition)
        again = outbox.restored(partition)
        for held in again:
            await resend(partition, held)
        if again:
            metrics.OUTBOX_RESENT.inc(len(again))
            logger.info("outbox sent again partition=%d entries=%d", partition, len(again))

    async def handle_run(msgs: list[Any]) -> None:
        """Detect on a run of messages of one partition (``Pipeline.runnable``) as one batch."""
        started = time.perf_counter()
        partition = msgs[0].partition
        state = Staged(rt.state) if outbox is not None else rt.state
        keep = True
        try:
            try:
                out = rt.pipeline.detect_run(
                    [m.value or b"" for m in msgs], [m.offset for m in msgs], state, topic_name, partition
                )
            except Exception:  # a bug must not stop the stream: the messages go one by one (nothing was applied)
                logger.exception(
                    "detect run failed topic=%s partition=%d offsets=%d..%d; detecting them one by one",
                    topic_name,
                    partition,
                    msgs[0].offset,
                    msgs[-1].offset,
                )
                keep = False  # what the run staged is dropped
                for msg in msgs:
                    await handle(msg)
                return
            await emit_to(partition, out)
        finally:
            if keep and isinstance(state, Staged):
                state.flush()
        metrics.observe_detect(out, time.perf_counter() - started, messages=len(msgs))
        rt.health.beat()

    async def after(partition: int, msgs: list[Any]) -> None:
        """Once messages of a partition are handled: expiry, the gap guard, a checkpoint when due."""
        now = time.monotonic()
        if now - last_expiry.get(partition, 0.0) > every:
            last_expiry[partition] = now
            dropped = rt.pipeline.expire(rt.state, partition)
            if dropped:
                logger.info("rule state expired partition=%d entries=%d", partition, dropped)
        for msg in msgs:
            guard.finished(msg.partition, msg.offset, msg.timestamp)
        if rt.checkpoints.due():  # between two messages: the state and the offsets agree
            cut = rt.checkpoints.cut(rt.state, rt.pipeline.engine, rt.pack_digest)
            if cut is not None:
                await rt.checkpoints.write(cut, rt.app.producer.flush)

    async def replayed(msg: Any) -> None:
        await handle(msg, live=False)

    async def one_partition(msgs: list[Any]) -> None:
        """A partition's messages, in order: runs of them where ``Pipeline.runnable`` allows, else one by one."""
        at = 0
        while at < len(msgs):
            first = msgs[at]
            await rt.checkpoints.decided()
            await settle(first.partition)
            # inside the agent: table writes of a replay land in this partition's changelog
            await guard.before(first.partition, first.offset, replayed)
            end = at + 1
            while end < len(msgs) and msgs[end].offset == msgs[end - 1].offset + 1:
                end += 1
            size = 0
            if end - at > 1:
                size = rt.pipeline.runnable([m.value or b"" for m in msgs[at:end]], rt.state, first.partition)
            if size:
                run = msgs[at : at + size]
                for msg in run[1:]:  # consecutive offsets: the guard records them, nothing to repair
                    await guard.before(msg.partition, msg.offset, replayed)
                await handle_run(run)
            else:
                size, run = 1, [first]
                await handle(first)
            await after(first.partition, run)
            at += size

    # A Faust table (the changelog mode) takes writes only inside the iteration of one event: runs
    # are for the default mode, whose state is a plain mapping.
    take = 1 if rt.settings.worker.state_changelog else rt.settings.worker.detect_run_messages
    within = rt.settings.worker.detect_run_wait_ms / 1000.0

    @rt.app.agent(rt.events, name="detect")  # type: ignore[untyped-decorator]
    async def detect(stream: Any) -> None:
        if take <= 1:
            async for event in stream.events():
                await one_partition([event.message])
            return
        # what is queued, up to ``take`` messages: each partition's in order (partitions are independent)
        async for events in stream.take_events(take, within):
            by_partition: dict[int, list[Any]] = {}
            for event in events:
                by_partition.setdefault(event.message.partition, []).append(event.message)
            for msgs in by_partition.values():
                await one_partition(msgs)
