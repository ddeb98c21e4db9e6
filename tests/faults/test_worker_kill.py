"""SIGKILL the worker every 20 s during a 200k-event run, restart it each time: replay's incidents, once each.

The test plays the process manager: it restarts the killed worker at once (as systemd or Kubernetes
would). Events come in envelopes of 500 (as the gateways and the simulator send them), so the run
takes minutes. ``CITYOPS_FAULT_EVENTS`` sets the number of events (default 200,000).
"""

from __future__ import annotations

import threading
import time

import pytest
from faultkit import (
    FAULT_EVENTS,
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

KILL_EVERY_S = 20.0
ENVELOPE = 500
TIMEOUT_S = 720.0
STALL_PERIODS = 4  # no new event or incident revision in the store for this many kill periods: a livelock
#: Above this many events the run cannot finish under a 20 s kill period yet (see LIVELOCK).
LIVELOCK_ABOVE = 12_000
LIVELOCK = (
    "restart cost outgrows the 20 s kill period: a new worker is ready after 6-12 s on this 2-core machine "
    "(imports, group join held 3 s by Tansu), then rebuilds each events partition's rule state from the "
    "whole events topic (worker.rebuild_state, streams/agents/gaps.py) and re-emits its incidents, at a few "
    "thousand events/s; once that takes longer than what is left of 20 s, no worker lives long enough to "
    "make progress (measured: 20k events paced over 50 s stall at 475 of 639 incidents with every event "
    "ingested; 200k stall near 39k). Needs checkpointed rule state (rebuild only the tail) or a kill period "
    "longer than start-up plus rebuild."
)


def progress(stack: Stack) -> tuple[int, int]:
    """Events archived and incident revisions stored: grows while the pipeline makes progress."""
    try:
        return int(stack.reader.scalar("SELECT count(*) FROM events")), int(
            stack.reader.scalar("SELECT coalesce(sum(revision), 0) FROM incidents")
        )
    except Exception:
        return -1, -1


@pytest.mark.timeout(TIMEOUT_S + 240)
@pytest.mark.parametrize(
    ("count", "pace_s"),
    [
        pytest.param(10_000, 2.0, id="10k-paced-over-40s"),
        pytest.param(
            FAULT_EVENTS,
            0.0,
            id=f"{FAULT_EVENTS // 1000}k-at-once",
            marks=pytest.mark.xfail(FAULT_EVENTS > LIVELOCK_ABOVE, reason=LIVELOCK, strict=True),
        ),
    ],
)
def test_worker_sigkilled_every_20s_loses_and_duplicates_no_incident(stack: Stack, count: int, pace_s: float) -> None:
    events = event_set(count)
    expected = expected_incidents(events)
    figures = Figures(f"worker_sigkill_every_20s_{count // 1000}k", len(events))
    began = time.monotonic()
    stack.start("store")
    stack.start("alerts")
    stack.start("worker-0")
    sender = threading.Thread(
        target=send, args=(stack.settings, envelopes(events, ENVELOPE)), kwargs={"pace_s": pace_s}
    )
    sender.start()

    complete = False
    kills = 0
    stalled = 0
    last = progress(stack)
    deadline = time.monotonic() + TIMEOUT_S
    while not complete and time.monotonic() < deadline and stalled < STALL_PERIODS:
        complete = wait_until_complete(stack, expected, timeout=KILL_EVERY_S)
        if complete or any(not c.alive() for c in stack.children.values()):
            break
        now = progress(stack)
        stalled = stalled + 1 if now == last and not sender.is_alive() else 0
        last = now
        stack.stop(f"worker-{kills}", kill=True)  # SIGKILL to the whole process group
        kills += 1
        stack.start(f"worker-{kills}")  # the supervisor restarts it at once
    if not complete and stalled < STALL_PERIODS:  # one last look after the last restart
        complete = wait_until_complete(stack, expected, timeout=max(0.0, deadline - time.monotonic()))
    sender.join()
    if complete:
        stack.wait_for(
            "every event archived",
            lambda: stack.reader.scalar("SELECT count(*) FROM events") == len(events),
            timeout=60,
        )
    figures.supervisor_restarts = kills
    figures.seconds = round(time.monotonic() - began, 1)
    measure(stack, figures, expected)
    figures.extra |= {
        "envelope": ENVELOPE,
        "kill_every_s": KILL_EVERY_S,
        "paced_over_s": round(pace_s * len(events) / ENVELOPE),
        "complete": complete,
        "livelock": stalled >= STALL_PERIODS,
    }
    report(figures)
    assert kills >= 2, "the run finished before the second kill: send more events or pace them"
    assert_figures(figures, stack)
