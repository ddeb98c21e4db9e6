"""Benchmark: rule state per active sensor, with 100,000 simulated sensors (issue #7: about 1 KB or less).

Run with ``.venv/bin/python bench/memory.py`` (``--sensors``, ``--readings``, ``--alarm-share``;
``--worker`` also feeds the same sensors, ``--worker-readings`` readings each, through a broker to
one live ``cityops worker`` and reports its RSS; ``--no-engine`` skips the in-process part).

The sensors are spread over Wuhan's 13 districts with the demo pack's metric mix (water level,
PM2.5, night noise, manhole tilt). Each reports ``--readings`` readings a minute apart, starting at
23:00 Wuhan time (so the night-noise schedule is live). A share ``--alarm-share`` of them is over
its rule's threshold on every reading, so that threshold, window, proximity and sustained rules
hold incident state for them; the others read normal values. The readings are grouped as the
live detect stage sees them (envelopes per zone, one source position per envelope, the entry's
home partition recorded) and run through ``rules.engine.Engine`` with a dict as state, as replay
does, then ticked once.

Measured, per sensor:

- ``serialized``: JSON bytes of every state key and value, which is what the Faust table's
  changelog stores and what a moved partition has to read back;
- ``heap``: Python heap held by the state (``sys.getsizeof`` over every container, key and value,
  each object counted once), the same for the state as a recovering worker holds it (decoded
  from JSON, traced with tracemalloc), and the process RSS growth over the run;
- the engine's own memory besides the state (its rule index and other caches).

Prints one JSON document; ``target_bytes_per_sensor`` is the budget from the issue.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import resource
import sys
import time
import tracemalloc
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import orjson

from rules.engine import Engine
from rules.model import Reading
from rules.pack import LoadedPack, load_pack
from rules.pipeline import RAW_POSITION_BASE

PACK = Path(__file__).resolve().parent.parent / "rules" / "packs" / "wuhan" / "pack.yaml"
TARGET = 1024
START = datetime.fromisoformat("2026-07-01T23:00:00+08:00")  # night: the noise schedule is live

#: metric -> (share of sensors, normal range, alarm range); alarms cross the demo pack's thresholds
METRICS: dict[str, tuple[float, tuple[float, float], tuple[float, float]]] = {
    "water_level_cm": (0.35, (4.0, 15.0), (32.0, 45.0)),  # > 30: threshold, sustained (2m), correlation
    "pm25": (0.25, (15.0, 70.0), (155.0, 220.0)),  # > 150 threshold, hourly district window, near schools
    "noise_db": (0.25, (38.0, 52.0), (58.0, 75.0)),  # > 55 at night for 10m: sustained
    "manhole_tilt_deg": (0.15, (0.0, 3.0), (18.0, 40.0)),  # > 15: threshold
}


@dataclass(frozen=True)
class Sensor:
    id: str
    metric: str
    lon: float
    lat: float
    alarm: bool


def make_sensors(pack: LoadedPack, n: int, alarm_share: float, seed: int = 11) -> list[Sensor]:
    """``n`` sensors at random points inside Wuhan's districts, with the demo metric mix."""
    rng = random.Random(seed)
    np_rng = np.random.default_rng(seed)
    layer = pack.layers["districts"]
    x0, y0, x1, y1 = _bbox(layer)
    points: list[tuple[float, float]] = []
    while len(points) < n:
        lon = np_rng.uniform(x0, x1, n)
        lat = np_rng.uniform(y0, y1, n)
        inside = [bool(z) for z in layer.locate(lon, lat)]
        points.extend((round(float(a), 6), round(float(b), 6)) for a, b, ok in zip(lon, lat, inside, strict=True) if ok)
    names, weights = list(METRICS), [m[0] for m in METRICS.values()]
    out = []
    for i, (x, y) in enumerate(points[:n]):
        metric = rng.choices(names, weights)[0]
        out.append(Sensor(f"{metric.split('_')[0][:5]}-{i:06d}", metric, x, y, rng.random() < alarm_share))
    return out


