"""Ingest agent: raw bytes -> validated, zone-enriched events, one envelope per target partition.

Events are routed by zone (or object) through ``rules.pipeline.partition_for``; all of one raw
message's events bound for one partition travel in one envelope that names the raw message.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rules.formats.cloudevents_in import CloudEventContext, ingest_record
from rules.formats.sensorthings import LocationCache
from rules.pipeline import source_label
from streams import metrics
from streams.agents.failures import dead_letter_failure
from streams.agents.gaps import GapGuard
from streams.publisher import Publisher

if TYPE_CHECKING:
    from streams.app import Runtime


logger = logging.getLogger(__name__)


def context(rt: Runtime) -> CloudEventContext:
    """What ingesting a raw message needs besides the pipeline (CloudEvents and SensorThings settings)."""
    gw = rt.settings.gateway
    return CloudEventContext(
        gw.crs.cloudevents, rt.pipeline.max_bytes, LocationCache(gw.datastream_cache_size), gw.sensorthings_metrics
    )


def attach(rt: Runtime) -> None:
    topic_name = rt.settings.kafka.raw_topic
    ce_ctx = context(rt)
    chain = rt.chain

    guard = GapGuard(rt, topic_name, "ingest")
    deliveries = rt.deliveries
    # the sends of every message handled since the last live one was acked: that ack waits for them
    # (a repaired message before it, or one a sweep repaired, counts as part of it)
    sent: list[Any] = []
    publisher = Publisher(rt.app, rt.resends)  # past Faust's Topic.send, as detect's (streams.publisher)
    events_topic, deadletter_topic = rt.settings.kafka.events_topic, rt.settings.kafka.deadletter_topic

    async def handle(msg: Any) -> None:
        """Ingest one raw message (also used to replay skipped ones)."""
        started = time.perf_counter()
        try:
            # CloudEvents (binary ce_* headers or structured) are unwrapped; plain JSON goes on as is
            out = ingest_record(
                rt.pipeline, msg.value or b"", msg.headers, topic_name, msg.partition, msg.offset, ctx=ce_ctx
            )
        except Exception as exc:  # a bug must not stop the stream: dead-letter and go on
            sent.append(await dead_letter_failure(rt, "ingest", topic_name, msg, exc))
            return
        # one envelope per target partition: Faust's cost is per message, not per event
        src = (msg.partition, msg.offset)
        made = []
        for partition in out.targets():
            prev = chain.peek(msg.partition, partition, msg.offset)
            made.append((partition, prev, out.envelope(partition, src, prev)))
        raw = msg.value or b""
        refused = rt.pipeline.oversized(raw, topic_name, msg.partition, msg.offset, {p: len(e) for p, _, e in made})
        if refused is not None:  # nothing of it is sent (and no link recorded): it is dead-lettered whole
            made, out.routed, out.spread = [], {}, {}
            out.dead.append(refused)
        for partition, prev, envelope in made:
            chain.link(msg.partition, partition, msg.offset)
            rt.pipeline.handoff.keep(envelope, out, partition, src, prev)
            sent.append(await publisher.send(events_topic, None, envelope, partition))
        for dl in out.dead:
            sent.append(await publisher.send(deadletter_topic, dl.source.encode(), dl.model_dump_json().encode()))
        metrics.observe_ingest(out, time.perf_counter() - started)
        rt.health.beat()

    @rt.app.timer(interval=rt.settings.worker.tick_s)  # type: ignore[untyped-decorator]
    async def sweep() -> None:
        """Repair what the consumer is past on an assigned raw partition while no message shows it
        (``GapGuard.sweep``): before any message after a start, or after Faust dropped records."""
        await rt.checkpoints.decided()
        assigned = [tp for tp in rt.app.consumer.assignment() if tp.topic == topic_name]
        positions: dict[int, int | None] = {}
        for tp in assigned:
            try:
                positions[tp.partition] = await rt.app.consumer.position(tp)
            except Exception as exc:  # e.g. revoked by a rebalance meanwhile; a timer must never crash the worker
                logger.info("ingest sweep: no position for partition %d (%s); next tick", tp.partition, exc)
        if positions:
            try:
                await guard.sweep(positions, handle)
            except Exception:  # the broker went away: the partition's next message repairs the gap instead
                logger.exception("ingest sweep failed topic=%s partitions=%s", topic_name, sorted(positions))

    @rt.app.agent(rt.raw, name="ingest")  # type: ignore[untyped-decorator]
    async def ingest(stream: Any) -> None:
        # acked by hand: a raw offset becomes committable only once its envelopes reached the broker
        manual = stream.noack()
        acks: set[asyncio.Task[Any]] = set()

        def acker(event: Any) -> Callable[[], None]:
            def ack() -> None:
                task = asyncio.ensure_future(manual.ack(event))
                acks.add(task)
                task.add_done_callback(acks.discard)

            return ack

        async for event in manual.events():
            msg = event.message
            await rt.checkpoints.decided()
            await guard.before(msg.partition, msg.offset, handle)
            await handle(msg)
            if deliveries is None:
                await manual.ack(event)
            else:
                deliveries.ack_when_sent(acker(event), sent, source_label(topic_name, msg.partition, msg.offset))
            sent.clear()
            guard.finished(msg.partition, msg.offset, msg.timestamp)
