"""``cityops gateway http|mqtt``: the ingest gateways. Options are backed by CITYOPS_GATEWAY__* variables."""

from __future__ import annotations

import click

from streams.settings import Settings


@click.group()
def gateway() -> None:
    """Ingest gateways: Open311/SensorThings/CloudEvents over HTTP, and the MQTT bridge."""


@gateway.command("http")
@click.option(
    "--host",
    envvar="CITYOPS_GATEWAY__HTTP__HOST",
    default=None,
    help="Address to bind (default 127.0.0.1) [CITYOPS_GATEWAY__HTTP__HOST]",
)
@click.option(
    "--port",
    envvar="CITYOPS_GATEWAY__HTTP__PORT",
    type=int,
    default=None,
    help="Port (default 8080) [CITYOPS_GATEWAY__HTTP__PORT]",
)
@click.pass_context
def http(ctx: click.Context, host: str | None, port: int | None) -> None:
    """Serve Open311 GeoReport v2, SensorThings Observations and CloudEvents (see docs/gateways.md)."""
    from streams.gateways.http import run_http
    from streams.gateways.outbox import GatewayError

    settings: Settings = ctx.obj
    try:
        run_http(settings, host, port)
    except GatewayError as exc:
        raise click.ClickException(str(exc)) from exc


@gateway.command("mqtt")
@click.option(
    "--host",
    envvar="CITYOPS_GATEWAY__MQTT__HOST",
    default=None,
    help="MQTT broker host (default 127.0.0.1) [CITYOPS_GATEWAY__MQTT__HOST]",
)
@click.option(
    "--port",
    envvar="CITYOPS_GATEWAY__MQTT__PORT",
    type=int,
    default=None,
    help="MQTT broker port (default 1883) [CITYOPS_GATEWAY__MQTT__PORT]",
)
@click.option(
    "--topic",
    "topics",
    multiple=True,
    help="Topic filter to subscribe to, repeatable [CITYOPS_GATEWAY__MQTT__TOPICS as a JSON list]",
)
@click.pass_context
def mqtt(ctx: click.Context, host: str | None, port: int | None, topics: tuple[str, ...]) -> None:
    """Bridge MQTT topics to the raw Kafka topic (QoS 1, acknowledged after Kafka)."""
    from streams.gateways.mqtt import run_mqtt
    from streams.gateways.outbox import GatewayError

    settings: Settings = ctx.obj
    if host:
        settings.gateway.mqtt.host = host
    if port:
        settings.gateway.mqtt.port = port
    if topics:
        settings.gateway.mqtt.topics = list(topics)
    try:
        run_mqtt(settings)
    except GatewayError as exc:
        raise click.ClickException(str(exc)) from exc
