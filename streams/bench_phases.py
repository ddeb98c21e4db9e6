"""The throughput phases of `cityops bench` and what every phase shares (see ``streams.bench``).

The latency phase is in ``streams.bench_latency``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

from rules.pack import LoadedPack
from streams.bench_data import BenchError, Event
from streams.bench_naive import CONTROL_KEY, WARMUP
from streams.procs import Child, spawn
from streams.security import aiokafka_options
from streams.settings import Settings
from streams.topics import create_topics

logger = logging.getLogger(__name__)


@dataclass
class BenchOptions:
    events: int = 100_000
    batch: int = 500
    zones: int | None = None
    rules: int | None = None
    rate: float = 5000.0
    latency_seconds: float = 20.0
    alerts: bool = True
    run_dir: Path = Path("var/bench")
    seed: int = 1
    timeout_s: float = 900.0
    #: rounds of the three throughput phases (raw, naive, cityops in turn); medians are reported
    repeat: int = 1


@dataclass
class Run:
    """One benchmark run: its settings, directory, broker and every child process it started."""

    settings: Settings
    opts: BenchOptions
    pack: LoadedPack
    events: list[Event]
    replayed: dict[str, int]
    markers: set[str]
    rule_of: dict[str, str] = field(default_factory=dict)  # incident id -> rule id (replay's and seen)
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    children: list[Child] = field(default_factory=list)
    pids: list[int] = field(default_factory=list)
    broker_pid: int = 0
    #: the round of the throughput phases (``BenchOptions.repeat``): each has its own topics and data dir
    round: int = 0

    @property
    def logs(self) -> Path:
        return self.opts.run_dir / "logs"

    def spawn(self, name: str, argv: list[str], settings: Settings) -> Child:
        child = spawn(name, argv, settings.to_env(), self.logs)
        self.children.append(child)
        self.pids.append(child.proc.pid)
        return child

    def stop(self, child: Child) -> None:
        child.stop(grace=10)
        if child in self.children:
            self.children.remove(child)

    def check_alive(self) -> None:
        for child in self.children:
            if not child.alive():
                raise BenchError(f"{child.name} exited with code {child.proc.returncode} (see {child.log})")

    def child_settings(self, phase: str, *, clock: str = "event") -> Settings:
        s = self.settings.model_copy(deep=True)
        name = f"{phase}-r{self.round}" if self.round else phase
        s.kafka.topic_prefix = f"bench-{self.tag}-{name}"
        s.kafka.app_id = f"bench-{self.tag}-{name}"
        s.worker.data_dir = self.opts.run_dir / "faust" / name
        s.worker.clock = clock  # type: ignore[assignment]
        s.log_level = "INFO"
        return s


# -- helpers shared by the phases ------------------------------------------------------------------


def create_plain_topics(settings: Settings, names: list[str]) -> None:
    """Create topics with the configured partitions (never left to broker auto-creation)."""
    admin = KafkaAdminClient(client_id="cityops-bench", request_timeout_ms=5000, **settings.kafka.client_options())
    try:
        admin.create_topics([NewTopic(n, settings.kafka.partitions, settings.kafka.replication_factor) for n in names])
    finally:
        admin.close()


def producer(settings: Settings, **extra: Any) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        client_id="cityops-bench", max_request_size=16 * 2**20, **aiokafka_options(settings.kafka), **extra
    )


async def reader(settings: Settings, topics: list[str]) -> AIOKafkaConsumer:
    """A consumer of every partition of ``topics`` from the beginning (no group)."""
    consumer = AIOKafkaConsumer(
        client_id="cityops-bench-reader",
        enable_auto_commit=False,
        group_id=None,
        fetch_max_wait_ms=20,
        max_partition_fetch_bytes=16 * 2**20,
        **aiokafka_options(settings.kafka),
    )
    await consumer.start()
    consumer.assign([TopicPartition(t, p) for t in topics for p in range(settings.kafka.partitions)])
    await consumer.seek_to_beginning()
    return consumer


async def wait_for(
    run: Run,
    what: str,
    done: Callable[[], bool],
    timeout: float,
    progress: Callable[[], str] | None = None,
    *,
    required: bool = True,
) -> bool:
    """Poll ``done`` every 10 ms; log progress every 5 s; fail when a child died or after ``timeout``.

    With ``required=False`` a timeout returns False instead of raising.
    """
    began = last = time.monotonic()
    while not done():
        now = time.monotonic()
        if now - began > timeout:
            if not required:
                return False
            raise BenchError(f"timed out after {timeout:.0f}s waiting for {what} (logs in {run.logs})")
        if now - last >= 5.0:
            last = now
            logger.info("bench waiting for %s elapsed_s=%.0f %s", what, now - began, progress() if progress else "")
        run.check_alive()
        await asyncio.sleep(0.01)
    return True


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU seconds used by some processes (and this one) between ``start`` and ``stop``."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.began = {name: cpu_seconds(pid) for name, pid in pids.items()}
        self.began_self = time.process_time()
        self.used: dict[str, float] = {}

    def stop(self) -> dict[str, float]:
        self.used = {name: round(cpu_seconds(pid) - self.began[name], 2) for name, pid in self.pids.items()}
        self.used["bench"] = round(time.process_time() - self.began_self, 2)
        return self.used


def percentiles(samples: list[float]) -> dict[str, float | int | None]:
    """p50, p95, p99 and max in milliseconds (nearest rank), and the sample count."""
    ordered = sorted(samples)

    def rank(q: float) -> float | None:
        if not ordered:
            return None
        return round(ordered[min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.999999) - 1))] * 1000, 1)

    return {
        "samples": len(ordered),
        "p50_ms": rank(0.50),
        "p95_ms": rank(0.95),
        "p99_ms": rank(0.99),
        "max_ms": round(ordered[-1] * 1000, 1) if ordered else None,
    }


def subject_key(event: Event) -> bytes:
    """The naive producer's key: one subject's events stay in order in one partition."""
    kind = event.get("kind")
    subject = event.get("sensor_id") if kind == "reading" else event.get("object_id") if kind == "track" else None
    return str(subject or event.get("id")).encode()


def chunks(items: list[Event], size: int) -> Iterator[list[Event]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


async def produce_all(prod: AIOKafkaProducer, topic: str, items: list[tuple[bytes, bytes]]) -> None:
    """Send (key, value) pairs and wait until the broker has every one."""
    pending = []
    for key, value in items:
        pending.append(await prod.send(topic, value, key=key))
        if len(pending) >= 10_000:
            await asyncio.gather(*pending)
            pending.clear()
    await asyncio.gather(*pending)


def compare(seen: dict[str, int], replayed: dict[str, int], rule_of: dict[str, str]) -> dict[str, Any]:
    """Incident ids and final revisions against replay's (with the rules of the ones that differ)."""
    missing = replayed.keys() - seen.keys()
    extra = seen.keys() - replayed.keys()
    differs = {k for k, v in seen.items() if k in replayed and replayed[k] != v}
    out: dict[str, Any] = {
        "incidents": len(seen),
        "incidents_equal_replay": seen == replayed,
        "missing": len(missing),
        "extra": len(extra),
        "revision_differs": len(differs),
    }
    if missing or extra or differs:
        out["differing_rules"] = dict(Counter(rule_of.get(k, "?") for k in missing | extra | differs))
    return out


