"""Replay decodes ahead of the engine in a background thread, and that changes nothing it returns."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest

from rules import replay as replay_module
from rules.pack import load_pack
from rules.replay import prefetched, replay

WUHAN = Path(__file__).resolve().parents[2] / "rules" / "packs" / "wuhan" / "pack.yaml"


def _threads() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name == "replay-decode"}


def _counting(count: int, made: list[int]) -> Callable[[], Iterator[int]]:
    """A producer of 0 .. count - 1 that notes each number in ``made`` as it makes it."""

    def produce() -> Iterator[int]:
        for n in range(count):
            made.append(n)
            yield n

    return produce


def test_prefetched_gives_every_item_in_order_and_ends_its_thread() -> None:
    made: list[int] = []
    assert list(prefetched(_counting(500, made), 2)) == list(range(500))
    assert made == list(range(500))
    assert not _threads()


def test_prefetched_stays_within_its_depth() -> None:
    made: list[int] = []
    items = prefetched(_counting(100, made), 3)
    assert next(items) == 0
    time.sleep(0.3)
    # one handed out, three queued, and at most one made and waiting for room
    assert 4 <= len(made) <= 5
    items.close()


def test_an_error_while_producing_is_raised_after_the_items_before_it() -> None:
    def produce() -> Iterator[int]:
        yield 1
        yield 2
        raise ValueError("line 3 is broken")

    got: list[int] = []
    with pytest.raises(ValueError, match="line 3 is broken"):
        for item in prefetched(produce, 2):
            got.append(item)
    assert got == [1, 2]
    assert not _threads()


def test_a_consumer_that_stops_early_stops_the_thread() -> None:
    def produce() -> Iterator[int]:
        n = 0
        while True:  # endless: only the consumer's stop ends it
            yield n
            n += 1

    items = prefetched(produce, 2)
    assert [next(items) for _ in range(10)] == list(range(10))
    items.close()
    assert not _threads()


def test_replay_with_many_blocks_is_the_same_with_and_without_prefetch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks of 3 lines, so the thread hands over dozens of blocks; rejections keep their line numbers."""
    monkeypatch.setattr(replay_module, "_BLOCK", 3)
    pack = load_pack(WUHAN)
    events = [e for case in pack.spec.tests for e in case.events]
    lines: list[bytes] = []
    for n, event in enumerate(events):
        lines.append(orjson.dumps(event))
        if n % 7 == 0:
            lines.append(b'{"id": "broken", "kind": "reading"}')
        if n % 11 == 0:
            lines.append(b"")
    seen: list[int] = []
    threaded = replay(pack, lines, batch_size=2, prefetch=2, progress=seen.append)
    inline = replay(pack, lines, batch_size=2, prefetch=0)
    assert threaded.incidents == inline.incidents
    assert threaded.incidents
    assert threaded.events == inline.events == len(events)
    assert threaded.rejected == inline.rejected
    assert [number for number, _ in threaded.rejected] == [
        n + 1 for n, line in enumerate(lines) if line.startswith(b'{"id": "broken"')
    ]
    assert not _threads()
