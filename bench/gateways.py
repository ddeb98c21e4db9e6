"""Benchmark: events/s through the HTTP gateway and through the MQTT bridge into Kafka. Prints JSON.

Starts its own Tansu broker and Mosquitto (Debian's ``mosquitto``) on free loopback ports, and
the gateways in this process (the HTTP server on its own thread and loop). Loads are bounded in
count and concurrency and stay on 127.0.0.1.

    .venv/bin/python bench/gateways.py --requests 3000 --batches 200 --batch 500 --mqtt 20000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from rules.pack import load_pack
from streams.broker import DevBroker, free_port
from streams.gateways.http import BackgroundServer, HttpGateway
from streams.gateways.mqtt import MqttBridge
from streams.gateways.outbox import KafkaOutbox
from streams.settings import Settings, default_pack
from streams.topics import create_topics

START = datetime(2026, 7, 1, tzinfo=UTC)


def reading(i: int) -> dict[str, Any]:
    return {
        "kind": "reading",
        "id": f"b{i}",
        "ts": (START + timedelta(milliseconds=i)).isoformat(),
        "lon": 114.2 + (i % 100) * 0.002,
        "lat": 30.5 + (i % 70) * 0.002,
        "sensor_id": f"s{i % 500}",
        "metric": "water_level_cm",
        "value": float(i % 40),
    }


async def http_singles(url: str, n: int, concurrency: int) -> float:
    body = b"service_code=waterlogging&lat=30.59&long=114.27&description=bench"
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    sem = asyncio.Semaphore(concurrency)
    statuses: dict[int, int] = {}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

        async def one() -> None:
            async with sem, session.post(url + "/requests.json", data=body, headers=headers) as resp:
                await resp.read()
                statuses[resp.status] = statuses.get(resp.status, 0) + 1

        began = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(n)))
        elapsed = time.perf_counter() - began
    if statuses.get(201) != n:
        raise SystemExit(f"http singles: unexpected statuses {statuses}")
    return elapsed


async def http_batches(url: str, batches: int, size: int, concurrency: int) -> float:
    bodies = [orjson.dumps({"events": [reading(b * size + i) for i in range(size)]}) for b in range(batches)]
    sem = asyncio.Semaphore(concurrency)
    bad = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

        async def one(n: int, body: bytes) -> None:
            nonlocal bad
            headers = {
                "ce-specversion": "1.0",
                "ce-id": f"bench-{n}",
                "ce-source": "/bench",
                "ce-type": "bench.batch",
                "Content-Type": "application/json",
            }
            async with sem, session.post(url + "/cloudevents", data=body, headers=headers) as resp:
                await resp.read()
                bad += resp.status != 202

        began = time.perf_counter()
        await asyncio.gather(*(one(n, b) for n, b in enumerate(bodies)))
        elapsed = time.perf_counter() - began
    if bad:
        raise SystemExit(f"http batches: {bad} requests were not accepted")
    return elapsed


def start_mosquitto(tmp: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    conf = tmp / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 0\n")
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.1):
                return proc, port
        except OSError:
            time.sleep(0.05)
    raise SystemExit("mosquitto did not start")


def mqtt_run(settings: Settings, n: int, box: KafkaOutbox) -> float:
    bridge = MqttBridge(settings, box).start()
    if not bridge.wait_connected(10):
        raise SystemExit("bridge did not connect")
    time.sleep(0.3)
    pub = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="bench-publisher")
    pub.max_inflight_messages_set(1000)
    pub.max_queued_messages_set(0)
    pub.connect("127.0.0.1", settings.gateway.mqtt.port)
    pub.loop_start()
    payloads = [orjson.dumps(reading(10_000_000 + i)) for i in range(n)]
    began = time.perf_counter()
    infos = [pub.publish("cityops/events/bench", p, qos=1) for p in payloads]
    for info in infos:
        info.wait_for_publish(60)
    deadline = time.monotonic() + 120
    while bridge.stats()["acked"] < n and time.monotonic() < deadline:
        time.sleep(0.01)
    elapsed = time.perf_counter() - began
    stats = bridge.stats()
    pub.loop_stop()
    pub.disconnect()
    bridge.stop()
    if stats["acked"] < n:
        raise SystemExit(f"mqtt: only {stats['acked']} of {n} acked: {stats}")
    return elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=3000, help="single Open311 POSTs")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--batches", type=int, default=200, help="CloudEvents POSTs carrying --batch events each")
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--mqtt", type=int, default=20000, help="MQTT messages (one event each, QoS 1)")
    args = ap.parse_args()
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmpdir, DevBroker(log_path=Path(tmpdir) / "tansu.log") as broker:
        s = Settings()
        s.kafka.bootstrap = broker.bootstrap
        s.kafka.topic_prefix = "bench"
        s.rules.pack = default_pack()
        s.gateway.http.rate_per_s = 1e9
        s.gateway.http.rate_burst = 1_000_000_000
        s.gateway.http.max_events_per_request = 10_000
        create_topics(s.kafka)
        box = KafkaOutbox(
            s.kafka,
            max_in_flight=s.gateway.max_in_flight,
            linger_ms=2,
            warm_topics=(s.kafka.raw_topic, s.kafka.deadletter_topic),
        )
        gw = HttpGateway(s, box, load_pack(s.rules.pack))
        with BackgroundServer(gw.app()) as server:
            t = asyncio.run(http_singles(server.url, args.requests, args.concurrency))
            out["http_open311_single"] = {
                "requests": args.requests,
                "concurrency": args.concurrency,
                "seconds": round(t, 3),
                "events_per_s": round(args.requests / t),
            }
            n = args.batches * args.batch
            t = asyncio.run(http_batches(server.url, args.batches, args.batch, 4))
            out["http_cloudevents_batch"] = {
                "requests": args.batches,
                "batch": args.batch,
                "concurrency": 4,
                "seconds": round(t, 3),
                "events_per_s": round(n / t),
            }
        mosq, port = start_mosquitto(Path(tmpdir))
        try:
            s.gateway.mqtt.port = port
            s.gateway.mqtt.client_id = "bench-bridge"
            t = mqtt_run(s, args.mqtt, box)
            out["mqtt_bridge"] = {
                "messages": args.mqtt,
                "qos": 1,
                "batch_max": s.gateway.mqtt.batch_max,
                "seconds": round(t, 3),
                "events_per_s": round(args.mqtt / t),
            }
        finally:
            mosq.terminate()
            mosq.wait(5)
        box.close()
    out["note"] = "one process, 2 shared cores: client, gateway, Tansu and Mosquitto compete for CPU"
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
