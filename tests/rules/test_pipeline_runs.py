"""Runs: consecutive events messages of one stream applied as one engine batch (``Pipeline.detect_run``).

A run must give what ``detect`` gives message by message: the same final incidents, the same late
dead letters (judged message by message against the stream's watermark), the same state apart from
the source positions entries record (a run records its last message's), and the same stream marks.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any

import orjson
import pytest

from rules.columns import EventColumns, Zones
from rules.decode import decode_one
from rules.engine import Engine
from rules.pack import LoadedPack, load_pack
from rules.pipeline import APPLIED_PREFIX, Chain, Pipeline, encode_tick
from streams.bench_data import grid_events, write_grid_pack, wuhan_events
from streams.settings import default_pack

BATCH = 400


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory) -> LoadedPack:
    return load_pack(write_grid_pack(tmp_path_factory.mktemp("runs") / "pack", 300, 60))


def _shifted(ts: str, delta: timedelta) -> str:
    return (datetime.fromisoformat(ts) + delta).isoformat()


def _events(make: Any, n: int, seed: int) -> list[dict[str, Any]]:
    """Events with disorder inside each raw message, some 2 h late, and some sent twice."""
    rng = random.Random(seed)
    events = [dict(e) for e in make(n, seed)]
    for e in rng.sample(events, n // 50):  # older than the stream's watermark minus 1 h of lateness
        e["ts"] = _shifted(e["ts"], timedelta(hours=-2))
    out: list[dict[str, Any]] = []
    for start in range(0, len(events), BATCH):
        chunk = events[start : start + BATCH]
        rng.shuffle(chunk)  # out of order within a message: both ways sort it
        out += chunk
    again = rng.sample(range(len(out) - BATCH), 20)
    for i in sorted(again, reverse=True):  # the same event once more, in the next message
        out.insert(i + BATCH, dict(out[i]))
    return out


def _detect_all(
    pack: LoadedPack, events: list[dict[str, Any]], *, cap: int, partitions: int = 3, seed: int = 0
) -> tuple[dict[str, Any], list[str], dict[str, Any], int]:
    """Ingest every raw message (ingest ahead of detect, as a worker catching up), then detect each
    partition's messages in order: one by one (``cap`` 1) or in runs of at most ``cap`` messages,
    with a tick now and then. Returns the latest incidents, the dead letters, the state and how
    many messages went through runs."""
    rng = random.Random(seed)
    pipeline = Pipeline(Engine(pack), partitions=partitions, handoff=1_000_000)
    chain = Chain()
    queues: list[list[bytes]] = [[] for _ in range(partitions)]
    for offset, start in enumerate(range(0, len(events), BATCH)):
        out = pipeline.ingest(orjson.dumps({"events": events[start : start + BATCH]}), "raw", 0, offset)
        for part in out.targets():
            prev = chain.link(0, part, offset)
            envelope = out.envelope(part, (0, offset), prev)
            pipeline.handoff.keep(envelope, out, part, (0, offset), prev)
            queues[part].append(bytes(bytearray(envelope)))  # equal bytes, another object
            if offset % 7 == 3:
                queues[part].append(encode_tick(0))
    state: dict[str, Any] = {}
    latest: dict[str, Any] = {}
    dead: list[str] = []
    in_runs = 0
    for part, queue in enumerate(queues):
        at = 0
        while at < len(queue):
            n = pipeline.runnable(queue[at : at + rng.randint(1, cap)], state, part) if cap > 1 else 0
            if n:
                got = pipeline.detect_run(queue[at : at + n], list(range(at, at + n)), state, "events", part)
                in_runs += n
            else:
                got, n = pipeline.detect(queue[at], state, "events", part, at), 1
            for incident in got.incidents:
                if incident.id not in latest or incident.revision >= latest[incident.id].revision:
                    latest[incident.id] = incident
            dead += [f"{d.kind} {d.source} {d.reason}" for d in got.dead]
            at += n
    return {k: v.model_dump(mode="json") for k, v in latest.items()}, dead, state, in_runs


def _without_positions(state: dict[str, Any]) -> dict[str, Any]:
    return {k: {f: x for f, x in v.items() if f != "pos"} if isinstance(v, dict) else v for k, v in state.items()}


@pytest.mark.parametrize(("seed", "cap"), [(1, 2), (2, 5), (3, 16)])
def test_runs_equal_detect_message_by_message(grid: LoadedPack, seed: int, cap: int) -> None:
    events = _events(grid_events, 12_000, seed)
    one, one_dead, one_state, _ = _detect_all(grid, events, cap=1)
    runs, runs_dead, runs_state, in_runs = _detect_all(grid, events, cap=cap, seed=seed)
    assert in_runs > 20, "most messages went through runs"
    assert len(one) > 50, "the events make incidents"
    assert any(d.startswith("late ") for d in one_dead), "some events are late"
    assert runs == one
    assert runs_dead == one_dead
    assert _without_positions(runs_state) == _without_positions(one_state)
    marks = {k: v for k, v in runs_state.items() if k.startswith(APPLIED_PREFIX)}
    assert marks == {k: v for k, v in one_state.items() if k.startswith(APPLIED_PREFIX)}


def test_runs_with_spread_copies_equal_detect_message_by_message() -> None:
    """The Wuhan pack spreads reports (cluster, correlation): each envelope has copies after its events."""
    pack = load_pack(default_pack())
    events = _events(wuhan_events, 6_000, 4)
    one, one_dead, one_state, _ = _detect_all(pack, events, cap=1)
    runs, runs_dead, runs_state, in_runs = _detect_all(pack, events, cap=8, seed=4)
    assert in_runs > 10
    assert len(one) > 100
    assert runs == one
    assert runs_dead == one_dead
    assert _without_positions(runs_state) == _without_positions(one_state)


def test_runnable_takes_only_linked_envelopes_of_one_stream(grid: LoadedPack) -> None:
    pipeline = Pipeline(Engine(grid), partitions=1, handoff=1_000_000)
    chain = Chain()
    made: list[bytes] = []
    for offset in range(4):
        raw_partition = 0 if offset < 3 else 1  # the fourth message comes from another stream
        body = grid_events(50, seed=offset)
        out = pipeline.ingest(orjson.dumps({"events": body}), "raw", raw_partition, offset)
        prev = chain.link(raw_partition, 0, offset)
        envelope = out.envelope(0, (raw_partition, offset), prev)
        pipeline.handoff.keep(envelope, out, 0, (raw_partition, offset), prev)
        made.append(envelope)
    state: dict[str, Any] = {}
    assert pipeline.runnable(made[:1], state, 0) == 0, "one message is not a run"
    assert pipeline.runnable(made, state, 0) == 3, "the other stream's message ends the run"
    assert pipeline.runnable([made[0], encode_tick(5), made[1]], state, 0) == 0, "a tick ends it"
    assert pipeline.runnable([made[0], made[2]], state, 0) == 0, "a missing link ends it"
    assert pipeline.runnable([made[1], made[2]], state, 0) == 0, "a first message after a missing link is not run"
    got = pipeline.detect_run(made[:3], [0, 1, 2], state, "events", 0)
    assert got.read == "handoff"
    assert pipeline.runnable([made[2], made[3]], state, 0) == 0, "a taken envelope is no longer held"
    assert len(pipeline.handoff) == 1, "the run took its envelopes"


def test_joined_columns_keep_each_rows_event_zones_and_numbers() -> None:
    def part(events: list[dict[str, Any]], zones: list[list[str] | None]) -> EventColumns:
        columns = EventColumns.from_events([decode_one(e) for e in events])
        columns.zones = {"districts": Zones.from_lists(zones)}
        return columns

    first = grid_events(3, seed=1)
    second = grid_events(4, seed=2)
    a = part(first, [["z2"], None, ["z1", "z2"]])
    b = part(second, [["z9"], ["z1"], [], ["z9", "z2"]])  # another zone vocabulary
    joined = EventColumns.concat([a, b])
    assert len(joined) == 7
    assert joined.ids == [e["id"] for e in first + second]
    assert [joined.zones_at(r).get("districts", []) for r in range(7)] == [
        ["z2"],
        [],
        ["z1", "z2"],
        ["z9"],
        ["z1"],
        [],
        ["z9", "z2"],
    ]
    assert joined.zones["districts"].primary_ids == ["z2", None, "z1", "z9", "z1", None, "z9"]
    assert joined.numeric["lon"].tolist() == a.numeric["lon"].tolist() + b.numeric["lon"].tolist()
    assert [joined.enriched(r).event.id for r in range(7)] == joined.ids
    assert joined.enriched(4) is b.enriched(1), "a row's enriched event is its part's own"
    assert joined.subjects == a.subjects + b.subjects  # type: ignore[operator]
    assert joined.kind.tolist() == a.kind.tolist() + b.kind.tolist()
