"""Replay raises the cyclic GC's generation-0 threshold while it runs and restores it afterwards."""

from __future__ import annotations

import functools
import gc
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from rules.model import Reading
from rules.pack import LoadedPack, load_pack
from rules.replay import GC_THRESHOLD, gc_tuned, replay, replay_events

WUHAN = Path(__file__).resolve().parents[2] / "rules" / "packs" / "wuhan" / "pack.yaml"
CUSTOM = (1234, 7, 9)


@functools.cache
def _wuhan() -> LoadedPack:
    return load_pack(WUHAN)


@pytest.fixture(autouse=True)
def _thresholds() -> Iterator[None]:
    saved = gc.get_threshold()
    gc.set_threshold(*CUSTOM)
    try:
        yield
    finally:
        gc.set_threshold(*saved)


def _lines(n: int, seen: list[tuple[int, int, int]], fail_at: int | None = None) -> Iterator[bytes]:
    """n water-level readings as JSON lines, noting the GC thresholds while they are read."""
    start = datetime(2026, 7, 1, tzinfo=UTC)
    for i in range(n):
        seen.append(gc.get_threshold())
        if i == fail_at:
            raise RuntimeError("the source broke")
        ts = (start + timedelta(seconds=i)).isoformat()
        yield orjson.dumps(
            {"kind": "reading", "id": f"e{i}", "ts": ts, "lon": 114.3, "lat": 30.6, "sensor_id": "s1"}
            | {"metric": "water_level_cm", "value": 40.0}
        )


def test_replay_raises_the_threshold_and_restores_it() -> None:
    seen: list[tuple[int, int, int]] = []
    result = replay(_wuhan(), _lines(50, seen))
    assert result.events == 50
    assert seen and all(t == (GC_THRESHOLD, 7, 9) for t in seen)
    assert gc.get_threshold() == CUSTOM


def test_thresholds_are_restored_when_replay_raises() -> None:
    seen: list[tuple[int, int, int]] = []
    with pytest.raises(RuntimeError, match="the source broke"):
        replay(_wuhan(), _lines(5000, seen, fail_at=4500), batch_size=100)
    assert seen[-1] == (GC_THRESHOLD, 7, 9)
    assert gc.get_threshold() == CUSTOM


def test_replay_events_restores_the_thresholds() -> None:
    start = datetime(2026, 7, 1, tzinfo=UTC)
    events = [
        Reading(
            id=f"e{i}",
            ts=start + timedelta(seconds=i),
            lon=114.3,
            lat=30.6,
            sensor_id="s1",
            metric="water_level_cm",
            value=40.0,
        )
        for i in range(30)
    ]
    replay_events(_wuhan(), events)
    assert gc.get_threshold() == CUSTOM
    with pytest.raises(AttributeError):
        replay_events(_wuhan(), [*events, None])  # type: ignore[list-item]
    assert gc.get_threshold() == CUSTOM


def test_a_higher_threshold_is_kept_and_zero_stays_off() -> None:
    gc.set_threshold(GC_THRESHOLD * 2, 7, 9)
    with gc_tuned():
        assert gc.get_threshold() == (GC_THRESHOLD * 2, 7, 9)
    gc.set_threshold(0, 7, 9)
    with gc_tuned():
        assert gc.get_threshold() == (0, 7, 9)
    assert gc.get_threshold() == (0, 7, 9)


def test_nested_and_concurrent_uses_restore_once_at_the_end() -> None:
    inside = threading.Event()
    release = threading.Event()

    def other() -> None:
        with gc_tuned():
            inside.set()
            release.wait(10)

    thread = threading.Thread(target=other)
    with gc_tuned():
        with gc_tuned():
            assert gc.get_threshold() == (GC_THRESHOLD, 7, 9)
        assert gc.get_threshold() == (GC_THRESHOLD, 7, 9)
        thread.start()
        assert inside.wait(10)
    assert gc.get_threshold() == (GC_THRESHOLD, 7, 9)  # the other thread is still replaying
    release.set()
    thread.join(10)
    assert gc.get_threshold() == CUSTOM


def test_a_threshold_changed_meanwhile_is_left_alone() -> None:
    with gc_tuned():
        gc.set_threshold(777, 7, 9)
    assert gc.get_threshold() == (777, 7, 9)
