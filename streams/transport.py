"""The worker's Kafka transport: Faust's aiokafka driver with a configurable fetch wait.

faust-streaming 0.15 builds its worker consumer with ``fetch_max_wait_ms=1500`` and no setting
for it. Tansu (the dev broker) holds every fetch for the whole wait even when records arrive
meanwhile, so each Faust hop added up to 1.5 s of latency (measured by ``cityops bench``: p50 of
1.6 s at 200 events/s, 125 ms with a 100 ms wait). The subclasses below only replace that one
number, before the consumer starts (aiokafka reads it when it builds its fetcher in ``start()``).
"""

from __future__ import annotations

from typing import Any

import faust
from faust.transport.drivers import aiokafka as driver


def transport_class(fetch_max_wait_ms: int) -> type[driver.Transport]:
    """Faust's aiokafka Transport whose worker consumer waits at most ``fetch_max_wait_ms`` per fetch."""

    class ConsumerThread(driver.AIOKafkaConsumerThread):  # type: ignore[misc]
        def _create_worker_consumer(self, transport: Any) -> Any:
            consumer = super()._create_worker_consumer(transport)
            consumer._fetch_max_wait_ms = fetch_max_wait_ms  # read by AIOKafkaConsumer.start()
            return consumer

    class Consumer(driver.Consumer):  # type: ignore[misc]
        def _new_consumer_thread(self) -> Any:
            return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    class Transport(driver.Transport):  # type: ignore[misc]
        pass

    Transport.Consumer = Consumer
    return Transport


class App(faust.App):  # type: ignore[misc]
    """A Faust app whose consumer transport honours ``fetch_max_wait_ms``."""

    def __init__(self, *args: Any, fetch_max_wait_ms: int = 100, **kwargs: Any) -> None:
        self.fetch_max_wait_ms = fetch_max_wait_ms
        super().__init__(*args, **kwargs)

    def _new_transport(self) -> Any:
        return transport_class(self.fetch_max_wait_ms)(self.conf.broker_consumer, self)
