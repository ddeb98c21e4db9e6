"""Checkpoints of rule state and offsets: a restored worker continues exactly where the cut was taken.

The pipeline here is the worker's own (``rules.pipeline.Pipeline``: ingest, route, detect), fed
from lists that stand in for the raw and events topics, so a restart can be cut at any message.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import orjson
import pytest
from stack import checkpointing_runtime, make_settings, read_topic

from rules.engine import Engine
from rules.model import Incident
from rules.pack import load_pack
from rules.pipeline import Pipeline, encode_enriched, encode_tick
from streams.bench_data import wuhan_events
from streams.broker import DevBroker
from streams.checkpoint import Checkpointer, file_name, read_file
from streams.settings import Settings, default_pack

PARTITIONS = 4
ENVELOPE = 250


class Guard:
    def __init__(self) -> None:
        self.expected: dict[int, int] = {}
        self.done: dict[int, int] = {}
        self.stamps: dict[int, int] = {}


def topics(n: int) -> list[list[bytes]]:
    """The events topic's partitions after ingest routed ``n`` Wuhan events (with ticks among them)."""
    pipeline = Pipeline(Engine(load_pack(default_pack())), partitions=PARTITIONS)
    events = wuhan_events(n, seed=5)
    parts: list[list[bytes]] = [[] for _ in range(PARTITIONS)]
    for offset, start in enumerate(range(0, len(events), ENVELOPE)):
        raw = orjson.dumps({"events": events[start : start + ENVELOPE]})
        for partition, items in pipeline.ingest(raw, "raw", 0, offset).routed.items():
            parts[partition].append(encode_enriched(items, (0, offset)))
        if offset % 7 == 0:  # ticks: time-driven rules (silence) advance between messages
            for p in range(PARTITIONS):
                parts[p].append(encode_tick(0))
    return parts


def order(parts: list[list[bytes]]) -> list[tuple[int, int]]:
    """Round-robin over partitions, as one consumer of all of them would see them."""
    out: list[tuple[int, int]] = []
    for i in range(max(len(p) for p in parts)):
        out.extend((p, i) for p in range(PARTITIONS) if i < len(parts[p]))
    return out


def detect(pipeline: Pipeline, state: dict[str, Any], parts: list[list[bytes]], p: int, o: int) -> list[Incident]:
    return pipeline.detect(parts[p][o], state, "events", p, o, check_late=False).incidents


def final(incidents: list[Incident]) -> dict[str, dict[str, Any]]:
    latest: dict[str, Incident] = {}
    for inc in incidents:
        if inc.id not in latest or inc.revision >= latest[inc.id].revision:
            latest[inc.id] = inc
    return {k: v.model_dump(mode="json") for k, v in latest.items()}


@pytest.mark.parametrize("cut_share", [0.1, 0.5, 0.9])
def test_a_restored_checkpoint_continues_like_an_uninterrupted_run(tmp_path: Path, cut_share: float) -> None:
    parts = topics(12_000)
    sequence = order(parts)
    pack = load_pack(default_pack())

    whole = Pipeline(Engine(pack), partitions=PARTITIONS)
    state: dict[str, Any] = {}
    expected = final([inc for p, o in sequence for inc in detect(whole, state, parts, p, o)])
    assert len(expected) > 20, "the run makes incidents of many rules"

    # first life: up to the cut, then a checkpoint, then a few more messages that the crash loses
    cut_at = int(len(sequence) * cut_share)
    first = Pipeline(Engine(pack), partitions=PARTITIONS)
    state1: dict[str, Any] = {}
    guard1 = Guard()
    writer = Checkpointer(tmp_path, "app", 5.0)
    writer.track("detect", guard1)
    writer.on_assigned({0}, range(PARTITIONS), state1, first.engine)
    emitted: list[Incident] = []
    for p, o in sequence[:cut_at]:
        emitted += detect(first, state1, parts, p, o)
        guard1.expected[p] = o + 1
    cut = writer.cut(state1, first.engine, "digest")
    assert cut is not None
    watermark_at_cut = first.engine.watermark_ms

    async def flushed() -> None:
        return None

    asyncio.run(writer.write(cut, flushed))
    lost = sequence[cut_at : cut_at + 40]
    for p, o in lost:
        emitted += detect(first, state1, parts, p, o)

    # second life: a new engine and an empty state, restored from the file
    second = Pipeline(Engine(pack), partitions=PARTITIONS)
    state2: dict[str, Any] = {}
    guard2 = Guard()
    reader = Checkpointer(tmp_path, "app", 5.0)
    reader.track("detect", guard2)
    cp = reader.on_assigned({0}, range(PARTITIONS), state2, second.engine)
    assert cp is not None and reader.restored
    assert second.engine.watermark_ms == watermark_at_cut is not None
    # the consumer resumes at the committed offsets (here: before the lost messages and some before
    # the cut); the gap guard starts from the checkpoint's offsets: re-delivery is idempotent
    resume = {p: max(0, o - 3) for p, o in guard2.expected.items()}
    tail = [(p, o) for p, o in sequence if o >= resume.get(p, 0)]
    for p, o in tail:
        emitted += detect(second, state2, parts, p, o)
    assert final(emitted) == expected


