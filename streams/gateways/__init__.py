"""Ingest gateways: HTTP (Open311, SensorThings, CloudEvents) and the MQTT bridge.

Thin I/O: parsing and mapping live in :mod:`rules.formats`. Importing this package does not
import aiohttp or paho; the submodules do.
"""

from streams.gateways.settings import GatewaySettings, HttpGatewaySettings, MqttGatewaySettings, SourceCRS

__all__ = ["GatewaySettings", "HttpGatewaySettings", "MqttGatewaySettings", "SourceCRS"]
