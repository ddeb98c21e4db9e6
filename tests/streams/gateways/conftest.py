"""Fixtures of the gateway tests: Debian's Mosquitto on a free loopback port."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from mosquitto_proc import Mosquitto

from streams.broker import free_port


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """Mosquitto on a free port: ``listener PORT 127.0.0.1``, anonymous, persistence off."""
    port = free_port()
    config = tmp_path / "mosquitto.conf"
    config.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest stdout\n"
        "max_queued_messages 10000\n"
    )
    broker = Mosquitto(port, config, tmp_path / "mosquitto.log").start()
    try:
        yield broker
    finally:
        broker.stop()
