"""Restart the dev broker mid-run: the contract of docs/operations.md, "Faults and recovery".

Tansu keeps everything in memory, so a restart loses every topic, committed offset and changelog.
The contract tested here:

- what survives is the DuckDB store (incidents, history, events, dead letters);
- the worker, the store writer and the alerts process reconnect by themselves: none is restarted;
- the recovery step creates the topics again (``cityops topics create``);
- the producers resend their events from the start of the rule horizon, in the same order and the
  same envelopes (here: the whole event set). The store already holds the first half; the final
  incidents equal replay's, with deterministic ids and no duplicate rows.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from faultkit import (
    Figures,
    assert_figures,
    envelopes,
    event_set,
    expected_incidents,
    measure,
    report,
    send,
    wait_until_complete,
)
from stack import Stack, make_settings

from streams.broker import DevBroker
from streams.topics import create_topics

pytestmark = [pytest.mark.integration, pytest.mark.faults]

EVENTS = 20_000
ENVELOPE = 250


def test_broker_restart_without_restarting_any_process_gives_replays_incidents(tmp_path: Path) -> None:
    events = event_set(EVENTS)
    expected = expected_incidents(events)
    half = len(events) // 2
    expected_first = expected_incidents(events[:half])
    figures = Figures("broker_restart", len(events))
    began = time.monotonic()
    broker = DevBroker(log_path=tmp_path / "tansu.log").start()  # its own broker: the others' topics survive
    stack = Stack(make_settings(broker, tmp_path, "brokerrestart"), tmp_path / "logs")
    try:
        stack.start("store")
        stack.start("alerts")
        stack.start("worker")
        messages = envelopes(events, ENVELOPE)
        first = envelopes(events[:half], ENVELOPE)
        assert messages[: len(first)] == first, "the half must end on an envelope boundary"
        send(stack.settings, first)
        assert wait_until_complete(stack, expected_first, timeout=180), "the first half before the restart"
        stored_before = int(stack.reader.scalar("SELECT count(*) FROM events"))

        broker.stop()
        time.sleep(3.0)  # down for a moment: every client sees connection errors
        broker.start()
        create_topics(stack.settings.kafka)  # `cityops topics create`
        send(stack.settings, messages)  # the producers resend from the start of the horizon

        complete = wait_until_complete(stack, expected, timeout=240)
        if complete:
            stack.wait_for(
                "every event archived",
                lambda: stack.reader.scalar("SELECT count(*) FROM events") == len(events),
                timeout=60,
            )
        figures.seconds = round(time.monotonic() - began, 1)
        measure(stack, figures, expected, check_topic=False)  # the topic holds only what came after the restart
        figures.extra |= {"complete": complete, "events_stored_before_restart": stored_before}
        report(figures)
        assert_figures(figures, stack)
    finally:
        stack.close()
        broker.stop()