def test_only_the_same_partition_sets_restore(tmp_path: Path) -> None:
    engine = Engine(load_pack(default_pack()))
    writer = Checkpointer(tmp_path, "app", 1.0)
    writer.track("detect", Guard())
    writer.on_assigned([0, 1], [0, 1], {}, engine)
    cut = writer.cut({"k": {"n": 1}}, engine, "d")
    assert cut is not None and cut[0].name == file_name([1, 0], [0, 1]) == "checkpoint-r0.1-e0.1.json"

    async def flushed() -> None:
        return None

    asyncio.run(writer.write(cut, flushed))
    other = Checkpointer(tmp_path, "app", 1.0)
    assert other.on_assigned([0], [0], {}, engine) is None, "another worker count: rebuild from offset 0"
    busy = Checkpointer(tmp_path, "app", 1.0)
    state = {"x": {"n": 2}}
    assert busy.on_assigned([0, 1], [0, 1], state, engine) is None, "a worker with state never reloads"
    assert state == {"x": {"n": 2}}
    off = Checkpointer(tmp_path, "app", 0.0)
    assert off.on_assigned([0, 1], [0, 1], {}, engine) is None and not off.due()
    foreign = Checkpointer(tmp_path, "other-app", 1.0)
    assert foreign.on_assigned([0, 1], [0, 1], {}, engine) is None
    fresh: dict[str, Any] = {}
    again = Checkpointer(tmp_path, "app", 1.0)
    assert again.on_assigned([1, 0], [1, 0], fresh, engine) is not None and fresh == {"k": {"n": 1}}


def test_a_damaged_file_is_ignored_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / file_name([0], [0])
    path.write_bytes(b'{"format": 1, "app_id": "app", "state": {')
    with caplog.at_level(logging.WARNING):
        assert read_file(path) is None
    assert "checkpoint ignored" in caplog.text and path.name in caplog.text
    state: dict[str, Any] = {}
    cp = Checkpointer(tmp_path, "app", 1.0)
    assert cp.on_assigned([0], [0], state, Engine(load_pack(default_pack()))) is None and state == {}


def test_checkpoints_are_on_by_default_and_off_with_a_changelog(tmp_path: Path) -> None:
    from streams.app import build_runtime

    s = Settings()
    s.worker.data_dir = tmp_path
    assert s.worker.checkpoint_interval_s > 0
    assert build_runtime(s).checkpoints.enabled
    s.worker.state_changelog = True
    assert not build_runtime(s).checkpoints.enabled, "the changelog restores a table; no second copy"


