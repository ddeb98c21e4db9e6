"""A slow consumer during a burst 10x over the normal rate: nothing lost, nothing duplicated.

Events come at a normal rate, then ten times faster, then normal again. During the burst the
store writer is frozen (SIGSTOP) for longer than its session timeout, and the worker for a few
seconds, so both fall behind, lose their group membership and must catch up by themselves after
SIGCONT. No process is restarted.
"""

from __future__ import annotations

import os
import signal
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

EVENTS = 24_000
ENVELOPE = 100
NORMAL_PACE_S = 0.2  # 500 events/s
BURST_PACE_S = NORMAL_PACE_S / 10  # 5,000 events/s
WRITER_FROZEN_S = 15.0  # beyond the 6 s session timeout: the writer's group evicts it
WORKER_FROZEN_S = 5.0


def freeze(stack: Stack, name: str, seconds: float) -> None:
    """SIGSTOP the process group of ``name`` for ``seconds``, then SIGCONT."""
    pgid = stack.children[name].proc.pid
    os.killpg(pgid, signal.SIGSTOP)
    try:
        time.sleep(seconds)
    finally:
        os.killpg(pgid, signal.SIGCONT)


def test_a_frozen_writer_and_worker_during_a_10x_burst_lose_and_duplicate_nothing(stack: Stack) -> None:
    events = event_set(EVENTS)
    expected = expected_incidents(events)
    figures = Figures("slow_consumer_10x_burst", len(events))
    began = time.monotonic()
    stack.start("store")
    stack.start("alerts")
    stack.start("worker")
    messages = envelopes(events, ENVELOPE)
    quarter = len(messages) // 4
    normal_1, burst, normal_2 = messages[:quarter], messages[quarter : 3 * quarter], messages[3 * quarter :]

    send(stack.settings, normal_1[:5])
    stack.wait_for("the worker and the writer ready", lambda: stack.reader.scalar("SELECT count(*) FROM events") > 0)
    normal_s = send(stack.settings, normal_1[5:], pace_s=NORMAL_PACE_S)
    frozen = [
        threading.Thread(target=freeze, args=(stack, "store", WRITER_FROZEN_S)),
        threading.Thread(target=freeze, args=(stack, "worker", WORKER_FROZEN_S)),
    ]
    for t in frozen:
        t.start()
    burst_s = send(stack.settings, burst, pace_s=BURST_PACE_S)
    for t in frozen:
        t.join()
    send(stack.settings, normal_2, pace_s=NORMAL_PACE_S)

    complete = wait_until_complete(stack, expected, timeout=180)
    stack.wait_for(
        "every event archived", lambda: stack.reader.scalar("SELECT count(*) FROM events") == len(events), timeout=60
    )
    figures.seconds = round(time.monotonic() - began, 1)
    measure(stack, figures, expected)
    figures.extra |= {
        "complete": complete,
        "normal_events_per_s": round(len(normal_1[5:]) * ENVELOPE / normal_s),
        "burst_events_per_s": round(len(burst) * ENVELOPE / burst_s),
        "writer_frozen_s": WRITER_FROZEN_S,
        "worker_frozen_s": WORKER_FROZEN_S,
    }
    report(figures)
    assert_figures(figures, stack)
    ratio = figures.extra["burst_events_per_s"] / figures.extra["normal_events_per_s"]
    assert ratio >= 8, f"the burst was only {ratio:.1f}x the normal rate (the producer could not keep up)"