def _bbox(layer: Any) -> tuple[float, float, float, float]:
    bounds = np.array([g.bounds for g in layer.geoms])
    return float(bounds[:, 0].min()), float(bounds[:, 1].min()), float(bounds[:, 2].max()), float(bounds[:, 3].max())


def make_readings(sensors: list[Sensor], readings: int, seed: int = 12) -> list[Reading]:
    """``readings`` readings per sensor, one a minute, each sensor at its own second of the minute."""
    rng = random.Random(seed)
    out = []
    for n, s in enumerate(sensors):
        _, normal, alarm = METRICS[s.metric]
        lo, hi = alarm if s.alarm else normal
        for k in range(readings):
            ts = START + timedelta(minutes=k, milliseconds=(n * 997) % 60_000)
            out.append(
                Reading(
                    id=f"{s.id}-{k}",
                    ts=ts,
                    lon=s.lon,
                    lat=s.lat,
                    sensor_id=s.id,
                    metric=s.metric,
                    value=round(rng.uniform(lo, hi), 1),
                )
            )
    out.sort(key=lambda r: (r.ts, r.id))
    return out


def run_engine(
    pack: LoadedPack, readings: list[Reading], *, partitions: int, envelope: int
) -> tuple[Engine, dict[str, Any], int]:
    """Fold the readings into a dict state the way the detect stage does; returns messages applied.

    Each second of readings is split by zone (the events topic's key) into envelopes of at most
    ``envelope`` events; each envelope is one message of its zone's partition, with a raw source
    position like the one ingest stamps on it.
    """
    engine = Engine(pack)
    state: dict[str, Any] = {}
    offsets: Counter[int] = Counter()
    layer_ids = pack.layers["districts"].ids
    part_of = {z: i % partitions for i, z in enumerate(sorted(layer_ids))}
    messages = 0
    for _, chunk in _by_second(readings):
        enriched = engine.enrich(chunk)
        by_zone: dict[str, list[Any]] = defaultdict(list)
        for item in enriched:
            by_zone[item.primary_zone("districts") or "_outside"].append(item)
        for zone in sorted(by_zone):
            items = by_zone[zone]
            p = part_of.get(zone, 0)
            for i in range(0, len(items), envelope):
                position = (RAW_POSITION_BASE + p, offsets[p])
                offsets[p] += 1
                engine.process(items[i : i + envelope], state, position=position, home=p)
                messages += 1
    engine.tick(state)
    return engine, state, messages


def _by_second(readings: list[Reading]) -> list[tuple[int, list[Reading]]]:
    groups: dict[int, list[Reading]] = defaultdict(list)
    for r in readings:
        groups[int(r.ts.timestamp())].append(r)
    return sorted(groups.items())


def serialized(state: dict[str, Any]) -> tuple[int, dict[str, int], dict[str, int], int]:
    """Changelog bytes (JSON key + value) in all, per rule, entries per rule, and the largest entry."""
    total, per_rule, entries, largest = 0, Counter[str](), Counter[str](), 0
    for key, value in state.items():
        size = len(orjson.dumps(key)) + len(orjson.dumps(value))
        rule = key.split("|", 1)[0]
        total += size
        per_rule[rule] += size
        entries[rule] += 1
        largest = max(largest, size)
    return total, dict(per_rule), dict(entries), largest


