"""Benchmark: CPU per record of the worker's send paths, against a real broker.

The detect stage sends one record per incident snapshot, and ingest one per events envelope. This
measures, in CPU microseconds of this process per record (the broker runs in its own process):

- ``faust_topic_send``: Faust's ``Topic.send`` (what the agents used before ``streams.publisher``);
- ``publisher``: ``streams.publisher.Publisher.send``, what the worker uses: the app's producer plus
  a done callback that hands a failed record to ``SendErrors``;
- ``producer_send``: the app's producer alone (the floor: aiokafka's batching and partitioner).

Each round sends ``--records`` keyed records of about 600 bytes (an incident snapshot's size) and
flushes; the best of ``--repeat`` rounds is reported, so a busy neighbour only makes it slower.

Usage::

    .venv/bin/python bench/send_path.py [--records 20000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):
    sys.path.insert(0, str(REPO))

from streams.app import build_runtime  # noqa: E402
from streams.broker import DevBroker  # noqa: E402
from streams.publisher import Publisher  # noqa: E402
from streams.settings import Settings  # noqa: E402
from streams.topics import create_topics  # noqa: E402

PATHS = ("faust_topic_send", "publisher", "producer_send")


async def measure(rt: Any, records: int, repeat: int) -> dict[str, float]:
    """Best CPU µs per record of each path."""
    topic = rt.settings.kafka.incidents_topic
    value = b'{"id":"inc","revision":1,' + b'"evidence":"....................",' * 16 + b'"end":0}'
    publisher = Publisher(rt.app, rt.resends)
    producer = rt.app.producer
    await producer.start()
    best = dict.fromkeys(PATHS, float("inf"))
    try:
        for round_ in range(repeat):
            for path in PATHS:
                await producer.flush()
                started = time.process_time()
                for i in range(records):
                    key = b"inc-%d" % i
                    if path == "faust_topic_send":
                        await rt.incidents.send(key=key, value=value)
                    elif path == "publisher":
                        await publisher.send(topic, key, value)
                    else:
                        await producer.send(topic, key, value, None, None, None)
                await producer.flush()
                await asyncio.sleep(0)  # the delivery callbacks run inside the timed span
                us = 1e6 * (time.process_time() - started) / records
                best[path] = min(best[path], us)
                print(f"round {round_ + 1}/{repeat} {path}: {us:.1f} µs/record", file=sys.stderr, flush=True)
    finally:
        await producer.stop()
    return {k: round(v, 1) for k, v in best.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp, DevBroker(log_path=Path(tmp) / "tansu.log") as broker:
        settings = Settings()
        settings.kafka.bootstrap = broker.bootstrap
        settings.kafka.topic_prefix = "bench.send"
        settings.kafka.app_id = "bench-send"
        settings.worker.data_dir = Path(tmp) / "faust"
        create_topics(settings.kafka)
        rt = build_runtime(settings)
        best = asyncio.run(measure(rt, args.records, args.repeat))
    result = {
        "records": args.records,
        "repeat": args.repeat,
        "cpu_us_per_record": best,
        "publisher_saves_vs_faust_us": round(best["faust_topic_send"] - best["publisher"], 1),
        "what": __doc__.split("\n\n", 1)[0],
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
