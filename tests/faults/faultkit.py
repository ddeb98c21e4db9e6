"""Shared machinery of the fault-injection suite: one deterministic event set, its replay, the figures.

Every scenario sends envelopes of the same kind of event set through real processes, injects its
fault, waits until the store holds replay's incidents (or gives up), and then reports the figures
the issue asks for as one JSON line prefixed ``FAULT-FIGURES`` (on stdout, and appended to
``build/faults.jsonl``):

- ``expected``: incidents in the replay of the same events (the same pack, no broker);
- ``found``, ``lost``, ``unexpected``, ``stale``: the store's incidents against replay's, by id
  (``stale``: present, but not at replay's final revision);
- ``duplicate_rows``: rows beyond one per incident id in DuckDB, and ``duplicate_created``:
  ``created`` history rows beyond one per incident (a duplicate incident seen by operators);
- ``bad_sent`` / ``dead_lettered``: poison records sent, and how many of them reached the
  dead-letter store with a reason naming their ``topic[partition]@offset``;
- ``supervisor_restarts``: restarts the scenario performs itself, as a process manager would;
  ``manual_restarts``: processes that died or hung by themselves (must be 0).
"""

from __future__ import annotations

import json
import os
import random
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import orjson
from kafka import KafkaProducer
from stack import Stack, latest_by_id, read_topic

from rules.model import DeadLetterRecord, Incident
from rules.pack import load_pack
from rules.replay import replay
from streams.scenario import scenario_events, wuhan_scenario
from streams.settings import Settings, default_pack

REPO = Path(__file__).resolve().parents[2]
FIGURES_FILE = REPO / "build" / "faults.jsonl"
START = datetime.fromisoformat("2026-07-01T23:00:00+08:00")  # night: the noise schedule is live
SOURCE_KEY = b"faults"  # one source, one key: each subject's events stay in order (sequence rules)

#: Events of the worker-kill run. Read at import: the suite's autouse fixture hides CITYOPS_* variables.
FAULT_EVENTS = int(os.environ.get("CITYOPS_FAULT_EVENTS", "200000"))

Event = dict[str, Any]


def event_set(n: int, seed: int = 11) -> list[Event]:
    """``n`` events in event-time order: the scripted Wuhan scenario plus a random crowd.

    The scenario (about a third) fires every rule kind: thresholds, windows, sustained, correlation,
    proximity, cluster, geofence and silence. The crowd (400 sensors, 13 districts' reports and 20
    drones) makes many threshold and window incidents, so losses and duplicates would show.
    """
    return list(_event_set(n, seed))


@cache
def _event_set(n: int, seed: int) -> tuple[Event, ...]:
    pack = load_pack(default_pack())
    districts = pack.layers["districts"]
    duration = max(240.0, n / 40.0)  # the scenario makes about 13 events per second of event time
    scripted = [
        (m.at_s, e)
        for m in wuhan_scenario(districts, START, duration, bad_records=False, extra_layers=pack.layers)
        for e in m.events
    ]
    rng = random.Random(seed)
    crowd_n = max(0, n - len(scripted))
    sites = [(f"st-{i}", 114.20 + rng.random() * 0.25, 30.50 + rng.random() * 0.15) for i in range(400)]
    centres = [(p.x, p.y) for p in (g.representative_point() for g in districts.geoms)]
    crowd: list[tuple[float, Event]] = []
    for k in range(crowd_n):
        t = k * duration / max(crowd_n, 1)
        ts = (START + timedelta(seconds=t)).isoformat()
        roll = rng.random()
        if roll < 0.80:
            sid, lon, lat = sites[k % len(sites)]
            water = k % 2 == 0
            value = rng.uniform(0, 34) if water else rng.uniform(10, 170)
            event: Event = {
                "kind": "reading",
                "id": f"c{k}",
                "ts": ts,
                "lon": round(lon, 6),
                "lat": round(lat, 6),
                "sensor_id": sid,
                "metric": "water_level_cm" if water else "pm25",
                "value": round(value, 2),
            }
        elif roll < 0.95:
            x, y = rng.choice(centres)
            event = {
                "kind": "report",
                "id": f"c{k}",
                "ts": ts,
                "lon": round(x + rng.uniform(-0.01, 0.01), 6),
                "lat": round(y + rng.uniform(-0.01, 0.01), 6),
                "category": rng.choice(("illegal_dumping", "waterlogging", "noise")),
            }
        else:
            drone = k % 20
            event = {
                "kind": "track",
                "id": f"c{k}",
                "ts": ts,
                "lon": round(114.25 + 0.01 * drone + 0.00001 * (k % 1000), 6),
                "lat": round(30.55 + 0.005 * drone, 6),
                "object_id": f"uav-c{drone}",
                "object_type": "drone",
                "alt_m": round(rng.uniform(60, 140), 1),
                "speed_mps": 10.0,
            }
        crowd.append((t, event))
    merged = sorted(scripted + crowd, key=lambda pair: pair[0])  # stable: scripted first at equal times
    return tuple(e for _, e in merged[:n])