def deep_size(obj: Any, seen: set[int] | None = None) -> int:
    """sys.getsizeof over the containers and their items, counting each object once."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    size = sys.getsizeof(obj)
    if isinstance(obj, dict):
        size += sum(deep_size(k, seen) + deep_size(v, seen) for k, v in obj.items())
    elif isinstance(obj, (list, tuple, set)):
        size += sum(deep_size(v, seen) for v in obj)
    return size


def engine_caches(engine: Engine) -> dict[str, int]:
    """Heap of the engine's mutable attributes that could grow with the sensors (indexes, caches).

    Its pack and compiled rules are fixed at start and not counted. Kinds may keep per-batch
    caches, and the engine's locator remembers the zones of the points it located
    (``rules.geo.POINT_CACHE``); they are counted too.
    """
    fixed = {"pack", "ctx", "compiled"}
    out: dict[str, int] = {}
    holders: list[tuple[str, Any]] = [("engine", engine)] + [
        (f"kind[{c.rule.id}]", c.kind) for c in getattr(engine, "compiled", [])
    ]
    for prefix, holder in holders:
        for name, value in vars(holder).items():
            if name in fixed or not isinstance(value, (dict, list, set)):
                continue
            out[f"{prefix}.{name}"] = deep_size(value)
    for name, value in vars(engine).items():  # helper objects (selectors, indexes) one level down
        if name in fixed or isinstance(value, (dict, list, set, int, float, str)) or value is None:
            continue
        for sub, inner in vars(value).items() if hasattr(value, "__dict__") else []:
            if isinstance(inner, (dict, list, set)):
                out[f"engine.{name}.{sub}"] = deep_size(inner)
    out["engine.locator.points"] = deep_size(engine.locator.points)
    return {k: v for k, v in sorted(out.items()) if v > 0}


def rss_kb() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def measure(sensors: int, readings: int, alarm_share: float, partitions: int, envelope: int) -> dict[str, Any]:
    pack = load_pack(PACK)
    fleet = make_sensors(pack, sensors, alarm_share)
    events = make_readings(fleet, readings)
    Engine(pack).process(Engine(pack).enrich(events[:10]), {})  # warm imports and lazy caches outside the trace
    gc.collect()
    rss0 = rss_kb()
    began = time.perf_counter()
    engine, state, messages = run_engine(pack, events, partitions=partitions, envelope=envelope)
    seconds = time.perf_counter() - began
    gc.collect()
    rss1 = rss_kb()
    caches = engine_caches(engine)
    total, per_rule, entries, largest = serialized(state)
    state_heap = deep_size(state)
    # the same state as a worker holds it after reading the changelog back (values decoded from JSON)
    blob = {k: orjson.dumps(v) for k, v in state.items()}
    gc.collect()
    tracemalloc.start()
    recovered = {k: orjson.loads(v) for k, v in blob.items()}
    recovered_heap, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del recovered, blob
    by_metric = Counter(s.metric for s in fleet)
    return {
        "bench": "rule-state memory per active sensor",
        "sensors": sensors,
        "readings_per_sensor": readings,
        "events": len(events),
        "messages": messages,
        "alarm_share": alarm_share,
        "sensors_by_metric": dict(sorted(by_metric.items())),
        "engine_seconds": round(seconds, 1),
        "state_entries": len(state),
        "serialized_bytes": total,
        "serialized_bytes_per_sensor": round(total / sensors, 1),
        "largest_entry_bytes": largest,
        "heap_bytes_per_sensor": round(state_heap / sensors, 1),
        "heap_recovered_bytes_per_sensor": round(recovered_heap / sensors, 1),
        "rss_delta_bytes_per_sensor": round((rss1 - rss0) * 1024 / sensors, 1),
        "engine_caches_bytes": caches,
        "engine_caches_bytes_per_sensor": round(sum(caches.values()) / sensors, 2),
        "per_rule": {
            r: {"entries": entries[r], "bytes": per_rule[r], "bytes_per_sensor": round(per_rule[r] / sensors, 1)}
            for r in sorted(per_rule)
        },
        "target_bytes_per_sensor": TARGET,
        "within_target": total / sensors <= TARGET and state_heap / sensors <= TARGET,
    }


def _proc_rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def _proc_cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _metric(url: str, name: str, label: str) -> float:
    import urllib.request

    with urllib.request.urlopen(url, timeout=5) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(name) and label in line:
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def worker_rss(sensors: int, readings: int, alarm_share: float, envelope: int = 500) -> dict[str, Any]:
    """RSS of one live `cityops worker` before and after ``sensors`` sensors' readings went through it.

    Starts a Tansu broker and one worker (default settings: rule state in memory, rebuilt from the
    events topic), produces the readings to the raw topic in envelopes, waits until ingest has routed
    every event and the worker's CPU has been idle for 10 s, then reads its RSS.
    """
    import tempfile

    from kafka import KafkaProducer

    from streams.broker import DevBroker, free_port
    from streams.procs import spawn
    from streams.settings import Settings
    from streams.topics import create_topics

    pack = load_pack(PACK)
    fleet = make_sensors(pack, sensors, alarm_share)
    docs = [r.model_dump(mode="json", exclude_none=True) for r in make_readings(fleet, readings)]
    with tempfile.TemporaryDirectory() as tmp, DevBroker(log_path=Path(tmp) / "broker.log") as broker:
        settings = Settings()
        settings.kafka.bootstrap = broker.bootstrap
        settings.kafka.topic_prefix = "bench.memory"
        settings.kafka.app_id = "bench-memory"
        settings.worker.data_dir = Path(tmp) / "faust"
        settings.worker.clock = "event"
        settings.worker.tick_s = 3600.0  # no ticks: the worker's CPU goes idle once the events are done
        settings.metrics.worker_port = free_port()
        create_topics(settings.kafka)
        child = spawn("worker", ["cityops", "worker"], settings.to_env(), Path(tmp) / "logs")
        url = f"http://127.0.0.1:{settings.metrics.worker_port}/metrics"
        try:
            deadline = time.monotonic() + 120
            while (
                time.monotonic() < deadline
                and "partitions assigned" not in (Path(tmp) / "logs" / "worker.log").read_text()
            ):
                assert child.alive(), (Path(tmp) / "logs" / "worker.log").read_text()[-3000:]
                time.sleep(0.5)
            time.sleep(2.0)
            idle_kb = _proc_rss_kb(child.proc.pid)
            producer = KafkaProducer(
                acks="all", linger_ms=20, **{**settings.kafka.producer_options(), "batch_size": 2**20}
            )
            began = time.monotonic()
            for i in range(0, len(docs), envelope):
                producer.send(
                    settings.kafka.raw_topic,
                    key=str(i).encode(),
                    value=orjson.dumps({"events": docs[i : i + envelope]}),
                )
            producer.flush()
            producer.close()
            quiet_since, cpu = time.monotonic(), _proc_cpu_s(child.proc.pid)
            while True:
                assert child.alive(), "the worker died"
                time.sleep(2.0)
                now_cpu = _proc_cpu_s(child.proc.pid)
                routed = _metric(url, "cityops_events_out_total", 'stage="ingest"')
                if now_cpu - cpu > 0.3 or routed < len(docs):
                    quiet_since = time.monotonic()
                cpu = now_cpu
                if time.monotonic() - quiet_since >= 10.0:
                    break
            seconds = time.monotonic() - began - 10.0
            busy_kb = _proc_rss_kb(child.proc.pid)
        finally:
            child.stop(grace=20)
    return {
        "sensors": sensors,
        "events": len(docs),
        "seconds": round(seconds, 1),
        "rss_idle_mb": round(idle_kb / 1024, 1),
        "rss_after_mb": round(busy_kb / 1024, 1),
        "rss_delta_bytes_per_sensor": round((busy_kb - idle_kb) * 1024 / sensors, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sensors", type=int, default=100_000)
    parser.add_argument("--readings", type=int, default=4, help="Readings per sensor, one a minute.")
    parser.add_argument("--alarm-share", type=float, default=0.05, help="Share of sensors over their threshold.")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--envelope", type=int, default=500, help="Events per message.")
    parser.add_argument("--worker", action="store_true", help="Also measure a live worker's RSS through the broker.")
    parser.add_argument("--worker-readings", type=int, default=2, help="Readings per sensor fed to the live worker.")
    parser.add_argument("--no-engine", action="store_true", help="Skip the in-process engine measurement.")
    args = parser.parse_args(argv)
    result: dict[str, Any] = {}
    if not args.no_engine:
        result = measure(args.sensors, args.readings, args.alarm_share, args.partitions, args.envelope)
    if args.worker:
        result["worker"] = worker_rss(args.sensors, args.worker_readings, args.alarm_share)
    result["max_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
