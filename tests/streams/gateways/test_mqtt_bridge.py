"""The MQTT bridge against a real Mosquitto and a real Kafka-protocol broker: QoS 1, acked after Kafka."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as paho
import pytest
from gateway_client import PACK
from mosquitto_proc import Mosquitto
from paho.mqtt.enums import CallbackAPIVersion
from stack import make_settings, read_topic

from rules.model import DeadLetterRecord
from rules.sources import source_key
from streams.broker import DevBroker
from streams.gateways.mqtt import MqttBridge, check_startup
from streams.gateways.outbox import GatewayError, KafkaOutbox, MemoryOutbox
from streams.settings import Settings
from streams.topics import create_topics

pytestmark = pytest.mark.integration

READING = {
    "kind": "reading",
    "ts": "2026-07-01T00:00:00Z",
    "lon": 114.27,
    "lat": 30.59,
    "sensor_id": "wl-1",
    "metric": "water_level_cm",
    "value": 12.0,
}


def bridge_settings(s: Settings, mosq: Mosquitto, client_id: str = "bridge-test") -> Settings:
    s.rules.pack = PACK
    s.gateway.mqtt.port = mosq.port
    s.gateway.mqtt.client_id = client_id
    s.gateway.mqtt.batch_linger_s = 0.02
    s.gateway.mqtt.mapping = s.gateway.mqtt.mapping.model_copy(update={"sensor_id": "topic[1]", "metric": "topic[2]"})
    return s


def publisher(mosq: Mosquitto) -> paho.Client:
    client = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="test-publisher")
    client.connect("127.0.0.1", mosq.port)
    client.loop_start()
    return client


def publish(client: paho.Client, topic: str, payload: Any) -> None:
    data = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    client.publish(topic, data, qos=1).wait_for_publish(5)


def wait(what: str, check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def envelopes(box: MemoryOutbox, s: Settings) -> list[dict[str, Any]]:
    return [e for v in box.values(s.kafka.raw_topic) for e in json.loads(v)["events"]]


def test_every_payload_format_reaches_kafka_and_bad_ones_are_dead_lettered(
    broker: DevBroker, mosquitto: Mosquitto, tmp_path: Path
) -> None:
    s = bridge_settings(make_settings(broker, tmp_path, "mqttall"), mosquitto)
    create_topics(s.kafka)
    box = KafkaOutbox(s.kafka, max_in_flight=100, warm_topics=(s.kafka.raw_topic, s.kafka.deadletter_topic))
    bridge = MqttBridge(s, box).start()
    assert bridge.wait_connected()
    time.sleep(0.3)  # subscriptions
    pub = publisher(mosquitto)
    try:
        publish(pub, "cityops/events/app", {"events": [READING | {"id": "ours-1"}, READING | {"id": "ours-2"}]})
        first = {
            "Datastream": {
                "@iot.id": "pm-7",
                "name": "pm25",
                "Thing": {"@iot.id": 7, "Locations": [{"location": {"type": "Point", "coordinates": [114.42, 30.64]}}]},
            },
            "result": 180,
            "phenomenonTime": "2026-07-01T00:00:00Z",
        }
        publish(pub, "v1.1/Datastreams(pm-7)/Observations", first)
        publish(pub, "v1.1/Datastreams(pm-7)/Observations", {"result": 190, "phenomenonTime": "2026-07-01T00:01:00Z"})
        publish(pub, "sensors/wl-3/water_level_cm", {"lon": 114.27, "lat": 30.59, "value": 33, "ts": 1751328000})
        publish(pub, "sensors/wl-3/water_level_cm", b'{"lon": 114.27, "lat": NaN, "value": 1}')
        wait("bridge acks", lambda: bridge.stats()["acked"] == 5 and bridge.stats()["unacked_batches"] == 0)
    finally:
        pub.loop_stop()
        pub.disconnect()
        bridge.stop()
        box.close()
    records = read_topic(s, s.kafka.raw_topic, 2.0)
    events = [e for r in records for e in json.loads(r.value)["events"]]
    # every envelope travels under its sensors' source key, so one sensor's readings stay in order
    for r in records:
        keys = {source_key(e["sensor_id"], s.kafka.partitions) for e in json.loads(r.value)["events"]}
        assert keys == {r.key}
    by_id = {e["id"]: e for e in events}
    assert {"ours-1", "ours-2", "st-ds-pm-7-1782864000000", "st-ds-pm-7-1782864060000", "wl-3-1751328000"} == set(by_id)
    assert by_id["st-ds-pm-7-1782864060000"]["lon"] == 114.42  # the bare observation used the cached location
    assert by_id["wl-3-1751328000"]["metric"] == "water_level_cm"
    [dead] = [DeadLetterRecord.model_validate_json(r.value) for r in read_topic(s, s.kafka.deadletter_topic, 2.0)]
    assert dead.kind == "bad_json" and "NaN" in dead.reason
    assert dead.source.startswith("mqtt:sensors/wl-3/water_level_cm#")


def test_messages_are_only_acknowledged_after_kafka_so_a_crash_loses_nothing(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    s = bridge_settings(Settings(), mosquitto, client_id="bridge-ack")
    stuck = MemoryOutbox(max_in_flight=100, hold=True)  # Kafka that never acks
    bridge = MqttBridge(s, stuck).start()
    assert bridge.wait_connected()
    time.sleep(0.3)
    pub = publisher(mosquitto)
    try:
        for i in range(5):
            publish(pub, "cityops/events/app", READING | {"id": f"r-{i}"})
        wait("5 events handed to kafka", lambda: len(envelopes(stuck, s)) == 5)
        assert bridge.stats()["acked"] == 0
    finally:
        bridge.stop(timeout=0.5)  # "crash": nothing was acknowledged
    healthy = MemoryOutbox(max_in_flight=100)
    again = MqttBridge(s, healthy).start()  # same client id: the broker redelivers the unacked messages
    try:
        wait("redelivery", lambda: len({e["id"] for e in envelopes(healthy, s)}) == 5)
        wait("acks", lambda: again.stats()["acked"] >= 5)
    finally:
        pub.loop_stop()
        pub.disconnect()
        again.stop()
    assert sorted({e["id"] for e in envelopes(healthy, s)}) == [f"r-{i}" for i in range(5)]
    probe = MemoryOutbox()
    third = MqttBridge(s, probe).start()  # everything was acked: nothing comes back
    try:
        assert third.wait_connected()
        time.sleep(1.0)
        assert envelopes(probe, s) == []
    finally:
        third.stop()


def test_a_slow_kafka_holds_acks_and_the_broker_stops_sending(mosquitto: Mosquitto) -> None:
    s = bridge_settings(Settings(), mosquitto, client_id="bridge-slow")
    s.gateway.mqtt.max_unacked = 3
    s.gateway.mqtt.batch_max = 1
    stuck = MemoryOutbox(max_in_flight=100, hold=True)
    bridge = MqttBridge(s, stuck).start()
    assert bridge.wait_connected()
    time.sleep(0.3)
    pub = publisher(mosquitto)
    try:
        for i in range(10):
            publish(pub, "cityops/events/app", READING | {"id": f"s-{i}"})
        time.sleep(1.0)
        assert bridge.stats()["messages"] == 3  # Receive Maximum: the broker holds the other 7
        stuck.hold = False
        stuck.release_held()
        wait("all ten", lambda: bridge.stats()["acked"] == 10)
        assert [e["id"] for e in envelopes(stuck, s)] == [f"s-{i}" for i in range(10)]
    finally:
        pub.loop_stop()
        pub.disconnect()
        bridge.stop()


def test_the_bridge_reconnects_after_the_mqtt_broker_restarts(mosquitto: Mosquitto) -> None:
    s = bridge_settings(Settings(), mosquitto, client_id="bridge-restart")
    s.gateway.mqtt.reconnect_max_s = 1.0
    box = MemoryOutbox()
    bridge = MqttBridge(s, box).start()
    try:
        assert bridge.wait_connected()
        mosquitto.stop()
        wait("disconnect noticed", lambda: not bridge.connected.is_set(), 10)
        mosquitto.start()
        assert bridge.connected.wait(15)
        time.sleep(0.3)
        pub = publisher(mosquitto)
        publish(pub, "cityops/events/app", READING | {"id": "after-restart"})
        wait("the message after the restart", lambda: [e["id"] for e in envelopes(box, s)] == ["after-restart"])
        pub.loop_stop()
        pub.disconnect()
    finally:
        bridge.stop()


def test_the_bridge_refuses_a_remote_broker_without_credentials() -> None:
    s = Settings()
    s.gateway.mqtt.host = "mqtt.example.org"
    with pytest.raises(GatewayError, match="without credentials"):
        check_startup(s)
    check_startup(Settings())


def test_a_batch_too_large_for_one_envelope_goes_as_several_in_order_and_all_are_acked(mosquitto: Mosquitto) -> None:
    s = bridge_settings(Settings(), mosquitto, client_id="bridge-split")
    s.gateway.envelope_max_bytes = 1024
    s.gateway.mqtt.batch_linger_s = 0.5  # one batch of all of them
    box = MemoryOutbox(max_in_flight=100)
    bridge = MqttBridge(s, box).start()
    assert bridge.wait_connected()
    time.sleep(0.3)
    pub = publisher(mosquitto)
    try:
        payload = {"events": [READING | {"id": f"r-{i:02d}", "value": float(i)} for i in range(40)]}
        publish(pub, "cityops/events/app", payload)
        wait("the batch acked", lambda: bridge.stats()["acked"] == 1 and bridge.stats()["unacked_batches"] == 0)
    finally:
        pub.loop_stop()
        pub.disconnect()
        bridge.stop()
    sent = [(value, key) for topic, value, key in box.records if topic == s.kafka.raw_topic]
    assert len(sent) > 1 and all(len(value) <= 1024 for value, _ in sent)
    assert {key for _, key in sent} == {source_key("wl-1", s.kafka.partitions)}
    assert [e["id"] for e in envelopes(box, s)] == [f"r-{i:02d}" for i in range(40)]
    assert bridge.stats()["rejected"] == 0