def envelopes(events: list[Event], size: int) -> list[bytes]:
    """Micro-batch envelopes of ``size`` events (as the gateways and the simulator send them)."""
    return [orjson.dumps({"events": events[i : i + size]}) for i in range(0, len(events), size)]


def expected_incidents(events: list[Event]) -> dict[str, Incident]:
    """Replay's final snapshot of every incident, by id."""
    return dict(_expected(tuple(orjson.dumps(e) for e in events)))


@cache
def _expected(lines: tuple[bytes, ...]) -> tuple[tuple[str, Incident], ...]:
    result = replay(load_pack(default_pack()), list(lines))
    return tuple((i.id, i) for i in result.incidents)


def producer(settings: Settings) -> KafkaProducer:
    return KafkaProducer(linger_ms=5, acks="all", max_request_size=8_000_000, **settings.kafka.producer_options())


def send(settings: Settings, messages: list[bytes], *, topic: str | None = None, pace_s: float = 0.0) -> float:
    """Produce raw messages in order under one key, ``pace_s`` apart (0: at once); returns the seconds it took."""
    prod = producer(settings)
    began = time.monotonic()
    try:
        for n, value in enumerate(messages):
            if pace_s:
                time.sleep(max(0.0, began + n * pace_s - time.monotonic()))
            prod.send(topic or settings.kafka.raw_topic, key=SOURCE_KEY, value=value)
        prod.flush()
        return time.monotonic() - began
    finally:
        prod.close()


@dataclass
class Figures:
    """What one scenario measured; ``ok`` when nothing was lost, duplicated or left undead-lettered."""

    scenario: str
    events: int
    expected: int = 0
    found: int = 0
    lost: int = 0
    unexpected: int = 0
    stale: int = 0
    duplicate_rows: int = 0
    duplicate_created: int = 0
    events_stored: int = 0
    topic_mismatched: int | None = None
    bad_sent: int = 0
    dead_lettered: int = 0
    dead_lettered_pct: float = 100.0
    supervisor_restarts: int = 0
    manual_restarts: int = 0
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return (
            self.lost == 0
            and self.unexpected == 0
            and self.stale == 0
            and self.duplicate_rows == 0
            and self.duplicate_created == 0
            and not self.topic_mismatched
            and self.dead_lettered == self.bad_sent
            and self.manual_restarts == 0
        )


def store_revisions(stack: Stack) -> dict[str, int]:
    return {r["id"]: int(r["revision"]) for r in stack.reader.rows("SELECT id, revision FROM incidents")}


def wait_until_complete(stack: Stack, expected: dict[str, Incident], timeout: float) -> bool:
    """Wait until the store holds every expected incident at its final revision; False on timeout.

    Unlike ``Stack.wait_for`` it does not raise, so the figures are reported either way; a process
    that dies meanwhile ends the wait (it is counted in ``manual_restarts``).
    """
    want = {k: v.revision for k, v in expected.items()}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if store_revisions(stack) == want:
                return True
        except Exception:  # the writer may be restarting; the next poll retries
            pass
        if any(not c.alive() for c in stack.children.values()):
            return False
        time.sleep(1.0)
    return False


