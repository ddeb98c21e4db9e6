"""The worker's consumer uses the configured fetch wait (Faust hard-codes 1,500 ms)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from streams.app import build_runtime
from streams.settings import Settings


def worker_fetch_wait(tmp_path: Path, settings: Settings) -> int:
    settings.worker.data_dir = tmp_path / "faust"
    rt = build_runtime(settings)

    async def build() -> int:
        thread = rt.app.consumer._new_consumer_thread()
        consumer = thread._create_worker_consumer(rt.app.transport)
        try:
            return int(consumer._fetch_max_wait_ms)
        finally:
            await consumer.stop()

    return asyncio.run(build())


def test_the_worker_consumer_waits_as_configured(tmp_path: Path) -> None:
    s = Settings()
    s.kafka.fetch_max_wait_ms = 123
    assert worker_fetch_wait(tmp_path, s) == 123


def test_the_default_wait_is_short(tmp_path: Path) -> None:
    assert worker_fetch_wait(tmp_path, Settings()) == 20


def test_store_and_alert_consumers_get_it_too() -> None:
    s = Settings()
    s.kafka.fetch_max_wait_ms = 250
    assert s.kafka.consumer_options()["fetch_max_wait_ms"] == 250
    assert "fetch_max_wait_ms" not in s.kafka.producer_options()