def _keep(latest: dict[str, int], rule_of: dict[str, str], doc: dict[str, Any]) -> None:
    if doc["revision"] >= latest.get(doc["id"], 0):
        latest[doc["id"]] = doc["revision"]
    rule_of.setdefault(doc["id"], doc["rule_id"])


# -- 1. raw aiokafka -------------------------------------------------------------------------------


async def raw_phase(run: Run) -> dict[str, Any]:
    """Produce the events one per message, then consume them all with a plain consumer that parses JSON."""
    s = run.child_settings("raw")
    topic = s.kafka.topic("events.single")
    create_plain_topics(s, [topic])
    values = [(subject_key(e), orjson.dumps(e)) for e in run.events]
    prod = producer(s, linger_ms=5)
    await prod.start()
    try:
        began = time.perf_counter()
        await produce_all(prod, topic, values)
        produced = time.perf_counter() - began
    finally:
        await prod.stop()
    consumer = await reader(s, [topic])
    try:
        count = 0
        began = time.perf_counter()
        deadline = time.monotonic() + run.opts.timeout_s
        while count < len(values):
            batches: Any = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            for records in batches.values():
                for record in records:
                    orjson.loads(record.value)
                    count += 1
            if time.monotonic() > deadline:
                raise BenchError(f"raw consumer read {count} of {len(values)} messages of {topic}")
        seconds = time.perf_counter() - began
    finally:
        await consumer.stop()
    logger.info("bench raw done events_per_s=%.0f produce_events_per_s=%.0f", count / seconds, count / produced)
    return {
        "events_per_s": round(count / seconds),
        "seconds": round(seconds, 3),
        "produce_events_per_s": round(count / produced),
        "what": "one event per message; a plain aiokafka consumer (no group) reads every partition and parses "
        "each value with orjson; consumption only (the topic was filled first)",
    }