def measure(
    stack: Stack,
    figures: Figures,
    expected: dict[str, Incident],
    *,
    check_topic: bool = True,
    bad_sources: list[str] | None = None,
) -> Figures:
    """Fill ``figures`` from the store (and the incidents topic) against replay's ``expected``."""
    want = {k: v.revision for k, v in expected.items()}
    found = store_revisions(stack)
    figures.expected = len(want)
    figures.found = len(found)
    figures.lost = len(want.keys() - found.keys())
    figures.unexpected = len(found.keys() - want.keys())
    figures.stale = sum(1 for k in want.keys() & found.keys() if found[k] != want[k])
    wrong = sorted(want.keys() ^ found.keys()) + sorted(k for k in want.keys() & found.keys() if found[k] != want[k])
    figures.extra["differences"] = [  # a sample, for the report: id, rule, replay's and the store's revision
        (k, expected[k].rule_id if k in expected else "?", want.get(k), found.get(k)) for k in wrong[:8]
    ]
    figures.duplicate_rows = int(stack.reader.scalar("SELECT count(*) - count(DISTINCT id) FROM incidents"))
    figures.duplicate_created = int(
        stack.reader.scalar(
            "SELECT count(*) - count(DISTINCT incident_id) FROM incident_history WHERE kind = 'created'"
        )
    )
    figures.events_stored = int(stack.reader.scalar("SELECT count(*) FROM events"))
    if check_topic:
        snapshots = read_topic(stack.settings, stack.settings.kafka.incidents_topic, timeout_s=5)
        live: list[Incident] = []
        for rec in snapshots:
            try:
                live.append(Incident.model_validate_json(rec.value))
            except ValueError:
                continue  # an injected poison record
        latest = latest_by_id(live)
        figures.topic_mismatched = len(set(latest) ^ set(expected)) + sum(
            1 for k in set(latest) & set(expected) if latest[k] != expected[k]
        )
    if bad_sources is not None:
        stored = {r["source"] for r in stack.reader.rows("SELECT source FROM dead_letters")}
        figures.bad_sent = len(bad_sources)
        figures.dead_lettered = sum(1 for s in bad_sources if s in stored)
        figures.dead_lettered_pct = round(100.0 * figures.dead_lettered / max(1, figures.bad_sent), 1)
    figures.manual_restarts = sum(1 for c in stack.children.values() if not c.alive())
    return figures


def dead_letter_records(settings: Settings, timeout_s: float = 3.0) -> list[DeadLetterRecord]:
    """Every record of the dead-letter topic."""
    out = []
    for rec in read_topic(settings, settings.kafka.deadletter_topic, timeout_s=timeout_s):
        try:
            out.append(DeadLetterRecord.model_validate_json(rec.value))
        except ValueError:
            continue  # the poison record injected into the dead-letter topic itself
    return out


def report(figures: Figures) -> None:
    """Print the figures as one ``FAULT-FIGURES`` JSON line and append it to build/faults.jsonl."""
    line = json.dumps({**asdict(figures), "ok": figures.ok, "at": datetime.now().astimezone().isoformat()})
    print(f"FAULT-FIGURES {line}", flush=True)
    FIGURES_FILE.parent.mkdir(parents=True, exist_ok=True)
    with FIGURES_FILE.open("a", encoding="utf-8") as out:
        out.write(line + "\n")


def assert_figures(figures: Figures, stack: Stack) -> None:
    """The issue's bar: 0 lost, 0 duplicates, 100 % dead-lettered, no process that needs a manual restart."""
    tails = "\n".join(f"--- {n}\n{stack.log_tail(n)}" for n in stack.children)
    assert figures.ok, f"{figures}\n{tails}"


__all__ = [
    "FAULT_EVENTS",
    "Figures",
    "assert_figures",
    "dead_letter_records",
    "envelopes",
    "event_set",
    "expected_incidents",
    "measure",
    "report",
    "scenario_events",
    "send",
    "wait_until_complete",
]
