"""SIGKILL the store writer mid-run (twice), restart it: the store equals replay, with no duplicate rows.

The event set stays below the 10-minute horizon of ``ops.sensor-silence``: with 30k events (750 s of
event time) sent paced, the live silence incident sometimes ends one revision above replay's, in the
worker's own output (the incidents topic), whatever the writer does. The engine's watermark is shared
by all partitions of a worker, so a partition that lags in event time looks silent (rules/kinds/silence.py
says replay equals stream only in event-time order). That is a rule-engine finding, not a writer one.
"""

from __future__ import annotations

import threading
import time

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
from stack import Stack

pytestmark = [pytest.mark.integration, pytest.mark.faults]

EVENTS = 24_000  # 600 s of event time: below the silence rule's 10 min horizon (see the module docstring)


def test_store_writer_sigkilled_mid_run_loses_and_duplicates_nothing(stack: Stack) -> None:
    events = event_set(EVENTS)
    expected = expected_incidents(events)
    figures = Figures("store_writer_sigkill_mid_run", len(events))
    began = time.monotonic()
    stack.start("store-0")
    stack.start("alerts")
    stack.start("worker")
    # paced over about 15 s, so the writer dies while incidents and events are flowing
    sender = threading.Thread(target=send, args=(stack.settings, envelopes(events, 250)), kwargs={"pace_s": 0.12})
    sender.start()
    kills = 0
    for target in (0, EVENTS // 3):
        stack.wait_for(
            f"more than {target} events in the store",
            lambda target=target: stack.reader.scalar("SELECT count(*) FROM events") > target,
            timeout=120,
        )
        stack.stop(f"store-{kills}", kill=True)
        time.sleep(2.0)  # the worker goes on producing incidents while the writer is down
        kills += 1
        stack.start(f"store-{kills}")  # the supervisor restarts it
    sender.join()
    complete = wait_until_complete(stack, expected, timeout=180)
    stack.wait_for(
        "every event archived", lambda: stack.reader.scalar("SELECT count(*) FROM events") == len(events), timeout=60
    )
    figures.supervisor_restarts = kills
    figures.seconds = round(time.monotonic() - began, 1)
    measure(stack, figures, expected)
    figures.extra |= {
        "complete": complete,
        "history_duplicates": int(
            stack.reader.scalar("SELECT count(*) - count(DISTINCT update_id) FROM incident_history")
        ),
    }
    report(figures)
    assert figures.extra["history_duplicates"] == 0
    assert_figures(figures, stack)