# -- 2. naive Faust --------------------------------------------------------------------------------


@dataclass
class _NaiveOutput:
    ready: bool = False
    progress: int = 0
    done: dict[str, Any] | None = None
    done_at: float = 0.0
    snapshots: int = 0
    latest: dict[str, int] = field(default_factory=dict)
    rule_of: dict[str, str] = field(default_factory=dict)


async def _follow_naive(consumer: AIOKafkaConsumer, out: _NaiveOutput) -> None:
    while True:
        batches: Any = await consumer.getmany(timeout_ms=200)
        now = time.perf_counter()
        for records in batches.values():
            for record in records:
                doc = orjson.loads(record.value)
                if record.key != CONTROL_KEY:
                    out.snapshots += 1
                    _keep(out.latest, out.rule_of, doc)
                elif doc["control"] == "ready":
                    out.ready = True
                elif doc["control"] == "progress":
                    out.progress = max(out.progress, int(doc["events"]))
                elif doc["control"] == "done":
                    out.done, out.done_at = doc, now


async def naive_phase(run: Run) -> dict[str, Any]:
    """The naive agent in a child process, warmed up, then fed the events one per message."""
    s = run.child_settings("naive")
    source, sink = s.kafka.topic("naive.in"), s.kafka.topic("naive.out")
    create_plain_topics(s, [source, sink])
    out = _NaiveOutput(rule_of=run.rule_of)
    consumer = await reader(s, [sink])
    follower = asyncio.create_task(_follow_naive(consumer, out))
    child = run.spawn("naive", [sys.executable, "-m", "streams.bench_naive", source, sink, str(len(run.events))], s)
    prod = producer(s, linger_ms=5)
    await prod.start()
    try:
        await prod.send_and_wait(source, WARMUP, key=b"warmup")
        await wait_for(run, "the naive agent to join its group", lambda: out.ready, 180)
        values = [(subject_key(e), orjson.dumps(e)) for e in run.events]
        logger.info("bench naive started; producing %d events one per message", len(values))
        cpu = CpuMeter({"naive": child.proc.pid, "broker": run.broker_pid})
        began = time.perf_counter()
        await produce_all(prod, source, values)
        await wait_for(
            run, "the naive agent", lambda: out.done is not None, run.opts.timeout_s, lambda: f"events={out.progress}"
        )
        seconds = out.done_at - began
        cpu.stop()
        assert out.done is not None
        sent = int(out.done["sent"])
        await wait_for(run, "the naive agent's incidents", lambda: out.snapshots >= sent, 60)
    finally:
        await prod.stop()
        follower.cancel()
        await consumer.stop()
        run.stop(child)
    rate = len(run.events) / seconds
    logger.info("bench naive done events_per_s=%.0f seconds=%.1f", rate, seconds)
    result: dict[str, Any] = {
        "events_per_s": round(rate),
        "seconds": round(seconds, 3),
        "cpu_s": cpu.used,
        **compare(out.latest, run.replayed, run.rule_of),
        "late": out.done["late"],
        "what": "one Faust agent, one event per message (keyed by subject): pydantic decode, enrich, "
        "Engine.process on a one-event batch with a dict state, one send per incident snapshot; timed from "
        "the first produce until it has processed the last event (it was warmed up first)",
    }
    if not result["incidents_equal_replay"]:
        result["note"] = (
            "the naive agent sees the events in per-partition order (each subject in order, the set "
            "interleaved across partitions), so late events or watermark-dependent rules may differ from replay"
        )
    return result


# -- 3. cityops ------------------------------------------------------------------------------------


@dataclass
class _Incidents:
    latest: dict[str, int] = field(default_factory=dict)
    rule_of: dict[str, str] = field(default_factory=dict)
    markers: set[str] = field(default_factory=set)
    markers_at: float = 0.0
    dead: int = 0
    snapshots: int = 0


async def _follow_incidents(
    consumer: AIOKafkaConsumer, out: _Incidents, incidents_topic: str, wanted: set[str]
) -> None:
    while True:
        batches: Any = await consumer.getmany(timeout_ms=200)
        now = time.perf_counter()
        for tp, records in batches.items():
            if tp.topic != incidents_topic:
                out.dead += len(records)
                continue
            for record in records:
                doc = orjson.loads(record.value)
                out.snapshots += 1
                _keep(out.latest, out.rule_of, doc)
                hit = wanted.intersection(doc["evidence"]["event_ids"])
                if hit and not hit <= out.markers:
                    out.markers |= hit
                    if out.markers == wanted:
                        out.markers_at = now


