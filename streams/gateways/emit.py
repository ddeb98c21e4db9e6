"""Simulator encoders: the scenario's events in each ingest format, sent through the real gateways.

- ``open311``: reports as form-encoded POST /requests.json; the rest on Kafka as JSON.
- ``gcj02-app``: reports as a map app would send them: JSON POST /requests.json with GCJ-02
  coordinates and ``"crs": "GCJ02"``; the rest on Kafka.
- ``sensorthings-mqtt``: readings as SensorThings Observations on
  ``v1.1/Datastreams(<sensor>)/Observations`` (the first one of each Datastream inline with its
  Thing's Location, later ones bare, as devices send them); the rest on Kafka.
- ``cloudevents``: every message as one binary-mode CloudEvent POST /cloudevents.

Malformed scenario messages always go to Kafka, so the worker dead-letters them as before.
"""

from __future__ import annotations

import logging
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from typing import Any

import orjson

from rules.crs import wgs84_to_gcj02
from streams.scenario import Message
from streams.settings import Settings

logger = logging.getLogger(__name__)

FORMATS = ("open311", "sensorthings-mqtt", "cloudevents", "gcj02-app")


def open311_form(event: dict[str, Any], api_key: str | None) -> dict[str, str]:
    """A scenario report as Open311 form fields (WGS-84)."""
    fields = {
        "service_code": str(event["category"]),
        "lat": repr(float(event["lat"])),
        "long": repr(float(event["lon"])),
        "requested_datetime": str(event["ts"]),
    }
    if event.get("description"):
        fields["description"] = str(event["description"])
    if api_key:
        fields["api_key"] = api_key
    return fields


def gcj02_app_request(event: dict[str, Any], api_key: str | None) -> dict[str, Any]:
    """A scenario report as a GCJ-02 map app sends it (JSON, coordinates shifted to GCJ-02)."""
    lon, lat = wgs84_to_gcj02(float(event["lon"]), float(event["lat"]))
    body: dict[str, Any] = {
        "service_code": event["category"],
        "lat": lat,
        "long": lon,
        "crs": "GCJ02",
        "requested_datetime": event["ts"],
        "description": event.get("description") or "",
    }
    if api_key:
        body["api_key"] = api_key
    return body


def observation(event: dict[str, Any], *, first: bool) -> tuple[str, dict[str, Any]]:
    """(MQTT topic, SensorThings Observation) for a scenario reading."""
    sensor = str(event["sensor_id"])
    obs: dict[str, Any] = {"phenomenonTime": event["ts"], "result": event["value"]}
    if first:
        obs["Datastream"] = {
            "@iot.id": sensor,
            "name": event["metric"],
            "unitOfMeasurement": {"symbol": event.get("unit") or ""},
            "ObservedProperty": {"name": event["metric"]},
            "Thing": {
                "@iot.id": sensor,
                "Locations": [{"location": {"type": "Point", "coordinates": [event["lon"], event["lat"]]}}],
            },
        }
    return f"v1.1/Datastreams({sensor})/Observations", obs


def cloudevent_binary(events: list[dict[str, Any]], n: int) -> tuple[dict[str, str], bytes]:
    """(headers, body) of a binary-mode CloudEvent carrying an envelope of events."""
    headers = {
        "ce-specversion": "1.0",
        "ce-id": f"sim-{n}-{int(time.time() * 1000)}",
        "ce-source": "/cityops/simulator",
        "ce-type": "org.cityops.events.batch",
        "Content-Type": "application/json",
    }
    return headers, orjson.dumps({"events": events})


class _Http:
    def __init__(self, base: str, api_key: str | None) -> None:
        self.base = base.rstrip("/")
        self.api_key = api_key

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> int:
        if self.api_key:
            headers = {**headers, "X-API-Key": self.api_key}
        req = urllib.request.Request(self.base + path, data=body, headers=headers, method="POST")
        for attempt in range(5):
            try:
                with urllib.request.urlopen(req, timeout=15) as resp:
                    return int(resp.status)
            except urllib.error.HTTPError as exc:
                if exc.code in (429, 503) and attempt < 4:
                    time.sleep(float(exc.headers.get("Retry-After") or 1))
                    continue
                logger.warning("gateway refused path=%s status=%d body=%s", path, exc.code, exc.read()[:300])
                return int(exc.code)
        return 0


def emit(
    settings: Settings,
    messages: list[Message],
    fmt: str,
    *,
    speed: float = 1.0,
    base_url: str | None = None,
    stop: threading.Event | None = None,
) -> dict[str, int]:
    """Send the scenario in ``fmt``; returns counts per path (``http_201``, ``mqtt``, ``kafka`` ...)."""
    from kafka import KafkaProducer

    g = settings.gateway
    api_key = g.http.api_keys[0].get_secret_value() if g.http.api_keys else None
    http = _Http(base_url or f"http://{g.http.host}:{g.http.port}", api_key)
    producer = KafkaProducer(
        client_id="cityops-simulator", linger_ms=5, acks="all", **settings.kafka.producer_options()
    )
    mqtt = _mqtt_client(settings) if fmt == "sensorthings-mqtt" else None
    counts: Counter[str] = Counter()
    seen: set[str] = set()
    began = time.monotonic()
    try:
        for n, msg in enumerate(messages):
            if stop is not None and stop.is_set():
                break
            if speed > 0:
                delay = began + msg.at_s / speed - time.monotonic()
                if delay > 0 and stop is not None and stop.wait(delay):
                    break
                if delay > 0 and stop is None:
                    time.sleep(delay)
            if msg.bad is not None:
                producer.send(settings.kafka.raw_topic, key=b"simulator", value=msg.bad)
                counts["kafka_bad"] += 1
                continue
            rest: list[dict[str, Any]] = []
            if fmt == "cloudevents":
                headers, body = cloudevent_binary(msg.events, n)
                counts[f"http_{http.post('/cloudevents', body, headers)}"] += 1
                counts["events"] += len(msg.events)
                continue
            for event in msg.events:
                if fmt == "open311" and event["kind"] == "report":
                    body = urllib.parse.urlencode(open311_form(event, api_key)).encode()
                    ctype = "application/x-www-form-urlencoded; charset=utf-8"
                    counts[f"http_{http.post('/requests.json', body, {'Content-Type': ctype})}"] += 1
                elif fmt == "gcj02-app" and event["kind"] == "report":
                    body = orjson.dumps(gcj02_app_request(event, api_key))
                    counts[f"http_{http.post('/requests.json', body, {'Content-Type': 'application/json'})}"] += 1
                elif mqtt is not None and event["kind"] == "reading":
                    topic, obs = observation(event, first=event["sensor_id"] not in seen)
                    seen.add(event["sensor_id"])
                    mqtt.publish(topic, orjson.dumps(obs), qos=1)
                    counts["mqtt"] += 1
                else:
                    rest.append(event)
            if rest:
                producer.send(settings.kafka.raw_topic, key=b"simulator", value=orjson.dumps({"events": rest}))
                counts["kafka"] += len(rest)
        producer.flush()
    finally:
        producer.close()
        if mqtt is not None:
            mqtt.loop_stop()
            mqtt.disconnect()
    logger.info("simulator done format=%s counts=%s", fmt, dict(counts))
    return dict(counts)


def _mqtt_client(settings: Settings) -> Any:
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    cfg = settings.gateway.mqtt
    client = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="cityops-simulator")
    if cfg.username:
        client.username_pw_set(cfg.username, cfg.password.get_secret_value() if cfg.password else None)
    client.connect(cfg.host, cfg.port, keepalive=30)
    client.loop_start()
    return client
