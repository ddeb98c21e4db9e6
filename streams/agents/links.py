"""Lost events envelopes, found by their links and derived again from the raw topic.

Ingest links each envelope to the raw offset of the one it sent before on the same stream (raw
partition -> events partition, ``rules.pipeline.Chain``). When a send fails (on Tansu, two first
writes racing for a freshly created partition) Faust counts the source message as done, and the
envelopes after the lost one still arrive. Detect sees the broken link before it applies the next
envelope (``Detected.missing``); the raw messages in between are read again, ingested with the
same pure pipeline, and the part of each bound for this partition is applied first, in order. So
the stream applies exactly what it would have, and a late resend of the lost envelope is skipped
as applied. Each derived envelope is also sent to the events topic (without a link), so the store
archives its events as it would have archived the lost one's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

from rules.formats.cloudevents_in import CloudEventContext, ingest_record
from rules.pipeline import Detected, Missing
from streams import metrics
from streams.agents.gaps import replay_range

if TYPE_CHECKING:
    from streams.app import Runtime

logger = logging.getLogger(__name__)

#: A raw message that does not come within this long is not there (a topic recreated after a broker
#: restart): the envelope after it is applied without it rather than stall its partition.
RELINK_TIMEOUT_S = 10.0

Emit = Callable[[Detected], Awaitable[None]]


class Relinker:
    """Derives the envelopes of one events partition again from raw messages, for the detect agent."""

    def __init__(self, rt: Runtime, ctx: CloudEventContext) -> None:
        self.rt = rt
        self.ctx = ctx
        self.repaired = 0  # envelopes derived again and applied, over this worker's life

    async def repair(
        self,
        partition: int,
        offset: int,
        missing: Missing,
        live: bool,
        emit: Emit,
        state: MutableMapping[str, Any] | None = None,
    ) -> int:
        """Apply the envelopes of raw messages ``missing`` bound for events ``partition``, in order.

        ``offset`` is the events message whose link was broken (it labels dead letters). Never
        raises: what cannot be read or derived is logged, and the caller applies its message.
        Returns how many envelopes were applied. ``state`` is where they are applied (default: the
        runtime's rule state; detect passes its write-behind view when it keeps an outbox).
        """
        kafka = self.rt.settings.kafka
        events_topic = kafka.events_topic
        raw_topic = kafka.raw_topic
        began = time.perf_counter()
        applied = 0
        target = self.rt.state if state is None else state

        async def derive(record: Any) -> None:
            nonlocal applied
            try:
                out = ingest_record(
                    self.rt.pipeline,
                    record.value or b"",
                    record.headers,
                    raw_topic,
                    record.partition,
                    record.offset,
                    ctx=self.ctx,
                )
                if partition not in out.routed and partition not in out.spread:
                    return
                envelope = out.envelope(partition, (record.partition, record.offset))
                if len(envelope) > self.rt.pipeline.max_envelope_bytes:
                    # ingest dead-lettered this raw message whole (Pipeline.oversized): nothing of it applies
                    logger.warning(
                        "detect relink: raw message %s[%d]@%d makes a %d-byte envelope, over the limit: "
                        "it was dead-lettered, skipped",
                        raw_topic,
                        record.partition,
                        record.offset,
                        len(envelope),
                    )
                    return
                detected = self.rt.pipeline.detect(
                    envelope, target, events_topic, partition, offset, check_late=live, chain=False
                )
            except Exception:  # the message it precedes is applied all the same
                logger.exception(
                    "detect relink: raw message %s[%d]@%d could not be derived again for partition %d",
                    raw_topic,
                    record.partition,
                    record.offset,
                    partition,
                )
                return
            if not detected.redelivered:
                applied += 1
                await emit(detected)
                # The lost envelope never reached the events topic, so the store never archived its
                # events (backtests read them): send the derived one. This stream skips it as applied
                # when it comes back (its source is at or below the mark); the store keeps an event
                # once (by id), also if the lost original arrives after all.
                await self.rt.events.send(value=envelope, partition=partition)

        try:
            await replay_range(
                self.rt,
                raw_topic,
                missing.raw_partition,
                missing.first,
                missing.last + 1,
                derive,
                "detect-relink",
                timeout_s=RELINK_TIMEOUT_S,
            )
        except Exception:
            logger.exception(
                "detect relink failed: raw %s[%d] offsets %d..%d for %s[%d]@%d; applying that message without them",
                raw_topic,
                missing.raw_partition,
                missing.first,
                missing.last,
                events_topic,
                partition,
                offset,
            )
        self.repaired += applied
        metrics.ENVELOPES_REDERIVED.inc(applied)
        logger.warning(
            "detect relink: a lost envelope before %s[%d]@%d; raw %s[%d] offsets %d..%d read again, "
            "%d envelope(s) applied in order, seconds=%.2f",
            events_topic,
            partition,
            offset,
            raw_topic,
            missing.raw_partition,
            missing.first,
            missing.last,
            applied,
            time.perf_counter() - began,
        )
        return applied
