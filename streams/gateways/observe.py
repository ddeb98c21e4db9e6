"""Metrics and health of the gateways (``CITYOPS_METRICS__GATEWAY_HTTP_PORT`` / ``..._MQTT_PORT``).

Events in and dead letters by kind use the shared counters of :mod:`streams.metrics` (the gateway
code counts them where it decides); request outcomes and the Kafka outbox come from the plain
counters the gateway objects already keep, read at scrape time.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import REGISTRY

from streams.metrics import Health, MetricsServer, StatsCollector, serve

if TYPE_CHECKING:
    from streams.gateways.http import HttpGateway
    from streams.gateways.mqtt import MqttBridge
    from streams.settings import Settings

BEAT_KEY: web.AppKey[asyncio.Task[None]] = web.AppKey("metrics_beat", asyncio.Task)


def _outbox_families(gateway: str) -> dict[str, tuple[str, str, str]]:
    return {"outbox.": ("cityops_gateway_outbox", f"Kafka outbox of the {gateway} gateway, by counter.", "counter")}


def http_metrics(settings: Settings, gateway: HttpGateway, app: web.Application) -> MetricsServer | None:
    """Serve the HTTP gateway's metrics; its event loop beats the health every second."""
    port = settings.metrics.gateway_http_port
    if port == 0:
        return None
    REGISTRY.register(
        StatsCollector(
            lambda: {"requests": dict(gateway.counts), "outbox": gateway.outbox.stats()},
            {
                "requests.": ("cityops_gateway_requests", "HTTP gateway counters (accepted, refused_*).", "outcome"),
                **_outbox_families("http"),
            },
            gauges={"outbox.in_flight": ("cityops_gateway_in_flight", "Records awaiting a Kafka ack.")},
            const_labels={"gateway": "http"},
        )
    )
    health = Health(stale_after_s=30.0)

    async def beat(app: web.Application) -> None:
        async def loop() -> None:
            while True:
                health.beat()
                await asyncio.sleep(1.0)

        task = asyncio.get_running_loop().create_task(loop())
        app[BEAT_KEY] = task

    async def stop(app: web.Application) -> None:
        task = app.get(BEAT_KEY)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    app.on_startup.append(beat)
    app.on_cleanup.append(stop)
    return serve(settings.metrics.host, port, health, process="gateway-http")


def mqtt_metrics(settings: Settings, bridge: MqttBridge) -> MetricsServer | None:
    """Serve the MQTT bridge's metrics; ready while connected to the MQTT broker."""
    port = settings.metrics.gateway_mqtt_port
    if port == 0:
        return None
    REGISTRY.register(
        StatsCollector(
            bridge.stats,
            _outbox_families("mqtt"),
            totals={
                "messages": ("cityops_gateway_mqtt_messages", "MQTT messages taken in."),
                "acked": ("cityops_gateway_mqtt_acked", "MQTT messages acknowledged after Kafka took them."),
                "retries": ("cityops_gateway_mqtt_retries", "Kafka sends retried."),
            },
            gauges={
                "outbox.in_flight": ("cityops_gateway_in_flight", "Records awaiting a Kafka ack."),
                "unacked_batches": ("cityops_gateway_mqtt_unacked_batches", "Batches awaiting Kafka."),
            },
            const_labels={"gateway": "mqtt"},
        )
    )
    health = Health(stale_after_s=30.0, ready_check=bridge.connected.is_set)

    def beat() -> None:
        while not bridge.stopping.wait(1.0):
            health.beat()

    health.beat()
    threading.Thread(target=beat, name="mqtt-health", daemon=True).start()
    return serve(settings.metrics.host, port, health, process="gateway-mqtt")