def test_offsets_restored_are_carried_into_the_next_checkpoint(tmp_path: Path) -> None:
    """A life in which ingest gets no raw message must not forget how far the last life routed."""
    engine = Engine(load_pack(default_pack()))

    async def flushed() -> None:
        return None

    first = Checkpointer(tmp_path, "app", 1.0)
    ingest, detect = Guard(), Guard()
    first.track("ingest", ingest)
    first.track("detect", detect)
    first.on_assigned([0, 1], [0, 1], {}, engine)
    ingest.done.update({0: 40, 1: 17})
    ingest.stamps.update({0: 1_000, 1: 2_000})
    detect.expected.update({0: 90, 1: 12})
    cut = first.cut({"k": {"n": 1}}, engine, "d")
    assert cut is not None
    asyncio.run(first.write(cut, flushed))

    second = Checkpointer(tmp_path, "app", 1.0)
    ingest2, detect2 = Guard(), Guard()
    second.track("ingest", ingest2)
    second.track("detect", detect2)
    assert second.on_assigned([0, 1], [0, 1], {}, engine) is not None
    assert ingest2.expected == {0: 40, 1: 17} and detect2.expected == {0: 90, 1: 12}
    detect2.expected[1] = 15  # only detect's partition 1 moved in this life
    cut = second.cut({"k": {"n": 2}}, engine, "d")
    assert cut is not None
    doc = orjson.loads(cut[1])
    assert doc["ingest_done"] == {"0": 40, "1": 17}
    assert doc["ingest_stamps"] == {"0": 1_000, "1": 2_000}, "what verifies the promise is carried too"
    assert doc["detect_next"] == {"0": 90, "1": 15}


def _pending(value: bytes, partition: int = 1) -> Any:
    from faust.types.tuples import PendingMessage

    return PendingMessage(None, b"k", value, partition, None, None, "raw", "raw", None)


