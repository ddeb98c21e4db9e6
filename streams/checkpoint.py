"""Checkpoints of the worker's rule state and offsets, so a restart replays only the tail.

Without a changelog, rule state is a pure function of the events topic: the detect agent's gap
guard re-applies a partition's whole history at start (``streams/agents/gaps.py``), and the
ingest agent re-routes the raw topic's. That is correct but its cost grows with retention; a
worker killed every 20 s during a long run spends each life catching up.

A checkpoint is written from inside the detect agent, between two messages, every
``worker.checkpoint_interval_s``, and also at the first chance after a catch-up replay of a gap
(``request``): a worker killed every 20 s has only a few seconds between joining its group and
the next kill, and the progress of its replays must outlive it:

1. the rule state, the event-time watermark, detect's next offsets per events partition and
   ingest's finished offsets per raw partition are taken (one consistent cut: the detect agent is
   the only writer of the state);
2. the producer is flushed, so every events envelope and incident that cut depends on is in the
   broker;
3. the file is written atomically (temporary file, fsync, rename).

A restarted worker restores the checkpoint of exactly the partition sets it was assigned, then
both agents replay only what follows the checkpoint's offsets. Re-processing the messages between
the checkpoint and the crash is harmless: ingest output carries its raw position and detect is
idempotent per source position. Any other assignment (a different worker count, a first start)
rebuilds from offset 0 as before. State that belongs to another worker's partitions is never
loaded, because a checkpoint is only used for the same sets it was written for.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Iterable, Iterator, MutableMapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import orjson
from pydantic import BaseModel, Field, ValidationError

logger = logging.getLogger(__name__)

FORMAT = 1


class Guard(Protocol):
    """What a checkpoint needs of an agent's gap guard."""

    expected: dict[int, int]
    done: dict[int, int]
    stamps: dict[int, int]


class Checkpoint(BaseModel):
    """One consistent cut of a worker: what it had applied, and up to where."""

    format: int = FORMAT
    app_id: str
    written_at: datetime
    pack_digest: str
    raw_partitions: list[int]
    events_partitions: list[int]
    ingest_done: dict[int, int] = Field(description="raw partition -> first offset not yet routed and flushed")
    detect_next: dict[int, int] = Field(description="events partition -> first offset not applied to the state")
    ingest_stamps: dict[int, int] = Field(
        default_factory=dict, description="raw partition -> Kafka timestamp (ms) of the message before ingest_done"
    )
    detect_stamps: dict[int, int] = Field(
        default_factory=dict, description="events partition -> Kafka timestamp (ms) of the message before detect_next"
    )
    watermark_ms: int | None
    state: dict[str, Any]


def file_name(raw: Iterable[int], events: Iterable[int]) -> str:
    """One file per pair of assigned partition sets: ``checkpoint-r0.1-e0.1.json``."""
    return "checkpoint-r{}-e{}.json".format(".".join(map(str, sorted(raw))), ".".join(map(str, sorted(events))))


def write_file(path: Path, data: bytes) -> None:
    """Write atomically: a reader (or a kill mid-write) sees the old file or the new one, never half."""
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def read_file(path: Path) -> Checkpoint | None:
    """The checkpoint at ``path``; None (and a warning) when it is missing, unreadable or foreign."""
    if not path.exists():
        return None
    try:
        cp = Checkpoint.model_validate_json(path.read_bytes())
    except (OSError, ValidationError, ValueError) as exc:
        logger.warning("checkpoint ignored path=%s reason=%s", path, exc)
        return None
    if cp.format != FORMAT:
        logger.warning("checkpoint ignored path=%s reason=format %d, expected %d", path, cp.format, FORMAT)
        return None
    return cp


