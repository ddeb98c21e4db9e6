"""Benchmark: events/s through the real broker pipeline and through replay, on one event set.

Run with ``make bench`` (or ``.venv/bin/python bench/pipeline.py --events 50000``). It starts its
own Tansu broker, store writer and one worker, produces envelopes of ``--batch`` events, and
waits until the store holds every event and the incidents equal replay's. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from kafka import KafkaProducer

from rules.pack import load_pack
from rules.replay import replay
from sinks.read import StoreReader
from streams.broker import DevBroker, free_port
from streams.procs import spawn
from streams.settings import Settings
from streams.topics import create_topics


def make_events(n: int, seed: int = 1) -> list[dict[str, Any]]:
    """n readings and reports from 2,000 sensors spread over Wuhan's central districts."""
    rng = random.Random(seed)
    start = datetime(2026, 7, 1, tzinfo=UTC)
    sensors = [(f"s{i}", 114.15 + rng.random() * 0.35, 30.45 + rng.random() * 0.25) for i in range(2000)]
    out = []
    for i in range(n):
        sid, lon, lat = sensors[i % len(sensors)]
        ts = (start + timedelta(milliseconds=i * 20)).isoformat()
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


def bench_replay(pack_path: Path, events: list[dict[str, Any]]) -> tuple[float, int, int]:
    pack = load_pack(pack_path)
    lines = [orjson.dumps(e) for e in events]
    began = time.perf_counter()
    result = replay(pack, lines)
    rate = len(events) / (time.perf_counter() - began)
    return rate, len(result.incidents), sum(i.revision for i in result.incidents)


def bench_broker(
    settings: Settings, events: list[dict[str, Any]], batch: int, tmp: Path, revisions: int
) -> dict[str, float]:
    with DevBroker(log_path=tmp / "broker.log") as broker:
        settings.kafka.bootstrap = broker.bootstrap
        create_topics(settings.kafka)
        env = settings.to_env()
        children = [spawn("store", ["cityops", "store"], env, tmp), spawn("worker", ["cityops", "worker"], env, tmp)]
        reader = StoreReader(settings.store.quack_uri, settings.store.token.get_secret_value())
        try:
            # warm up: wait until the worker has joined and processed one message
            # one key: Kafka keeps one source's messages in order (sequence rules need it)
            producer = KafkaProducer(linger_ms=5, max_request_size=8_000_000, **settings.kafka.producer_options())
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
            _wait(lambda: reader.scalar("SELECT count(*) FROM events") == 1, 120)
            began = time.perf_counter()
            for i in range(0, len(events), batch):
                producer.send(settings.kafka.raw_topic, orjson.dumps({"events": events[i : i + batch]}), key=b"bench")
            producer.flush()
            produced = time.perf_counter() - began
            _wait(lambda: reader.scalar("SELECT count(*) FROM events") == len(events) + 1, 900)
            stored = time.perf_counter() - began
            # complete = every incident at its final revision (what replay gives)
            _wait(lambda: reader.scalar("SELECT sum(revision) FROM incidents") == revisions, 900)
            elapsed = time.perf_counter() - began
            incidents = int(reader.scalar("SELECT count(*) FROM incidents"))
            producer.close()
        finally:
            for child in children:
                child.stop()
    return {
        "pipeline_events_per_s": len(events) / elapsed,
        "pipeline_seconds": elapsed,
        "events_stored_seconds": stored,
        "produce_seconds": produced,
        "pipeline_incidents": incidents,
    }


def _wait(check: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = time.monotonic()
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:
            pass
        if time.monotonic() - last > 10:
            print("... still waiting", file=sys.stderr)
            last = time.monotonic()
        time.sleep(0.2)
    raise SystemExit(f"timed out after {timeout}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=500, help="events per Kafka message")
    args = parser.parse_args()
    events = make_events(args.events)
    with tempfile.TemporaryDirectory(prefix="cityops-bench-") as tmp_name:
        tmp = Path(tmp_name)
        settings = Settings()
        settings.kafka.topic_prefix = "bench"
        settings.store.path = tmp / "bench.duckdb"
        settings.store.quack_port = free_port()
        settings.worker.data_dir = tmp / "faust"
        settings.worker.clock = "event"  # the events are from 2026-07-01: only event time may move the watermark
        replay_rate, replay_incidents, revisions = bench_replay(settings.rules.pack, events)
        print(f"replay: {replay_rate:,.0f} events/s", file=sys.stderr)
        result = bench_broker(settings, events, args.batch, tmp, revisions)
    result.update(
        {
            "events": args.events,
            "batch": args.batch,
            "replay_events_per_s": replay_rate,
            "replay_incidents": replay_incidents,
            "incidents_equal": result["pipeline_incidents"] == replay_incidents,
        }
    )
    print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in result.items()}, indent=2))


if __name__ == "__main__":
    main()
