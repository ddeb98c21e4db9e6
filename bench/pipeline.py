"""Benchmark: events/s of one worker process (ingest -> detect -> incidents topic) and of replay.

Run with ``make bench`` (or ``.venv/bin/python bench/pipeline.py --events 50000``). It starts its
own Tansu broker and one worker, produces envelopes of ``--batch`` events, and reads the incidents
topic until the latest snapshot of every incident equals replay's (incident parity). The worker's
rate is timed from the first produce to the broker timestamp of the last incident record (written
by the worker's producer), so the bench's own polling does not count. Prints JSON.

``--zones 1000 --rules 100`` runs the issue's configuration: a synthetic 1,000-cell grid layer
over Wuhan (the routing layer) and a generated pack of 100 threshold/window/sustained rules over
five metrics, written to a temp dir. Without ``--zones`` the bundled Wuhan pack is used.
``--with-store`` also runs the store writer (it shares the two cores with the worker).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import signal
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: the checkout first (tests/ has package-like folders)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import orjson
import yaml
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from rules.model import Incident
from rules.pack import load_pack
from rules.replay import replay
from streams.broker import DevBroker, free_port
from streams.procs import Child, spawn
from streams.settings import Settings, default_pack
from streams.topics import create_topics

START = datetime(2026, 7, 1, tzinfo=UTC)
BBOX = (114.15, 30.45, 114.50, 30.70)  # central Wuhan, WGS-84
METRICS = ["pm25", "water_level_cm", "noise_db", "temperature_c", "wind_ms"]


def make_events(n: int, seed: int = 1) -> list[dict[str, Any]]:
    """n readings and reports from 2,000 sensors spread over Wuhan's central districts."""
    rng = random.Random(seed)
    sensors = [(f"s{i}", 114.15 + rng.random() * 0.35, 30.45 + rng.random() * 0.25) for i in range(2000)]
    out = []
    for i in range(n):
        sid, lon, lat = sensors[i % len(sensors)]
        ts = (START + timedelta(milliseconds=i * 20)).isoformat()
        if i % 10 == 0:
            out.append(
                {
                    "kind": "report",
                    "id": f"r{i}",
                    "ts": ts,
                    "lon": lon,
                    "lat": lat,
                    "category": rng.choice(["illegal_dumping", "waterlogging", "noise"]),
                }
            )
        else:
            metric = "water_level_cm" if i % 2 else "pm25"
            value = rng.uniform(0, 35) if metric == "water_level_cm" else rng.uniform(10, 160)
            out.append(
                {
                    "kind": "reading",
                    "id": f"e{i}",
                    "ts": ts,
                    "lon": lon,
                    "lat": lat,
                    "sensor_id": sid,
                    "metric": metric,
                    "value": round(value, 2),
                }
            )
    return out


def make_grid_events(n: int, seed: int = 1) -> list[dict[str, Any]]:
    """n readings of five metrics from 5,000 sensors spread over the grid's bounding box."""
    rng = random.Random(seed)
    x0, y0, x1, y1 = BBOX
    sensors = [
        (f"g{i}", METRICS[i % len(METRICS)], x0 + rng.random() * (x1 - x0), y0 + rng.random() * (y1 - y0))
        for i in range(5000)
    ]
    out = []
    for i in range(n):
        sid, metric, lon, lat = sensors[i % len(sensors)]
        out.append(
            {
                "kind": "reading",
                "id": f"e{i}",
                "ts": (START + timedelta(milliseconds=i * 20)).isoformat(),
                "lon": lon,
                "lat": lat,
                "sensor_id": sid,
                "metric": metric,
                "value": round(rng.uniform(0, 100), 2),
            }
        )
    return out


def grid_layer(zones: int) -> dict[str, Any]:
    """A GeoJSON grid of ``zones`` rectangular cells over BBOX (row by row)."""
    x0, y0, x1, y1 = BBOX
    nx = math.ceil(math.sqrt(zones * (x1 - x0) / (y1 - y0)))
    ny = math.ceil(zones / nx)
    dx, dy = (x1 - x0) / nx, (y1 - y0) / ny
    features = []
    for k in range(zones):
        i, j = k % nx, k // nx
        a, b = x0 + i * dx, y0 + j * dy
        ring = [[a, b], [a + dx, b], [a + dx, b + dy], [a, b + dy], [a, b]]
        features.append(
            {
                "type": "Feature",
                "properties": {"zone_id": f"c{k:05d}", "name": f"cell {k}"},
                "geometry": {"type": "Polygon", "coordinates": [ring]},
            }
        )
    return {"type": "FeatureCollection", "features": features}


