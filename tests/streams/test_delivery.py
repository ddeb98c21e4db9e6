"""A raw message is acked (its offset committable) only once what ingest sent for it was delivered."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest
from faust.types.tuples import FutureMessage, PendingMessage
from stack import make_settings, read_topic

from streams.broker import DevBroker
from streams.delivery import Deliveries


class FakeResends:
    def __init__(self) -> None:
        self.futures: dict[int, asyncio.Future[bool]] = {}

    def outcome(self, message: Any) -> asyncio.Future[bool] | None:
        return self.futures.get(id(message))


def _pending(value: bytes, partition: int = 0, topic: str = "t.events") -> PendingMessage:
    return PendingMessage(None, b"k", value, partition, None, None, topic, topic, None)


def _sent(value: bytes) -> FutureMessage:
    return FutureMessage(_pending(value))


def run(body: Any) -> Any:
    return asyncio.run(body())


def test_a_message_whose_sends_are_all_delivered_is_acked_at_once() -> None:
    async def body() -> list[str]:
        acks: list[str] = []
        deliveries = Deliveries(FakeResends())
        done = _sent(b"a")
        done.set_result(None)  # type: ignore[arg-type]
        deliveries.ack_when_sent(lambda: acks.append("m1"), [done], "raw[0]@1")
        deliveries.ack_when_sent(lambda: acks.append("m2"), [], "raw[0]@2")  # nothing sent (all dead-lettered...)
        return acks

    assert run(body) == ["m1", "m2"]


def test_the_ack_waits_for_the_last_send() -> None:
    async def body() -> None:
        acks: list[str] = []
        deliveries = Deliveries(FakeResends())
        first, second = _sent(b"a"), _sent(b"b")
        deliveries.ack_when_sent(lambda: acks.append("m"), [first, second], "raw[0]@1")
        await asyncio.sleep(0)
        assert acks == [] and deliveries.waiting == 1
        first.set_result(None)  # type: ignore[arg-type]
        await asyncio.sleep(0)
        assert acks == [], "one send is still in flight"
        second.set_result(None)  # type: ignore[arg-type]
        await asyncio.sleep(0)
        assert acks == ["m"] and deliveries.waiting == 0

    run(body)


@pytest.mark.parametrize(("resent", "acked"), [(True, True), (False, False)])
def test_a_failed_send_acks_only_once_its_resend_is_delivered(resent: bool, acked: bool) -> None:
    async def body() -> None:
        acks: list[str] = []
        resends = FakeResends()
        deliveries = Deliveries(resends)
        ok, failing = _sent(b"a"), _sent(b"b")
        deliveries.ack_when_sent(lambda: acks.append("m"), [ok, failing], "raw[0]@7")
        ok.set_result(None)  # type: ignore[arg-type]
        # as Faust's Topic._on_published does: the future fails, then the sensor starts the resend
        failing.set_exception(RuntimeError("UnknownError"))
        retry = resends.futures[id(failing.message)] = asyncio.get_running_loop().create_future()
        await asyncio.sleep(0)
        assert acks == [], "not while the record is resent"
        retry.set_result(resent)
        await asyncio.sleep(0)
        assert acks == (["m"] if acked else [])
        assert deliveries.withheld == (0 if acked else 1) and deliveries.waiting == 0

    run(body)


def test_a_failed_send_that_is_not_resent_is_never_acked_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    from streams import metrics

    before = metrics.RAW_WITHHELD._value.get()

    async def body() -> list[str]:
        acks: list[str] = []
        deliveries = Deliveries(FakeResends())
        failing = _sent(b"b")
        deliveries.ack_when_sent(lambda: acks.append("m"), [failing], "cityops.raw[3]@41")
        failing.set_exception(RuntimeError("UnknownError"))
        await asyncio.sleep(0)
        return acks

    with caplog.at_level(logging.ERROR):
        assert run(body) == []
    assert "not acknowledged source=cityops.raw[3]@41" in caplog.text
    assert metrics.RAW_WITHHELD._value.get() == before + 1


@pytest.mark.integration
def test_a_message_whose_envelope_failed_is_acked_once_the_worker_resent_it(tmp_path: Path) -> None:
    """The worker's own resend path (``SendErrors``) against a broker that is down, then back."""
    from streams.app import SendErrors, build_runtime
    from streams.topics import create_topics

    down = DevBroker(log_path=tmp_path / "tansu.log").start()  # its own broker: it is stopped below
    try:
        s = make_settings(down, tmp_path, "delivery")
        s.worker.send_retry_s = 60
        create_topics(s.kafka)
        rt = build_runtime(s)
        assert rt.deliveries is not None
        [sensor] = [x for x in rt.app.sensors if isinstance(x, SendErrors)]
        topic = s.kafka.events_topic
        acks: list[str] = []

        async def body() -> None:
            producer = rt.app.producer
            await producer.start()
            try:
                down.stop()
                envelope = FutureMessage(_pending(b"envelope", 1, topic))
                rt.deliveries.ack_when_sent(lambda: acks.append("raw"), [envelope], "raw[0]@5")  # type: ignore[union-attr]
                # what Faust does when the send fails: fail the future, then tell the sensors
                state = rt.app.sensors.on_send_initiated(producer, topic, envelope.message, 0, 8)
                envelope.set_exception(RuntimeError("UnknownError"))
                rt.app.sensors.on_send_error(producer, RuntimeError("UnknownError"), state)
                await asyncio.sleep(1.5)  # a few resends fail: no broker
                assert acks == [] and sensor.pending, "not acked while the envelope is resent"
                down.start()
                create_topics(s.kafka)  # the dev broker lost them
                await asyncio.wait_for(asyncio.gather(*sensor.pending), 60)
                await asyncio.sleep(0)
            finally:
                await producer.stop()

        asyncio.run(body())
        assert acks == ["raw"], "acked once the resend was delivered"
        assert [(r.partition, r.value) for r in read_topic(s, topic)] == [(1, b"envelope")]
        assert not sensor.outcomes, "nothing is kept once the resend is over"
    finally:
        down.stop()