def test_a_failed_send_without_retries_is_counted_logged_and_stops_checkpoints(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A checkpoint written after a lost record would promise the message it came from."""
    from streams import metrics

    s = Settings()
    s.worker.data_dir = tmp_path
    rt, sensor = checkpointing_runtime(s, retry_s=0)
    assert rt.checkpoints.due()
    topic = s.kafka.events_topic
    before = metrics.SEND_ERRORS.labels(topic)._value.get()
    state = rt.app.sensors.on_send_initiated(None, topic, _pending(b"v"), 0, 10)
    with caplog.at_level(logging.ERROR):
        rt.app.sensors.on_send_error(None, RuntimeError("UnknownError"), state)
    assert metrics.SEND_ERRORS.labels(topic)._value.get() == before + 1
    assert f"send failed topic={topic} partition=1" in caplog.text and "checkpoints stopped" in caplog.text
    assert not rt.checkpoints.due() and sensor.runtime is rt and not sensor.pending


def test_retried_sends_pause_checkpoints_and_one_that_gives_up_stops_them(tmp_path: Path) -> None:
    cp = Checkpointer(tmp_path, "app", 0.001)
    cp.on_assigned([0], [0], {}, Engine(load_pack(default_pack())))
    cp.on_send_failed("t.events", RuntimeError("x"), retrying=True)
    cp.on_send_failed("t.incidents", RuntimeError("y"), retrying=True)
    assert not cp.due()
    cp.on_send_retried("t.events", delivered=True)
    assert not cp.due(), "one record is still being retried"
    cp.on_send_retried("t.incidents", delivered=True)
    assert cp.due()
    cp.on_send_failed("t.events", RuntimeError("x"), retrying=True)
    cp.on_send_retried("t.events", delivered=False)
    assert not cp.due() and cp.send_failed == "t.events", "a record given up on stops checkpoints for good"


def test_a_requested_cut_is_due_at_once_whatever_the_interval_and_only_once(tmp_path: Path) -> None:
    """After a catch-up replay (``replay_range`` requests one), a cut must not wait for the interval:
    a worker killed every 20 s otherwise lost each life's replays and replayed them again forever."""
    engine = Engine(load_pack(default_pack()))
    cp = Checkpointer(tmp_path, "app", 3600.0)
    cp.on_assigned([0], [0], {}, engine)
    assert not cp.due(), "an hour's interval: nothing due yet"
    cp.request()
    assert cp.due()
    cut = cp.cut({}, engine, "digest")
    assert cut is not None

    async def flush() -> None:
        return None

    asyncio.run(cp.write(cut, flush))
    assert cp.written == 1 and not cp.due(), "the request is spent by the cut"
    cp.request()
    cp.on_send_failed("t.events", RuntimeError("x"), retrying=True)
    assert not cp.due(), "a request does not override a record being retried"
    off = Checkpointer(tmp_path, "app", 0.0)
    off.on_assigned([0], [0], {}, engine)
    off.request()
    assert not off.due(), "nor turned-off checkpoints"


def test_a_cut_whose_flush_ends_in_a_failed_send_is_not_written(tmp_path: Path) -> None:
    """The flush completes the sends the cut promises; one that failed meanwhile voids the cut."""
    engine = Engine(load_pack(default_pack()))
    cp = Checkpointer(tmp_path, "app", 0.001)
    cp.on_assigned([0], [0], {}, engine)
    cut = cp.cut({"k": {"n": 1}}, engine, "d")
    assert cut is not None

    async def flush_that_fails() -> None:
        cp.on_send_failed("t.events", RuntimeError("UnknownError"), retrying=True)

    asyncio.run(cp.write(cut, flush_that_fails))
    assert not cut[0].exists() and cp.written == 0
    cp.on_send_retried("t.events", delivered=True)
    asyncio.run(cp.write(cut, flush_that_fails))
    assert not cut[0].exists()

    async def flush() -> None:
        return None

    cp.on_send_retried("t.events", delivered=True)
    asyncio.run(cp.write(cut, flush))
    assert cut[0].exists() and cp.written == 1


@pytest.mark.integration
def test_a_failed_send_is_sent_again_once_the_broker_is_back_and_checkpoints_resume(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The record reaches its topic and partition after the broker returns; checkpoints pause meanwhile."""
    from streams import metrics
    from streams.topics import create_topics

    down = DevBroker(log_path=tmp_path / "tansu.log").start()  # its own broker: it is stopped below
    try:
        s = make_settings(down, tmp_path, "resend")
        create_topics(s.kafka)
        rt, sensor = checkpointing_runtime(s, retry_s=60)
        topic = s.kafka.incidents_topic
        delivered = metrics.SEND_RETRIES.labels(topic, "delivered")._value.get()

        async def run() -> None:
            producer = rt.app.producer
            await producer.start()
            try:
                down.stop()
                state = rt.app.sensors.on_send_initiated(producer, topic, _pending(b"lost-once", 2), 0, 9)
                rt.app.sensors.on_send_error(producer, RuntimeError("UnknownError"), state)
                assert not rt.checkpoints.due(), "paused while the record is retried"
                await asyncio.sleep(2.0)  # a few attempts fail: no broker
                assert sensor.pending, "still retrying"
                down.start()
                create_topics(s.kafka)  # the dev broker lost them
                await asyncio.wait_for(asyncio.gather(*sensor.pending), 60)
            finally:
                await producer.stop()

        with caplog.at_level(logging.WARNING):
            asyncio.run(run())
        assert metrics.SEND_RETRIES.labels(topic, "delivered")._value.get() == delivered + 1
        assert f"send retried topic={topic} partition=2" in caplog.text
        assert rt.checkpoints.due(), "checkpoints resume once the record is delivered"
        assert [(r.partition, r.value) for r in read_topic(s, topic)] == [(2, b"lost-once")]
    finally:
        down.stop()


@pytest.mark.integration
def test_a_checkpoint_is_only_trusted_while_the_topics_hold_what_it_applied(broker: DevBroker, tmp_path: Path) -> None:
    """After the broker lost its data (or topics were recreated), offsets start at 0 again: ignore it."""
    from datetime import UTC, datetime

    from kafka import KafkaProducer

    from streams.checkpoint import Checkpoint, matches_topics
    from streams.topics import create_topics

    s = make_settings(broker, tmp_path, "cp-topics")
    create_topics(s.kafka)
    producer = KafkaProducer(**s.kafka.producer_options())
    sent = [
        producer.send(s.kafka.events_topic, b"m%d" % i, partition=1, timestamp_ms=1_700_000_000_000 + i)
        for i in range(3)
    ]
    producer.flush()
    assert [f.get(10).offset for f in sent] == [0, 1, 2]
    producer.close()

    def cp(next_offset: int, stamp: int | None) -> Checkpoint:
        return Checkpoint(
            app_id="a",
            written_at=datetime.now(UTC),
            pack_digest="d",
            raw_partitions=[1],
            events_partitions=[1],
            ingest_done={},
            detect_next={1: next_offset},
            detect_stamps={} if stamp is None else {1: stamp},
            watermark_ms=None,
            state={},
        )

    def check(c: Checkpoint) -> bool:
        return asyncio.run(matches_topics(s.kafka, c, s.kafka.raw_topic, s.kafka.events_topic, timeout_s=5))

    assert check(cp(2, 1_700_000_000_001)), "the message before offset 2 is the one applied"
    assert check(cp(0, None)), "nothing applied: nothing to check"
    assert not check(cp(2, 1_700_000_000_999)), "another message at that offset: recreated topics"
    assert not check(cp(50, None)), "the topic is shorter than the checkpoint: it lost its data"


def test_a_checkpoint_that_cannot_be_made_or_written_is_logged_and_the_stream_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    engine = Engine(load_pack(default_pack()))
    cps = Checkpointer(tmp_path / "file-in-the-way" / "checkpoints", "app", 1.0)
    cps.assign([0], [0])
    with caplog.at_level(logging.ERROR):
        assert cps.cut({"k": {"bad": object()}}, engine, "d") is None
    assert "checkpoint skipped" in caplog.text
    (tmp_path / "file-in-the-way").write_text("not a directory")
    cut = cps.cut({"k": {"n": 1}}, engine, "d")
    assert cut is not None

    async def flushed() -> None:
        return None

    with caplog.at_level(logging.ERROR):
        asyncio.run(cps.write(cut, flushed))  # no exception reaches the agent
    assert "checkpoint not written" in caplog.text and cps.written == 0


@pytest.mark.integration
def test_the_agents_wait_while_a_rebalance_decides_on_a_restore(broker: DevBroker, tmp_path: Path) -> None:
    """Faust resumes the partitions while the restore is checked against the broker: no message may be
    applied, nor a cut taken, before the checkpoint is loaded (or refused)."""
    from datetime import UTC, datetime

    from faust.types import TP
    from kafka import KafkaProducer

    from streams.app import build_runtime
    from streams.checkpoint import Checkpoint, write_file
    from streams.topics import create_topics

    s = make_settings(broker, tmp_path, "cp-gate")
    s.worker.checkpoint_interval_s = 0.001
    create_topics(s.kafka)
    producer = KafkaProducer(**s.kafka.producer_options())
    sent = producer.send(s.kafka.events_topic, b"m", partition=0, timestamp_ms=1_700_000_000_000)
    producer.flush()
    assert sent.get(10).offset == 0
    producer.close()
    parts = list(range(s.kafka.partitions))
    rt = build_runtime(s)
    cp = Checkpoint(
        app_id=s.kafka.app_id,
        written_at=datetime.now(UTC),
        pack_digest=rt.pack_digest,
        raw_partitions=parts,
        events_partitions=parts,
        ingest_done={},
        detect_next={0: 1},
        detect_stamps={0: 1_700_000_000_000},
        watermark_ms=None,
        state={"restored-key": {"n": 1}},
    )
    rt.checkpoints.directory.mkdir(parents=True, exist_ok=True)
    write_file(rt.checkpoints.directory / file_name(parts, parts), cp.model_dump_json().encode())
    assigned = {TP(t, p) for t in (s.kafka.raw_topic, s.kafka.events_topic) for p in parts}
    seen: list[tuple[bool, bool]] = []

    async def agent() -> None:  # what both agents do before each message
        await rt.checkpoints.decided()
        seen.append((rt.checkpoints.restored, "restored-key" in rt.state))

    async def body() -> None:
        rebalance = asyncio.ensure_future(rt.app.on_partitions_assigned.send(assigned))
        while not rt.checkpoints.restoring and not rebalance.done():
            await asyncio.sleep(0)
        assert not rebalance.done(), "the handler asks the broker (matches_topics) whether to restore"
        assert not rt.checkpoints.due(), "no cut while it decides"
        await asyncio.wait_for(asyncio.gather(rebalance, agent()), 30)

    asyncio.run(body())
    assert seen == [(True, True)], "the agent went on only once the checkpoint was loaded"
    assert rt.checkpoints.due(), "cuts are due again afterwards"
