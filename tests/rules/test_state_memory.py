"""Rule state stays small: about 1 KiB or less per active sensor (issue #7), measured as the changelog stores it.

``bench/memory.py`` measures 100,000 sensors; these tests pin the budget on a few hundred, with the
state built the way the detect stage builds it (a source position per message, the home partition).
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from rules.engine import AnyEvent, Engine
from rules.model import Reading
from rules.pack import LoadedPack, load_pack

WUHAN = Path(__file__).resolve().parents[2] / "rules" / "packs" / "wuhan" / "pack.yaml"
NIGHT = datetime(2026, 7, 1, 15, 0, tzinfo=UTC)  # 23:00 in Wuhan: the night-noise schedule is live
BUDGET = 1024  # bytes of serialized state per active sensor
SITES = [(114.30, 30.60), (114.35, 30.50), (114.27, 30.58), (114.30, 30.55)]  # four central districts
SUSTAINED = ("flood.water-level-sustained@", "noise.night-sustained@")


@functools.cache
def _wuhan() -> LoadedPack:
    return load_pack(WUHAN)


def _fleet(n: int, value: dict[str, float], readings: int, every: timedelta) -> list[AnyEvent]:
    """``n`` sensors (water level and noise, alternately), ``readings`` each, in time order."""
    events: list[AnyEvent] = []
    for i in range(n):
        metric = "water_level_cm" if i % 2 == 0 else "noise_db"
        lon, lat = SITES[i % len(SITES)]
        where = (lon + (i % 97) * 1e-4, lat + (i % 89) * 1e-4)  # spread over a few hundred metres
        for k in range(readings):
            events.append(
                Reading(
                    id=f"s{i}-{k}",
                    ts=NIGHT + k * every + timedelta(milliseconds=i),
                    lon=where[0],
                    lat=where[1],
                    sensor_id=f"{metric[:5]}-{i:05d}",
                    metric=metric,
                    value=value[metric],
                )
            )
    return sorted(events, key=lambda e: (e.ts, e.id))


def _detect(events: list[AnyEvent], *, envelope: int = 50) -> dict[str, Any]:
    """Fold the events into a dict state as the detect stage does: one position per envelope."""
    engine = Engine(_wuhan())
    state: dict[str, Any] = {}
    for offset, start in enumerate(range(0, len(events), envelope)):
        batch = engine.enrich(events[start : start + envelope])
        engine.process(batch, state, position=(1_000_000, offset), home=0)
    return state


def _serialized(state: dict[str, Any]) -> int:
    """Bytes of JSON keys and values: what the Faust table's changelog stores."""
    return sum(len(orjson.dumps(k)) + len(orjson.dumps(v)) for k, v in state.items())


def test_sensors_with_a_pending_condition_keep_at_most_one_kib_of_state_each() -> None:
    n = 400
    # over the threshold on every reading, for 90 s: water level and night noise are pending (not yet open)
    alarm = {"water_level_cm": 42.0, "noise_db": 70.0}
    state = _detect(_fleet(n, alarm, readings=4, every=timedelta(seconds=30)))
    pending = [v for k, v in state.items() if k.startswith(SUSTAINED) and v.get("phase") == "pending"]
    assert len(pending) == n
    assert _serialized(state) / n <= BUDGET


def test_sensors_reading_normal_values_keep_only_their_newest_time_and_source_positions() -> None:
    n = 400
    normal = {"water_level_cm": 8.0, "noise_db": 40.0}
    state = _detect(_fleet(n, normal, readings=4, every=timedelta(seconds=30)))
    idle = {k: v for k, v in state.items() if k.startswith(SUSTAINED)}
    assert len(idle) == n
    assert all(set(v) == {"t", "pos", "home"} for v in idle.values())
    assert _serialized(state) / n <= 200


def test_an_idle_sensor_still_ignores_a_redelivered_message_and_counts_an_out_of_order_reading() -> None:
    pack = _wuhan()
    engine = Engine(pack)
    state: dict[str, Any] = {}
    key = "flood.water-level-sustained@1|wl-1"

    def feed(eid: str, at: timedelta, value: float, offset: int) -> list[Any]:
        reading = Reading(
            id=eid, ts=NIGHT + at, lon=114.30, lat=30.60, sensor_id="wl-1", metric="water_level_cm", value=value
        )
        return engine.process(engine.enrich([reading]), state, position=(0, offset), home=0).incidents

    feed("a", timedelta(minutes=0), 42, 1)  # pending
    feed("b", timedelta(minutes=1), 8, 2)  # back to normal: idle, kept as its core
    assert set(state[key]) == {"t", "pos", "home"}
    feed("a", timedelta(minutes=0), 42, 1)  # redelivered: already applied, not pending again
    assert set(state[key]) == {"t", "pos", "home"}
    feed("old", timedelta(seconds=30), 42, 3)  # older than the newest reading: counted, not applied
    assert state[key]["phase"] == "idle" and state[key]["ooo"] == 1
    feed("c", timedelta(minutes=2), 42, 4)
    out = feed("d", timedelta(minutes=4), 43, 5)  # held for 2 minutes from c
    [incident] = [i for i in out if i.rule_id == "flood.water-level-sustained"]
    assert incident.window_start == NIGHT + timedelta(minutes=2)
    assert incident.details["out_of_order"] == 1
