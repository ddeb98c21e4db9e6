"""Rules with a cooldown and auto-resolve on the real broker: the live worker does as replay does.

A pack of the Wuhan districts with a threshold (1-minute dedup buckets) and a sustained rule, both
with a cooldown, is fed flapping sensors through the raw topic, each sensor's events keyed by
the sensor, in envelopes that cut its chains at arbitrary points; the threshold's incidents also
auto-resolve, at the worker's ticks. The incidents in DuckDB and on the incidents topic must equal
``rules.replay`` of the same events: one incident per chain, its counts and revisions summed over
the firings, resolved where replay resolves them (every sensor reads at the last moment, so every
partition's watermark ends where replay's does).
"""

from __future__ import annotations

import json
import random
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaProducer
from stack import Stack, latest_by_id, read_topic

from rules.model import Incident
from rules.pack import load_pack
from rules.replay import replay

pytestmark = pytest.mark.integration

WUHAN = Path(__file__).resolve().parents[2] / "rules" / "packs" / "wuhan"
PACK = """pack: cooled
version: "1"
timezone: Asia/Shanghai
allowed_lateness: 5m
layers:
  districts: {file: layers/districts.geojson}
rules:
  - id: flood.high
    kind: threshold
    title: Water level above 30 cm
    category: flood
    layer: districts
    match: {kind: reading, metric: water_level_cm}
    value: 30
    dedup: 1m
    cooldown: 3m
    auto_resolve: 4m
  - id: flood.sustained
    kind: sustained
    title: Water level above 30 cm for 2 minutes
    category: flood
    layer: districts
    match: {kind: reading, metric: water_level_cm}
    value: 30
    for: 2m
    cooldown: 10m
"""
START = datetime(2026, 7, 1, 0, 0, tzinfo=UTC)
SENSORS = {"wl-a": (114.30, 30.60), "wl-b": (114.31, 30.55), "wl-c": (114.27, 30.58), "wl-d": (114.35, 30.50)}


def _events(seed: int = 7) -> list[dict[str, Any]]:
    """Each sensor every 20 s for an hour, above 30 cm in bursts of a few minutes: chains of firings."""
    rng = random.Random(seed)
    out = []
    for sensor, (lon, lat) in SENSORS.items():
        high = False
        for step in range(180):
            if rng.random() < 0.15:
                high = not high
            out.append(
                {
                    "kind": "reading",
                    "id": f"{sensor}-{step}",
                    "ts": (START + timedelta(seconds=20 * step)).isoformat(),
                    "lon": lon,
                    "lat": lat,
                    "sensor_id": sensor,
                    "metric": "water_level_cm",
                    "value": 35.0 if high else 20.0,
                }
            )
    return sorted(out, key=lambda e: (e["ts"], e["id"]))


def _produce(stack: Stack, events: list[dict[str, Any]], seed: int = 3) -> None:
    """Each sensor's events in order, keyed by the sensor, in envelopes of 1 to 12 of its events."""
    rng = random.Random(seed)
    settings = stack.settings
    producer = KafkaProducer(client_id="cooldown-test", linger_ms=5, acks="all", **settings.kafka.producer_options())
    try:
        pending: dict[str, list[dict[str, Any]]] = {}
        for event in events:
            batch = pending.setdefault(event["sensor_id"], [])
            batch.append(event)
            if len(batch) >= rng.randint(1, 12):
                producer.send(
                    settings.kafka.raw_topic, key=event["sensor_id"].encode(), value=orjson.dumps({"events": batch})
                )
                pending[event["sensor_id"]] = []
        for sensor, batch in pending.items():
            if batch:
                producer.send(settings.kafka.raw_topic, key=sensor.encode(), value=orjson.dumps({"events": batch}))
        producer.flush()
    finally:
        producer.close()


def test_the_live_worker_counts_firings_on_the_same_incidents_as_replay(stack: Stack, tmp_path: Path) -> None:
    pack_dir = tmp_path / "pack"
    (pack_dir / "layers").mkdir(parents=True)
    shutil.copy(WUHAN / "layers" / "districts.geojson", pack_dir / "layers" / "districts.geojson")
    (pack_dir / "pack.yaml").write_text(PACK)
    stack.settings.rules.pack = pack_dir / "pack.yaml"
    events = _events()
    expected = {i.id: i for i in replay(load_pack(pack_dir), [json.dumps(e).encode() for e in events]).incidents}
    merged = [i for i in expected.values() if "cooldown" in i.details]
    assert {i.rule_id for i in merged} == {"flood.high", "flood.sustained"}, "the events make chains of both rules"
    assert any(i.details.get("auto_resolved") for i in expected.values()), "and threshold incidents resolve"
    over = sum(1 for e in events if e["value"] > 30)
    assert sum(i.evidence.count for i in expected.values() if i.rule_id == "flood.high") == over

    stack.start("store")
    stack.start("worker")
    _produce(stack, events)

    def complete() -> bool:
        rows = stack.stored_incidents()
        return {r["id"]: r["revision"] for r in rows} == {k: v.revision for k, v in expected.items()}

    stack.wait_for("the replayed incidents, at their final revisions, in the store", complete, timeout=150)
    rows = {r["id"]: r for r in stack.reader.rows("SELECT id, evidence_count, rule_status FROM incidents")}
    for inc_id, inc in expected.items():
        assert (rows[inc_id]["evidence_count"], rows[inc_id]["rule_status"]) == (inc.evidence.count, inc.status)
    snapshots = [
        Incident.model_validate_json(r.value) for r in read_topic(stack.settings, stack.settings.kafka.incidents_topic)
    ]
    assert latest_by_id(snapshots) == expected
    assert {s.id for s in snapshots} == set(expected), "no firing of a chain was sent under its own id"