class Checkpointer:
    """Writes and restores one worker's checkpoints (``worker.checkpoint_interval_s``; 0 turns them off)."""

    def __init__(self, directory: Path, app_id: str, interval_s: float) -> None:
        self.directory = directory
        self.app_id = app_id
        self.interval_s = interval_s
        self.guards: dict[str, Guard] = {}
        self.assigned: tuple[frozenset[int], frozenset[int]] | None = None
        self.last_written = time.monotonic()
        self.requested = False  # a cut is due at the next chance, whatever the interval (``request``)
        self.restored = False
        self.written = 0
        self.send_failed: str | None = None
        self.retrying = 0  # failed sends being retried: no cut may promise their sources meanwhile
        # Closed while a rebalance decides whether to restore (it asks the broker, ``matches_topics``).
        # Faust's recovery resumes the partitions meanwhile, so without it the agents applied
        # messages from offset 0 and a cut of those partitions alone replaced the good checkpoint,
        # which the restore then loaded on top: each life of a worker killed every 20 s rebuilt
        # more from offset 0 than the last, until it made no progress (tests/faults/test_worker_kill.py).
        self._decided = asyncio.Event()
        self._decided.set()

    @property
    def enabled(self) -> bool:
        return self.interval_s > 0

    def track(self, stage: str, guard: Guard) -> None:
        """Register the gap guard of the ``ingest`` or ``detect`` agent."""
        self.guards[stage] = guard

    def on_assigned(
        self,
        raw: Iterable[int],
        events: Iterable[int],
        state: MutableMapping[str, Any],
        engine: Any,
    ) -> Checkpoint | None:
        """``assign``, then ``restore`` the ``candidate`` (without checking it against the topics)."""
        self.assign(raw, events)
        cp = self.candidate(state)
        return self.restore(cp, state, engine) if cp is not None else None

    def assign(self, raw: Iterable[int], events: Iterable[int]) -> None:
        """Record the partitions this worker now owns (every rebalance)."""
        self.assigned = (frozenset(raw), frozenset(events))

    def candidate(self, state: MutableMapping[str, Any]) -> Checkpoint | None:
        """The checkpoint of the current assignment, if this worker has applied nothing yet.

        Restoring is for a fresh start only: once the state holds anything, or either agent has
        handled a message, a later rebalance rebuilds new partitions from offset 0 (the gap guard).
        """
        if self.assigned is None or not self.enabled or self.restored:
            return None
        if state or any(g.expected for g in self.guards.values()):
            return None
        cp = read_file(self.directory / file_name(*self.assigned))
        if cp is None:
            return None
        if cp.app_id != self.app_id or set(cp.raw_partitions) != self.assigned[0]:
            logger.warning("checkpoint ignored app_id=%s reason=written for app_id=%s", self.app_id, cp.app_id)
            return None
        return cp

    def restore(self, cp: Checkpoint, state: MutableMapping[str, Any], engine: Any) -> Checkpoint:
        """Load ``cp``: the state, the watermark, and where both agents go on from."""
        state.update(cp.state)
        if cp.watermark_ms is not None and (engine.watermark_ms is None or cp.watermark_ms > engine.watermark_ms):
            engine.watermark_ms = cp.watermark_ms
        # what the checkpoint promises stays promised: a partition with no new message in this life
        # is carried into the next checkpoint as it was
        for stage, offsets, stamps in (
            ("ingest", cp.ingest_done, cp.ingest_stamps),
            ("detect", cp.detect_next, cp.detect_stamps),
        ):
            if stage in self.guards:
                guard = self.guards[stage]
                guard.expected.update(offsets)
                guard.done.update(offsets)
                guard.stamps.update(stamps)
        self.restored = True
        logger.warning(
            "checkpoint restored written_at=%s entries=%d ingest_from=%s detect_from=%s pack_digest=%s",
            cp.written_at.isoformat(),
            len(cp.state),
            dict(sorted(cp.ingest_done.items())),
            dict(sorted(cp.detect_next.items())),
            cp.pack_digest,
        )
        return cp

    @contextmanager
    def deciding(self) -> Iterator[None]:
        """While a restore is decided: ``decided()`` waits and no cut is due."""
        self._decided.clear()
        try:
            yield
        finally:
            self._decided.set()

    @property
    def restoring(self) -> bool:
        """Whether a rebalance is deciding on a restore now."""
        return not self._decided.is_set()

    async def decided(self) -> None:
        """Return once no restore is being decided (at once, except at a fresh start's assignment).

        Both agents await this before each message, and the ingest sweep before it repairs.
        """
        if not self._decided.is_set():
            await self._decided.wait()

    def due(self) -> bool:
        return (
            self._decided.is_set()
            and self.enabled
            and self.send_failed is None
            and self.retrying == 0
            and self.assigned is not None
            and (self.requested or time.monotonic() - self.last_written >= self.interval_s)
        )

    def request(self) -> None:
        """Make a cut due at the next chance (after a catch-up replay: keep its progress)."""
        self.requested = True

    def on_send_failed(self, topic: str, exc: BaseException, *, retrying: bool = False) -> None:
        """A record was not delivered: no cut may promise the messages it came from.

        With ``retrying``, checkpoints pause until ``on_send_retried``. Without it (or when the
        retries give up) they stop: the last checkpoint stays the one a restart resumes from, and
        the worker goes on (a broker restart fails sends too, and producers resend then).
        """
        if retrying:
            self.retrying += 1
            return
        if self.send_failed is None and self.enabled:
            logger.error(
                "checkpoints stopped until restart: a send to topic=%s failed (%s); a restart resumes "
                "from the last checkpoint",
                topic,
                exc,
            )
        self.send_failed = topic

    def on_send_retried(self, topic: str, delivered: bool) -> None:
        """A retried record was delivered, or its retries gave up (which stops checkpoints)."""
        self.retrying = max(0, self.retrying - 1)
        if not delivered:
            self.on_send_failed(topic, RuntimeError("retries exhausted"))

    def cut(self, state: MutableMapping[str, Any], engine: Any, pack_digest: str) -> tuple[Path, bytes] | None:
        """Serialise a consistent cut now (call between two detect messages): the file and its bytes."""
        if self.assigned is None:
            return None
        raw, events = self.assigned
        ingest = self.guards.get("ingest")
        detect = self.guards.get("detect")
        cp = {
            "format": FORMAT,
            "app_id": self.app_id,
            "written_at": datetime.now(UTC).isoformat(),
            "pack_digest": pack_digest,
            "raw_partitions": sorted(raw),
            "events_partitions": sorted(events),
            "ingest_done": {str(p): o for p, o in (ingest.done if ingest else {}).items() if p in raw},
            "detect_next": {str(p): o for p, o in (detect.expected if detect else {}).items() if p in events},
            "ingest_stamps": {str(p): t for p, t in (ingest.stamps if ingest else {}).items() if p in raw},
            "detect_stamps": {str(p): t for p, t in (detect.stamps if detect else {}).items() if p in events},
            "watermark_ms": engine.watermark_ms,
            "state": dict(state),
        }
        try:
            data = orjson.dumps(cp, option=orjson.OPT_SERIALIZE_NUMPY)
        except TypeError as exc:  # a value JSON cannot hold: say so, keep the last checkpoint, go on
            self.last_written, self.requested = time.monotonic(), False
            logger.error("checkpoint skipped reason=state not serialisable: %s", exc)
            return None
        return self.directory / file_name(raw, events), data

    async def write(self, cut: tuple[Path, bytes], flush: Any) -> None:
        """Flush the producer (``flush``: an awaitable factory), then write the cut's file off the loop."""
        path, data = cut
        started = time.perf_counter()
        await flush()
        await asyncio.sleep(0)  # let the delivery callbacks of what the flush completed run first
        self.last_written, self.requested = time.monotonic(), False
        if self.send_failed is not None or self.retrying:  # a record the cut promises is not delivered
            logger.warning("checkpoint not written reason=a send failed while it was cut path=%s", path.name)
            return
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            await asyncio.to_thread(write_file, path, data)
        except OSError as exc:  # a full or read-only disk must not stop the stream; the last file stays
            logger.error("checkpoint not written path=%s reason=%s", path, exc)
            return
        self.written += 1
        logger.info(
            "checkpoint written path=%s bytes=%d seconds=%.3f", path.name, len(data), time.perf_counter() - started
        )


