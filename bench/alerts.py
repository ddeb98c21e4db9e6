"""Benchmark: alert publishing, pure (AlertPublisher) and through `cityops alerts` on the real broker.

``.venv/bin/python bench/alerts.py --incidents 5000``. The incidents are flood/high snapshots, so
each matches the three default routes (json, CloudEvents binary, CAP with the district outline);
every fourth snapshot is a duplicate revision (no records). Starts its own Tansu broker and runs
the alerts process as a child (no webhooks, no coalescing: every snapshot is published). Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from rules.model import Evidence, Incident
from rules.pack import load_pack
from sinks.alerts import AlertPublisher, RouteTable, ZoneOutlines, default_routes
from streams.broker import DevBroker
from streams.procs import spawn
from streams.settings import Settings, default_pack


def snapshots(n: int) -> list[Incident]:
    """n snapshots of n/4 incidents: revisions 1, 2, 2 (duplicate), 3."""
    t0 = datetime(2026, 7, 1, tzinfo=UTC)
    out = []
    for i in range(n):
        inc, step = divmod(i, 4)
        revision = (1, 2, 2, 3)[step]
        out.append(
            Incident(
                id=f"{inc:024x}",
                revision=revision,
                pack="wuhan",
                pack_version="1",
                rule_id="flood.level",
                rule_version=1,
                kind="threshold",
                title="Water level above 30 cm",
                severity="high",
                category="flood",
                subject=f"wl-{inc}",
                layer="districts",
                zone_id="420102",
                zone_name="江岸区",
                window_start=t0,
                window_end=t0 + timedelta(minutes=15),
                first_event_at=t0,
                last_event_at=t0 + timedelta(seconds=revision),
                lon=114.3,
                lat=30.6,
                value=40.0 + revision,
                threshold=30.0,
                op=">",
                evidence=Evidence(event_ids=[f"e{revision}"], values=[40.0], count=revision),
            )
        )
    return out


def bench_publisher(items: list[Incident]) -> dict[str, Any]:
    pack = load_pack(default_pack())
    publisher = AlertPublisher(RouteTable(default_routes(), "cityops"), zones=ZoneOutlines(pack.layers))
    began = time.perf_counter()
    records = sum(len(publisher.publish(inc).records) for inc in items)
    took = time.perf_counter() - began
    return {"snapshots": len(items), "records": records, "seconds": round(took, 3),
            "snapshots_per_s": round(len(items) / took), "records_per_s": round(records / took)}  # fmt: skip


def wait_for_records(s: Settings, topic: str, expected: int, timeout_s: float = 300.0) -> int:
    """Read ``topic`` from the start until ``expected`` records have come (or ``timeout_s`` passed).

    One consumer that keeps reading, with the settings' fetch wait (20 ms), so the time it returns
    is when the last record could be read, not the end of a polling interval.
    """
    consumer = KafkaConsumer(enable_auto_commit=False, **s.kafka.consumer_options())
    parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or set()]
    consumer.assign(parts)
    consumer.seek_to_beginning()
    got, deadline = 0, time.monotonic() + timeout_s
    while got < expected and time.monotonic() < deadline:
        got += sum(len(recs) for recs in consumer.poll(timeout_ms=100).values())
    consumer.close()
    return got


def bench_process(items: list[Incident], logs: Path) -> dict[str, Any]:
    with DevBroker() as broker:
        s = Settings()
        s.kafka.bootstrap = broker.bootstrap
        s.alerts.stats_interval_s = 600
        # every snapshot is published (the count below expects it); coalescing would keep only the
        # latest of an incident's snapshots in one polled batch, a number that depends on batching
        s.alerts.coalesce = False
        child = spawn("alerts", ["cityops", "alerts"], s.to_env(), logs)
        try:
            deadline = time.monotonic() + 60
            while "alerts running" not in (logs / "alerts.log").read_text(errors="replace"):
                assert child.alive() and time.monotonic() < deadline, (logs / "alerts.log").read_text()
                time.sleep(0.1)
            time.sleep(4.0)  # let the consumer join its group before the clock starts
            expected = len(items) * 3 // 4
            # one record per batch (producer_options): Tansu's offsets are wrong for batches of several
            producer = KafkaProducer(linger_ms=5, **s.kafka.producer_options())
            began = time.monotonic()
            for inc in items:
                producer.send(s.kafka.incidents_topic, key=inc.id.encode(), value=inc.model_dump_json().encode())
            producer.flush()
            produced = time.monotonic() - began
            got = wait_for_records(s, f"{s.kafka.topic_prefix}.alerts.critical", expected)
            took = time.monotonic() - began
            if got < expected:
                tail = (logs / "alerts.log").read_text(errors="replace")[-2000:]
                raise SystemExit(f"only {got} of {expected} CAP records after 300 s; the alerts log ends:\n{tail}")
        finally:
            child.stop()
    return {"snapshots": len(items), "alerts_per_route": got, "produce_seconds": round(produced, 2),
            "seconds_until_last_cap_record": round(took, 2), "snapshots_per_s": round(len(items) / took)}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--incidents", type=int, default=5000, help="snapshots to publish")
    args = parser.parse_args()
    items = snapshots(args.incidents)
    with tempfile.TemporaryDirectory() as tmp:
        result = {"publisher": bench_publisher(items), "process": bench_process(items, Path(tmp))}
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
