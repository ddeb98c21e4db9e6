"""The outbox: detect's sends held in the rule-state table until the broker confirms them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rules.engine import Engine
from rules.pack import load_pack
from rules.pipeline import WATERMARK_PREFIX
from streams.outbox import OUTBOX_PREFIX, Outbox

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