def grid_rules(count: int) -> list[dict[str, Any]]:
    """``count`` rules cycling through threshold, window and sustained kinds over METRICS."""
    rules: list[dict[str, Any]] = []
    for i in range(count):
        metric = METRICS[i % len(METRICS)]
        base = {
            "id": f"bench.r{i:03d}",
            "title": f"bench rule {i} on {metric}",
            "severity": "medium",
            "category": "bench",
            "layer": "grid",
            "match": {"kind": "reading", "metric": metric},
        }
        shade = (i // len(METRICS)) % 5 * 0.1
        match i % 3:
            case 0:
                rules.append({**base, "kind": "threshold", "op": ">", "value": 99.0 + shade, "dedup": "15m"})
            case 1:
                rules.append(
                    {
                        **base,
                        "kind": "window",
                        "aggregate": "max",
                        "window": "10m",
                        "group_by": "zone",
                        "op": ">=",
                        "value": 99.3 + shade,
                    }
                )
            case _:
                rules.append(
                    {
                        **base,
                        "kind": "sustained",
                        "op": ">",
                        "value": 95.0 + shade * 10,
                        "for": "1m",
                        "resolve_after": "2m",
                    }
                )
    return rules


def write_grid_pack(directory: Path, zones: int, rules: int) -> Path:
    """The synthetic pack (grid layer + generated rules) in ``directory``; returns the pack file."""
    (directory / "grid.geojson").write_text(json.dumps(grid_layer(zones)))
    doc = {
        "pack": "bench",
        "version": "1",
        "title": f"bench: {zones}-cell grid, {rules} rules",
        "allowed_lateness": "1h",
        "layers": {"grid": {"file": "grid.geojson"}},
        "rules": grid_rules(rules),
    }
    path = directory / "pack.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def bench_replay(pack_path: Path, events: list[dict[str, Any]]) -> tuple[float, dict[str, Incident]]:
    pack = load_pack(pack_path)
    lines = [orjson.dumps(e) for e in events]
    began = time.perf_counter()
    result = replay(pack, lines)
    rate = len(events) / (time.perf_counter() - began)
    return rate, {i.id: i for i in result.incidents}


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its reaped children (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


class IncidentsTail:
    """Reads the incidents topic from the beginning, keeping the latest revision per id (cheaply)."""

    def __init__(self, settings: Settings) -> None:
        kafka = settings.kafka
        self.consumer = KafkaConsumer(enable_auto_commit=False, **kafka.client_options())
        self.consumer.assign([TopicPartition(kafka.incidents_topic, p) for p in range(kafka.partitions)])
        self.consumer.seek_to_beginning()
        self.latest: dict[str, tuple[int, bytes]] = {}
        self.records = 0
        self.last_ts_ms = 0

    def poll(self) -> None:
        for records in self.consumer.poll(timeout_ms=300, max_records=100_000).values():
            for rec in records:
                doc = orjson.loads(rec.value)
                self.records += 1
                self.last_ts_ms = max(self.last_ts_ms, rec.timestamp)
                prev = self.latest.get(doc["id"])
                if prev is None or doc["revision"] >= prev[0]:
                    self.latest[doc["id"]] = (int(doc["revision"]), rec.value)

    def revisions(self) -> dict[str, int]:
        return {k: v[0] for k, v in self.latest.items()}

    def incidents(self) -> dict[str, Incident]:
        return {k: Incident.model_validate_json(v[1]) for k, v in self.latest.items()}


def bench_broker(
    settings: Settings,
    events: list[dict[str, Any]],
    batch: int,
    tmp: Path,
    expected: dict[str, Incident],
    store: bool,
    quiet_s: float = 30.0,
) -> dict[str, Any]:
    want = {k: v.revision for k, v in expected.items()}
    children: list[Child] = []
    tmp.mkdir(parents=True, exist_ok=True)
    with DevBroker(log_path=tmp / "broker.log") as broker:
        settings.kafka.bootstrap = broker.bootstrap
        create_topics(settings.kafka)
        env = settings.to_env()
        try:
            if store:
                children.append(spawn("store", ["cityops", "store"], env, tmp))
            worker = spawn("worker", ["cityops", "worker"], env, tmp)
            children.append(worker)
            # batched: the worker reads the raw topic by offsets, never by Tansu's end offsets
            options = {**settings.kafka.producer_options(), "batch_size": 4_000_000}
            producer = KafkaProducer(linger_ms=5, max_request_size=8_000_000, **options)
            _warm_up(settings, producer, worker)
            tail = IncidentsTail(settings)
            payloads = [orjson.dumps({"events": events[i : i + batch]}) for i in range(0, len(events), batch)]
            cpu0 = _cpu_seconds(worker.proc.pid)
            began = time.time()
            # one key: Kafka keeps one source's messages in order
            for payload in payloads:
                producer.send(settings.kafka.raw_topic, payload, key=b"bench")
            producer.flush()
            produced = time.time() - began
            # until parity, or (a pipeline that never reaches it) until the topic has been quiet for quiet_s
            deadline = time.monotonic() + 900
            quiet_since, seen = time.monotonic(), -1
            while tail.revisions() != want:
                if time.monotonic() > deadline or not worker.alive():
                    raise SystemExit(f"no parity: {len(tail.latest)} incidents on the topic, replay has {len(want)}")
                if tail.records != seen:
                    quiet_since, seen = time.monotonic(), tail.records
                elif time.monotonic() - quiet_since > quiet_s:
                    print(f"no parity, and no incident for {quiet_s:.0f} s: stopping", file=sys.stderr)
                    break
                tail.poll()
            cpu = _cpu_seconds(worker.proc.pid) - cpu0
            elapsed = tail.last_ts_ms / 1000 - began
            time.sleep(1.0)  # anything after parity would be a duplicate or an extra incident
            tail.poll()
            incidents = tail.incidents()
            producer.close()
        finally:
            for child in children:
                child.stop()
    return {
        "worker_events_per_s": len(events) / elapsed,
        "worker_seconds": elapsed,
        "worker_cpu_seconds": cpu,
        "worker_events_per_cpu_s": len(events) / cpu if cpu else None,
        "produce_seconds": produced,
        "incident_records": tail.records,
        "pipeline_incidents": len(incidents),
        "incidents_equal": incidents == expected,
        "incidents_differing": sum(incidents.get(k) != v for k, v in expected.items())
        + len(incidents.keys() - expected),
    }


def _warm_up(settings: Settings, producer: KafkaProducer, worker: Child) -> None:
    """Send one event and wait for its envelope on the events topic (the worker has joined)."""
    warm = {
        "kind": "reading",
        "id": "warmup",
        "ts": "2026-06-30T00:00:00+00:00",
        "lon": 114.3,
        "lat": 30.6,
        "sensor_id": "w",
        "metric": "pm25",
        "value": 1.0,
    }
    producer.send(settings.kafka.raw_topic, orjson.dumps(warm), key=b"bench")
    producer.flush()
    consumer = KafkaConsumer(enable_auto_commit=False, **settings.kafka.client_options())
    consumer.assign([TopicPartition(settings.kafka.events_topic, p) for p in range(settings.kafka.partitions)])
    consumer.seek_to_beginning()
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            if not worker.alive():
                raise SystemExit(f"the worker died, see {worker.log}")
            for records in consumer.poll(timeout_ms=500).values():
                if any(b'"warmup"' in (r.value or b"") for r in records):
                    return
        raise SystemExit("the worker did not start within 120 s")
    finally:
        consumer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=500, help="events per Kafka message")
    parser.add_argument("--zones", type=int, default=0, help="synthetic grid cells (0: the Wuhan pack)")
    parser.add_argument("--rules", type=int, default=100, help="generated rules (with --zones)")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=1, help="broker runs on the same events (best and spread)")
    parser.add_argument("--with-store", action="store_true", help="also run the store writer")
    parser.add_argument(
        "--changelog",
        action="store_true",
        help="rule state in a Faust changelog table (worker.state_changelog), one record per producer batch",
    )
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # children are stopped in finally blocks
    with tempfile.TemporaryDirectory(prefix="cityops-bench-") as tmp_name:
        tmp = Path(tmp_name)
        if args.zones:
            pack_path = write_grid_pack(tmp, args.zones, args.rules)
            events = make_grid_events(args.events)
        else:
            pack_path = default_pack()
            events = make_events(args.events)
        replay_rate, expected = bench_replay(pack_path, events)
        print(f"replay: {replay_rate:,.0f} events/s, {len(expected)} incidents", file=sys.stderr)
        runs = []
        for n in range(args.repeat):
            settings = Settings()
            settings.rules.pack = pack_path
            settings.kafka.topic_prefix = "bench"
            settings.kafka.partitions = args.partitions
            settings.store.path = tmp / f"bench-{n}.duckdb"
            settings.store.quack_port = free_port()
            settings.worker.data_dir = tmp / f"faust-{n}"
            settings.worker.clock = "event"  # the events are from 2026-07-01: only event time moves the watermark
            if args.changelog:
                settings.worker.state_changelog = True
            run = bench_broker(settings, events, args.batch, tmp / f"run-{n}", expected, args.with_store)
            print(f"run {n}: {run['worker_events_per_s']:,.0f} events/s", file=sys.stderr)
            runs.append(run)
    rates = [r["worker_events_per_s"] for r in runs]
    result = {
        "events": args.events,
        "batch": args.batch,
        "pack": "wuhan" if not args.zones else f"grid {args.zones} zones, {args.rules} rules",
        "partitions": args.partitions,
        "state_changelog": args.changelog,
        "worker_events_per_s_best": max(rates),
        "worker_events_per_s_spread": [min(rates), max(rates)],
        "worker_events_per_s_median": statistics.median(rates),
        "replay_events_per_s": replay_rate,
        "replay_incidents": len(expected),
        "incidents_equal": all(r["incidents_equal"] for r in runs),
        "runs": runs,
    }
    print(json.dumps(_rounded(result), indent=2))


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 2)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


if __name__ == "__main__":
    main()
