"""The Kafka side of the gateways: a bounded number of records in flight, acks as futures.

A gateway accepts input only after Kafka acknowledged it. When more than ``max_in_flight``
records await an ack (Kafka is slow or gone), :meth:`Outbox.reserve` refuses and the HTTP
gateway answers 503 with ``Retry-After``; the MQTT bridge stops acknowledging instead.
Dead letters have their own budget of the same size: when it is spent they are dropped and
counted (the caller still hears why).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from kafka import KafkaProducer

from rules.model import DeadLetterRecord
from streams.errors import StreamsError
from streams.settings import KafkaSettings

logger = logging.getLogger(__name__)

Done = Callable[[BaseException | None], None]


class GatewayError(StreamsError):
    """A gateway cannot start or run (bad configuration, unreachable broker)."""


class OverloadedError(GatewayError):
    """Kafka did not take the records in time; the caller should retry later."""


class Outbox(ABC):
    """Where gateways put records. Thread-safe; ``done`` callbacks run on a producer thread."""

    def __init__(self, max_in_flight: int) -> None:
        self.max_in_flight = max_in_flight
        self._lock = threading.Lock()
        self.in_flight = 0
        self.dead_in_flight = 0
        self.sent = 0
        self.failed = 0
        self.dead_dropped = 0

    def reserve(self, n: int = 1) -> bool:
        """Take ``n`` in-flight slots; False when that would pass the limit."""
        with self._lock:
            if self.in_flight + n > self.max_in_flight:
                return False
            self.in_flight += n
            return True

    def release(self, n: int = 1) -> None:
        with self._lock:
            self.in_flight -= n

    def send(self, topic: str, value: bytes, key: bytes | None, done: Done) -> None:
        """Send one record whose slot was reserved; ``done(None)`` on ack, ``done(exc)`` on failure.

        The slot is released before ``done`` runs.
        """

        def finish(exc: BaseException | None) -> None:
            self.release()
            with self._lock:
                if exc is None:
                    self.sent += 1
                else:
                    self.failed += 1
            done(exc)

        try:
            self._send(topic, value, key, finish)
        except Exception as exc:  # the client refused at once (buffer full, closed, metadata timeout)
            finish(exc)

    def dead_letter(self, topic: str, record: DeadLetterRecord) -> bool:
        """Send a dead letter without waiting; False (and counted) when its budget is spent."""
        with self._lock:
            if self.dead_in_flight >= self.max_in_flight:
                self.dead_dropped += 1
                logger.warning("dead letter dropped (kafka slow) source=%s reason=%s", record.source, record.reason)
                return False
            self.dead_in_flight += 1

        def finish(exc: BaseException | None) -> None:
            with self._lock:
                self.dead_in_flight -= 1
                if exc is not None:
                    self.dead_dropped += 1
            if exc is not None:
                logger.warning("dead letter lost source=%s error=%s", record.source, exc)

        try:
            self._send(topic, record.model_dump_json().encode(), record.source.encode(), finish)
        except Exception as exc:
            finish(exc)
        return True

    async def send_async(self, topic: str, value: bytes, key: bytes | None, *, timeout: float) -> None:
        """Reserve, send and await the ack. Raises OverloadedError when full, slow or failed."""
        if not self.reserve():
            raise OverloadedError(f"{self.max_in_flight} records already await a Kafka ack")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()

        def done(exc: BaseException | None) -> None:
            loop.call_soon_threadsafe(_settle, future, exc)

        await loop.run_in_executor(self._executor, self.send, topic, value, key, done)
        try:
            await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError as exc:
            raise OverloadedError(f"Kafka did not acknowledge within {timeout:g}s") from exc
        except OverloadedError:
            raise
        except Exception as exc:
            raise OverloadedError(f"Kafka send failed: {exc}") from exc

    @property
    def _executor(self) -> ThreadPoolExecutor | None:
        return None

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {
                "in_flight": self.in_flight,
                "sent": self.sent,
                "failed": self.failed,
                "dead_in_flight": self.dead_in_flight,
                "dead_dropped": self.dead_dropped,
            }

    @abstractmethod
    def _send(self, topic: str, value: bytes, key: bytes | None, done: Done) -> None:
        """Hand one record to the client; call ``done`` exactly once, from any thread."""

    def flush(self, timeout: float = 10.0) -> None:  # noqa: B027 - optional hook
        """Wait for every record handed over so far."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the client."""


def _settle(future: asyncio.Future[None], exc: BaseException | None) -> None:
    if future.done():
        return
    if exc is None:
        future.set_result(None)
    else:
        future.set_exception(exc)


class KafkaOutbox(Outbox):
    """kafka-python producer (acks=all). ``send`` may block briefly, so async callers use a thread."""

    def __init__(
        self,
        kafka: KafkaSettings,
        *,
        max_in_flight: int,
        linger_ms: int = 2,
        client_id: str = "cityops-gateway",
        request_timeout_ms: int = 30_000,
        max_request_size: int = 4_194_304,
        warm_topics: tuple[str, ...] = (),
    ) -> None:
        super().__init__(max_in_flight)
        try:
            self.producer = KafkaProducer(
                client_id=client_id,
                acks="all",
                linger_ms=linger_ms,
                max_block_ms=5000,
                request_timeout_ms=request_timeout_ms,
                max_request_size=max_request_size,
                **kafka.producer_options(),
            )
        except Exception as exc:
            raise GatewayError(f"cannot reach Kafka at {kafka.bootstrap}: {exc}") from exc
        for topic in warm_topics:  # fetch metadata now, so that sends do not wait for it later
            self.producer.partitions_for(topic)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="outbox")

    @property
    def _executor(self) -> ThreadPoolExecutor | None:
        return self._pool

    def _send(self, topic: str, value: bytes, key: bytes | None, done: Done) -> None:
        future = self.producer.send(topic, value=value, key=key)
        future.add_callback(lambda _meta: done(None))
        future.add_errback(lambda exc: done(exc if isinstance(exc, BaseException) else GatewayError(str(exc))))

    def flush(self, timeout: float = 10.0) -> None:
        self.producer.flush(timeout)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self.producer.close(timeout=5)


class MemoryOutbox(Outbox):
    """Keeps records in memory and acks at once, or after ``delay`` s, or never (``hold``): for tests."""

    def __init__(self, max_in_flight: int = 1000, *, delay: float = 0.0, hold: bool = False) -> None:
        super().__init__(max_in_flight)
        self.records: list[tuple[str, bytes, bytes | None]] = []
        self.delay = delay
        self.hold = hold
        self._held: list[Done] = []

    def _send(self, topic: str, value: bytes, key: bytes | None, done: Done) -> None:
        self.records.append((topic, value, key))
        if self.hold:
            self._held.append(done)
        elif self.delay > 0:
            threading.Timer(self.delay, done, args=(None,)).start()
        else:
            done(None)

    def release_held(self, exc: BaseException | None = None) -> None:
        """Ack (or fail) everything held so far."""
        held, self._held = self._held, []
        for done in held:
            done(exc)

    def values(self, topic: str) -> list[Any]:
        return [value for t, value, _ in self.records if t == topic]
