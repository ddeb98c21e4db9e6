"""Subscribe to a cityops alert topic with kafka-python and print one line per alert.

    pip install kafka-python==3.0.12
    python kafka_python_consumer.py --bootstrap 127.0.0.1:9092 --topic cityops.alerts.all

Understands every route format: ``json`` (the alert payload), CloudEvents binary (``ce_*`` headers)
and structured (``application/cloudevents+json``), CAP XML and Smart Data Models JSON. Offsets are
committed after the alert is handled (at least once): drop duplicates by ``message_id`` and keep
the highest ``revision`` per incident id (the record key).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import xml.etree.ElementTree as ET
from typing import Any

from kafka import KafkaConsumer

CAP = {"cap": "urn:oasis:names:tc:emergency:cap:1.2"}


def describe(headers: dict[str, bytes], value: bytes) -> dict[str, Any]:
    """kind, message id and incident facts of one alert, whatever its format."""
    content_type = headers.get("content-type", b"").decode()
    if content_type.startswith("application/cap+xml"):
        alert = ET.fromstring(value)
        params = {
            p.findtext("cap:valueName", namespaces=CAP): p.findtext("cap:value", namespaces=CAP)
            for p in alert.iterfind("cap:info/cap:parameter", CAP)
        }
        return {
            "format": "cap",
            "kind": alert.findtext("cap:msgType", namespaces=CAP),
            "message_id": alert.findtext("cap:identifier", namespaces=CAP),
            "incident": params.get("cityops:incident"),
            "revision": params.get("cityops:revision"),
            "severity": params.get("cityops:severity"),
            "title": alert.findtext("cap:info/cap:event", namespaces=CAP),
        }
    doc = json.loads(value)
    if content_type.startswith("application/cloudevents+json"):
        fmt, payload = "cloudevents-structured", doc["data"]
    elif "ce_type" in headers:
        fmt, payload = "cloudevents-binary", doc
    elif doc.get("type") == "Alert":  # Smart Data Models
        data = doc["data"]
        return {"format": "sdm-alert", "kind": data["messageKind"], "message_id": data["messageId"],
                "incident": data["incidentId"], "revision": data["revision"], "severity": doc["severity"],
                "title": doc["name"]}  # fmt: skip
    else:
        fmt, payload = "json", doc
    incident = payload["incident"]
    return {
        "format": fmt,
        "kind": payload["kind"],
        "message_id": payload["message_id"],
        "incident": incident["id"],
        "revision": incident["revision"],
        "severity": incident["severity"],
        "title": incident["title"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--topic", default="cityops.alerts.all", help="topic, or several separated by commas")
    parser.add_argument("--group", default="cityops-alerts-example", help="consumer group id")
    parser.add_argument("--max-messages", type=int, default=0, help="stop after N alerts (0 = never)")
    parser.add_argument("--timeout", type=float, default=0.0, help="stop after S seconds (0 = never)")
    args = parser.parse_args(argv)

    consumer = KafkaConsumer(
        *args.topic.split(","),
        bootstrap_servers=args.bootstrap.split(","),
        group_id=args.group,
        auto_offset_reset="earliest",  # a new group starts at the oldest alert
        enable_auto_commit=False,
        session_timeout_ms=6000,  # joins fast; with the 45 s default a join can take 20 s or more
        heartbeat_interval_ms=1000,
    )
    seen = 0
    deadline = time.monotonic() + args.timeout if args.timeout else None
    try:
        while deadline is None or time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                for rec in records:
                    facts = describe({k: v for k, v in rec.headers}, rec.value)
                    print(f"{rec.topic}[{rec.partition}]@{rec.offset} key={rec.key.decode()} "
                          + " ".join(f"{k}={v}" for k, v in facts.items()), flush=True)  # fmt: skip
                    seen += 1
            consumer.commit()  # after handling: at least once
            if args.max_messages and seen >= args.max_messages:
                break
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
    print(f"{seen} alert(s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
