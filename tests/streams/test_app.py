"""The worker runtime's own send path (``Runtime.send``): what Faust's ``Topic.send`` did, cheaper."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import faust
import pytest
from stack import make_settings, read_topic

from rules.pipeline import partition_for
from streams.broker import DevBroker


class Heard(faust.Sensor):  # type: ignore[misc]
    """A sensor that writes down what it hears of sends (as Faust's monitor or SendErrors would)."""

    def __init__(self) -> None:
        super().__init__()
        self.initiated: list[tuple[str, bytes | None, int | None]] = []
        self.completed: list[tuple[str, int]] = []
        self.failed: list[str] = []

    def on_send_initiated(self, producer: Any, topic: str, message: Any, keysize: int, valsize: int) -> Any:
        self.initiated.append((topic, message.key, message.partition))
        return topic

    def on_send_completed(self, producer: Any, state: Any, metadata: Any) -> None:
        self.completed.append((state, metadata.partition))

    def on_send_error(self, producer: Any, exc: BaseException, state: Any) -> None:
        self.failed.append(state)


@pytest.mark.integration
def test_a_record_sent_by_the_runtime_reaches_its_partition_and_the_sensors_hear_of_it(
    broker: DevBroker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Keyed records land where Kafka's partitioner puts them, explicit partitions are kept, and a
    send that fails after it was handed over reaches ``SendErrors`` (counted and logged)."""
    from streams import metrics
    from streams.app import SendErrors, _sent, build_runtime
    from streams.topics import create_topics

    s = make_settings(broker, tmp_path, "rtsend")
    s.worker.send_retry_s = 0  # the failure below is only counted and logged
    create_topics(s.kafka)
    rt = build_runtime(s)
    [sensor] = [x for x in rt.app.sensors if isinstance(x, SendErrors)]
    heard = Heard()
    rt.app.sensors.add(heard)
    keys = [f"incident-{n}".encode() for n in range(12)]
    incidents, events = s.kafka.incidents_topic, s.kafka.events_topic
    errors = metrics.SEND_ERRORS.labels(incidents)._value.get()

    async def run() -> None:
        producer = rt.app.producer
        await producer.start()
        try:
            futures = [await rt.send(rt.incidents, b"v-" + key, key=key) for key in keys]
            futures.append(await rt.send(rt.events, b"envelope", partition=3))
            await asyncio.wait_for(asyncio.gather(*futures), 30)
            # a delivery that fails after the producer took the record (the broker refused it)
            state = rt.app.sensors.on_send_initiated(producer, incidents, _pending(), 1, 1)
            failed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            failed.set_exception(RuntimeError("NotLeaderForPartition"))
            with caplog.at_level(logging.ERROR):
                _sent(rt.app.sensors, producer, state, failed)
        finally:
            await producer.stop()

    asyncio.run(run())
    where = {k: partition_for(k.decode(), s.kafka.partitions) for k in keys}
    got = {r.key: (r.partition, r.value) for r in read_topic(s, incidents)}
    assert got == {k: (where[k], b"v-" + k) for k in keys}
    assert [(r.partition, r.value) for r in read_topic(s, events)] == [(3, b"envelope")]
    assert heard.initiated[:13] == [(incidents, k, None) for k in keys] + [(events, None, 3)]
    assert sorted(heard.completed) == sorted([(incidents, where[k]) for k in keys] + [(events, 3)])
    assert heard.failed == [incidents]
    assert metrics.SEND_ERRORS.labels(incidents)._value.get() == errors + 1
    assert f"send failed topic={incidents} partition=None" in caplog.text
    assert sensor.runtime is rt and not sensor.pending, "retries are off here"


def _pending() -> Any:
    from faust.types.tuples import PendingMessage

    return PendingMessage(None, b"k", b"v", None, None, None, "raw", "raw", None)
