"""Subscribe to a cityops alert topic with confluent-kafka and print one line per alert.

    pip install confluent-kafka==2.16.1
    python confluent_consumer.py --bootstrap 127.0.0.1:9092 --topic cityops.alerts.flood

For brevity this one decodes the ``json`` and CloudEvents formats (see kafka_python_consumer.py
for CAP and Smart Data Models). Offsets are stored only after an alert is handled, and committed
in the background: at least once, so drop duplicates by the CloudEvents ``id`` / ``message_id``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from confluent_kafka import Consumer, KafkaException


def describe(headers: dict[str, bytes], value: bytes) -> dict[str, Any]:
    """kind, message id and incident facts of a json or CloudEvents alert."""
    doc = json.loads(value)
    if headers.get("content-type", b"").startswith(b"application/cloudevents+json"):
        attrs, payload = doc, doc["data"]  # structured mode: attributes and data in the value
    elif "ce_type" in headers:
        attrs, payload = {k[3:]: v.decode() for k, v in headers.items() if k.startswith("ce_")}, doc
    else:
        attrs, payload = {}, doc
    incident = payload["incident"]
    return {
        "type": attrs.get("type", "-"),
        "kind": payload["kind"],
        "message_id": attrs.get("id", payload["message_id"]),
        "incident": incident["id"],
        "revision": incident["revision"],
        "status": incident["status"],
        "severity": incident["severity"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--topic", default="cityops.alerts.flood", help="topic, or several separated by commas")
    parser.add_argument("--group", default="cityops-alerts-example-confluent", help="consumer group id")
    parser.add_argument("--max-messages", type=int, default=0, help="stop after N alerts (0 = never)")
    parser.add_argument("--timeout", type=float, default=0.0, help="stop after S seconds (0 = never)")
    args = parser.parse_args(argv)

    consumer = Consumer(
        {
            "bootstrap.servers": args.bootstrap,
            "group.id": args.group,
            "auto.offset.reset": "earliest",
            "enable.auto.offset.store": False,  # store each offset ourselves, after handling the alert
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 1000,
        }
    )
    consumer.subscribe(args.topic.split(","))
    seen = 0
    deadline = time.monotonic() + args.timeout if args.timeout else None
    try:
        while deadline is None or time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                raise KafkaException(msg.error())
            raw = msg.headers() or []  # a list of (name, value) on consumed messages
            pairs = raw.items() if isinstance(raw, dict) else raw
            headers = {k: v.encode() if isinstance(v, str) else (v or b"") for k, v in pairs}
            facts = describe(headers, msg.value() or b"")
            key = (msg.key() or b"").decode()
            print(f"{msg.topic()}[{msg.partition()}]@{msg.offset()} key={key} "
                  + " ".join(f"{k}={v}" for k, v in facts.items()), flush=True)  # fmt: skip
            consumer.store_offsets(msg)
            seen += 1
            if args.max_messages and seen >= args.max_messages:
                break
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()  # commits the stored offsets
    print(f"{seen} alert(s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