async def matches_topics(
    kafka: Any, cp: Checkpoint, raw_topic: str, events_topic: str, timeout_s: float = 10.0
) -> bool:
    """Whether the topics still hold what ``cp`` was cut from: the last message it applied per partition.

    A broker that lost its data (the dev broker keeps it in memory) or topics deleted and created
    again start their offsets at 0: the state of a checkpoint would then skip new messages as
    applied before. So the message before each promised offset must exist and have the Kafka
    timestamp the checkpoint recorded. (End offsets cannot decide this: Tansu reports them wrong.)
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from streams.security import aiokafka_options

    wanted: dict[Any, tuple[int, int | None]] = {}
    for topic, offsets, stamps in (
        (raw_topic, cp.ingest_done, cp.ingest_stamps),
        (events_topic, cp.detect_next, cp.detect_stamps),
    ):
        for partition, offset in offsets.items():
            if offset > 0:
                wanted[TopicPartition(topic, partition)] = (offset - 1, stamps.get(partition))
    if not wanted:
        return True
    consumer = AIOKafkaConsumer(
        enable_auto_commit=False, group_id=None, auto_offset_reset="none", **aiokafka_options(kafka)
    )
    await consumer.start()
    found: dict[Any, tuple[int, int]] = {}
    try:
        consumer.assign(list(wanted))
        for tp, (offset, _) in wanted.items():
            consumer.seek(tp, offset)
        deadline = time.monotonic() + timeout_s
        while len(found) < len(wanted) and time.monotonic() < deadline:
            try:
                batches = await consumer.getmany(timeout_ms=500)
            except Exception as exc:  # OffsetOutOfRange and its kin: the offset is not there any more
                logger.warning("checkpoint ignored reason=its offsets are not in the topics (%s)", exc)
                return False
            for tp, records in batches.items():
                if tp not in found and records:
                    found[tp] = (records[0].offset, records[0].timestamp)
                    consumer.pause(tp)
    finally:
        await consumer.stop()
    for tp, (offset, stamp) in wanted.items():
        got = found.get(tp)
        if got is None or got[0] != offset or (stamp is not None and got[1] != stamp):
            logger.warning(
                "checkpoint ignored reason=topic %s[%d] does not hold the message it applied at offset %d "
                "(found %s): the topics were recreated or lost their data",
                tp.topic,
                tp.partition,
                offset,
                got,
            )
            return False
    return True