async def cityops_phase(run: Run) -> dict[str, Any]:
    """The real worker, warmed up, fed envelopes of ``batch`` events; done when every marker fired."""
    s = run.child_settings("cityops", clock="event")  # synthetic event times: only they move the watermark
    kafka = s.kafka
    create_topics(kafka)
    out = _Incidents(rule_of=run.rule_of)
    consumer = await reader(s, [kafka.incidents_topic, kafka.deadletter_topic])
    follower = asyncio.create_task(_follow_incidents(consumer, out, kafka.incidents_topic, run.markers))
    child = run.spawn("worker", ["cityops", "worker"], s)
    prod = producer(s, linger_ms=5)
    await prod.start()
    try:
        # a record the worker dead-letters: proves it has joined its group and consumes
        await prod.send_and_wait(kafka.raw_topic, b'{"bench": "warm-up"}', key=b"bench")
        await wait_for(run, "the worker to join its group", lambda: out.dead >= 1, 180)
        envelopes = [orjson.dumps({"events": c}) for c in chunks(run.events, run.opts.batch)]
        logger.info("bench cityops worker started; producing %d envelopes", len(envelopes))
        cpu = CpuMeter({"worker": child.proc.pid, "broker": run.broker_pid})
        began = time.perf_counter()
        await produce_all(prod, kafka.raw_topic, [(b"bench", v) for v in envelopes])
        await wait_for(
            run,
            "the worker",
            lambda: out.markers == run.markers,
            run.opts.timeout_s,
            lambda: f"markers={len(out.markers)}/{len(run.markers)} incidents={len(out.latest)}",
        )
        seconds = out.markers_at - began
        cpu.stop()
        # time-driven incidents come with the worker's next tick: wait for them, but outside the timing
        complete = await wait_for(
            run, "replay's incidents", lambda: out.latest == run.replayed, 2 * s.worker.tick_s + 5, required=False
        )
        equal_at = time.perf_counter() - began if complete else None
    finally:
        await prod.stop()
        follower.cancel()
        await consumer.stop()
        run.stop(child)
    covered = await markers_cover(s, run.markers)
    rate = len(run.events) / seconds
    logger.info("bench cityops done events_per_s=%.0f seconds=%.2f complete=%s", rate, seconds, complete)
    return {
        "events_per_s": round(rate),
        "seconds": round(seconds, 3),
        "incidents_equal_replay_after_s": round(equal_at, 3) if equal_at is not None else None,
        "markers_cover_partitions": covered,
        "cpu_s": cpu.used,
        **compare(out.latest, run.replayed, run.rule_of),
        "incident_snapshots": out.snapshots,
        "dead_letters": out.dead - 1,
        "what": f"`cityops worker` (ingest + detect) fed envelopes of {run.opts.batch} events; timed from the "
        "first produce until a marker event placed last in every events-topic partition has opened its incident",
    }


async def markers_cover(settings: Settings, marker_ids: set[str]) -> bool:
    """Whether every events-topic partition that carried events also carried a marker.

    Checks the completion signal after the fact, without assuming the envelope format: a partition
    carried events when a message mentions ``"kind"`` (ticks do not), and a marker when it holds a
    marker's id.
    """
    consumer = await reader(settings, [settings.kafka.events_topic])
    with_events: set[int] = set()
    with_marker: set[int] = set()
    needles = [m.encode() for m in marker_ids]
    try:
        idle_since = time.monotonic()
        while time.monotonic() - idle_since < 5.0:  # the markers come last: stop once each is found
            batches: Any = await consumer.getmany(timeout_ms=500, max_records=5000)
            if batches:
                idle_since = time.monotonic()
            for tp, records in batches.items():
                for record in records:
                    value = record.value or b""
                    if b'"kind"' in value:
                        with_events.add(tp.partition)
                    if any(n in value for n in needles):
                        with_marker.add(tp.partition)
            if with_marker and with_events <= with_marker and len(with_marker) == len(marker_ids):
                break
    finally:
        await consumer.stop()
    if not with_events <= with_marker:
        logger.warning(
            "bench markers missed events partitions %s: the cityops rate may be too high", with_events - with_marker
        )
    return with_events <= with_marker
