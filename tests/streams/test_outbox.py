"""The outbox: detect's sends held in the rule-state table until the broker confirms them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from rules.engine import Engine
from rules.pack import load_pack
from rules.pipeline import WATERMARK_PREFIX, Pipeline
from streams.bench_data import wuhan_events
from streams.outbox import OUTBOX_PREFIX, Outbox, Staged

PACK = Path(__file__).resolve().parents[2] / "rules" / "packs" / "wuhan" / "pack.yaml"


def test_a_held_send_stays_in_the_table_until_confirmed_and_settled() -> None:
    state: dict[str, Any] = {}
    outbox = Outbox(state)

    held = outbox.hold(2, "incidents", b"inc-1", b'{"id": "inc-1", "revision": 3}', 3)

    assert state[held.entry] == {"home": 2, "topic": "incidents", "rev": 3, "value": '{"id": "inc-1", "revision": 3}'}
    assert outbox.settle(2) == 0  # not confirmed yet
    outbox.delivered(2, held)
    assert held.entry in state  # deleted by the agent, at the partition's next message
    assert outbox.settle(1) == 0
    assert outbox.settle(2) == 1
    assert state == {}
    assert outbox.settle(2) == 0


def test_a_newer_snapshot_is_not_deleted_by_the_confirmation_of_an_older_one() -> None:
    state: dict[str, Any] = {}
    outbox = Outbox(state)
    old = outbox.hold(0, "incidents", b"inc-1", b'{"revision": 1}', 1)
    new = outbox.hold(0, "incidents", b"inc-1", b'{"revision": 2}', 2)
    assert old.entry == new.entry and state[new.entry]["rev"] == 2

    outbox.delivered(0, old)
    assert outbox.settle(0) == 0
    assert state[new.entry]["value"] == '{"revision": 2}'

    outbox.delivered(0, new)
    outbox.delivered(0, old)  # a late confirmation of the older one changes nothing
    assert outbox.settle(0) == 1
    assert state == {}


def test_incidents_and_dead_letters_with_one_key_are_separate_entries() -> None:
    state: dict[str, Any] = {}
    outbox = Outbox(state)
    a = outbox.hold(0, "incidents", b"k", b"1", 1)
    b = outbox.hold(0, "deadletter", b"k", b"2")
    assert a.entry != b.entry and len(state) == 2


def test_restored_entries_are_sent_again_once_per_assignment_and_only_for_their_partition() -> None:
    # what the changelog restores for a worker: entries of its partitions 0 and 1 (and rule state)
    state: dict[str, Any] = {
        f"{OUTBOX_PREFIX}|incidents|inc-a": {"home": 0, "topic": "incidents", "rev": 4, "value": "A4"},
        f"{OUTBOX_PREFIX}|deadletter|raw:0:17:ev-9": {"home": 0, "topic": "deadletter", "rev": 0, "value": "D"},
        f"{OUTBOX_PREFIX}|incidents|inc-b": {"home": 1, "topic": "incidents", "rev": 1, "value": "B1"},
        f"{WATERMARK_PREFIX}|0": {"wm": 1, "home": 0},
    }
    outbox = Outbox(state)
    assert outbox.restored(0) == []  # nothing assigned yet

    outbox.assigned([0, 2])

    again = outbox.restored(0)
    assert [(h.topic, h.key, h.value, h.revision) for h in again] == [
        ("deadletter", b"raw:0:17:ev-9", b"D", 0),
        ("incidents", b"inc-a", b"A4", 4),
    ]
    assert outbox.restored(0) == []  # once per assignment
    assert outbox.restored(1) == []  # not assigned here
    assert outbox.restored(2) == []
    assert outbox.resent == 2
    for held in again:  # confirmed, then settled at the partition's next message
        outbox.delivered(0, held)
    assert outbox.settle(0) == 2
    assert outbox.pending() == 1

    outbox.assigned([1])
    assert [h.value for h in outbox.restored(1)] == [b"B1"]


def test_the_engine_leaves_outbox_entries_alone_when_it_ticks_and_expires() -> None:
    engine = Engine(load_pack(PACK))
    state: dict[str, Any] = {}
    held = Outbox(state).hold(0, "incidents", b"inc-1", b"{}", 1)

    assert engine.tick(state, clock_ms=10**13, partition=0, watermark_ms=10**13) == []
    assert engine.expire(state, partition=0, watermark_ms=10**13) == 0
    assert held.entry in state


def test_the_staged_view_reads_its_own_writes_and_writes_nothing_until_flushed() -> None:
    table: dict[str, Any] = {"a": 1, "b": 2}
    view = Staged(table)

    view["c"] = 3
    del view["a"]
    view["b"] = 20

    assert (view.get("a"), "a" in view, view["b"], view.get("c"), view.get("zz", "dflt")) == (
        None,
        False,
        20,
        3,
        "dflt",
    )
    assert sorted(view) == ["b", "c"] and len(view) == 2 and dict(view.items()) == {"b": 20, "c": 3}
    with pytest.raises(KeyError):
        view["a"]
    with pytest.raises(KeyError):
        del view["a"]
    assert table == {"a": 1, "b": 2}  # untouched until the flush

    assert view.flush() == 3
    assert table == {"b": 20, "c": 3}
    assert view.flush() == 0


class _Recording(dict[str, Any]):
    """A table that remembers the order of its writes, as a changelog partition would."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[str] = []

    def __setitem__(self, key: str, value: Any) -> None:
        self.log.append(key)
        super().__setitem__(key, value)

    def __delitem__(self, key: str) -> None:
        self.log.append(key)
        super().__delitem__(key)


def test_a_message_s_held_sends_reach_the_table_before_its_state_changes() -> None:
    """What detect does per message with an outbox: apply through a staged view, hold the sends
    in the table, then flush; the state equals applying the message to the table directly."""
    pack = load_pack(PACK)
    events = sorted(wuhan_events(3000, seed=11), key=lambda e: str(e["ts"]))
    direct: dict[str, Any] = {}
    table = _Recording()
    outbox = Outbox(table)
    plain, staged_pipeline = Pipeline(Engine(pack), partitions=1), Pipeline(Engine(pack), partitions=1)
    held_any = False
    for offset, start in enumerate(range(0, len(events), 500)):
        raw = orjson.dumps({"events": events[start : start + 500]})
        envelope = plain.ingest(raw, "raw", 0, offset).envelope(0, (0, offset))
        expected = plain.detect(envelope, direct, "events", 0, offset)

        table.log.clear()
        view = Staged(table)
        out = staged_pipeline.detect(envelope, view, "events", 0, offset)
        for inc in out.incidents:
            outbox.hold(0, "incidents", inc.id.encode(), inc.model_dump_json().encode(), inc.revision)
        for dl in out.dead:
            outbox.hold(0, "deadletter", dl.source.encode(), dl.model_dump_json().encode())
        view.flush()

        assert [i.model_dump_json() for i in out.incidents] == [i.model_dump_json() for i in expected.incidents]
        held = [k for k in table.log if k.startswith(OUTBOX_PREFIX)]
        assert table.log[: len(held)] == held, "a state change reached the table before a held send"
        assert len(table.log) > len(held)
        held_any = held_any or bool(held)
    assert held_any
    assert {k: v for k, v in table.items() if not k.startswith(OUTBOX_PREFIX)} == direct
