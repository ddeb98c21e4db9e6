"""A poison message in every topic the processes consume: each one dead-lettered, nothing else disturbed.

The poison goes in mid-run, between two halves of the event set. Every record must reach the
dead-letter topic and the dead-letter store under its own ``topic[partition]@offset``; every
process keeps running, and the incidents still equal replay's.
"""

from __future__ import annotations

import contextlib
import time

import pytest
from faultkit import (
    Figures,
    assert_figures,
    dead_letter_records,
    envelopes,
    event_set,
    expected_incidents,
    measure,
    producer,
    report,
    send,
    wait_until_complete,
)
from stack import Stack

from rules.pipeline import source_label

pytestmark = [pytest.mark.integration, pytest.mark.faults]

EVENTS = 10_000
POISON = b"\x00\xff poison: not JSON, not UTF-8 {"


def consumed_topics(stack: Stack) -> dict[str, str]:
    """Every topic a cityops process consumes, with who consumes it."""
    k = stack.settings.kafka
    return {
        k.raw_topic: "worker (ingest)",
        k.events_topic: "worker (detect), store",
        k.incidents_topic: "store, alerts",
        k.deadletter_topic: "store",
        k.actions_topic: "store",
        k.rules_topic: "worker (rule packs)",
        k.silences_topic: "store, alerts",
    }


def test_a_poison_record_in_every_consumed_topic_is_dead_lettered_and_every_process_goes_on(stack: Stack) -> None:
    events = event_set(EVENTS)
    expected = expected_incidents(events)
    figures = Figures("poison_in_every_topic", len(events))
    began = time.monotonic()
    kafka = stack.settings.kafka
    topics = consumed_topics(stack)
    not_consumed = sorted(set(kafka.all_topics()) - set(topics))
    assert not_consumed == [kafka.updates_topic], "a new topic: say who consumes it"

    stack.start("store")
    stack.start("alerts")
    stack.start("worker")
    half = len(events) // 2
    send(stack.settings, envelopes(events[:half], 250))
    stack.wait_for("the first half in the store", lambda: stack.reader.scalar("SELECT count(*) FROM events") == half)

    prod = producer(stack.settings)
    sources = []
    for topic in topics:
        meta = prod.send(topic, key=b"poison", value=POISON, partition=0).get(30)
        sources.append(source_label(topic, meta.partition, meta.offset))
    prod.close()
    send(stack.settings, envelopes(events[half:], 250))

    complete = wait_until_complete(stack, expected, timeout=180)

    def all_dead_lettered() -> bool:
        stored = {r["source"] for r in stack.reader.rows("SELECT source FROM dead_letters")}
        on_topic = {d.source for d in dead_letter_records(stack.settings)}
        return set(sources) <= stored & on_topic

    with contextlib.suppress(AssertionError):  # a miss is reported in the figures below
        stack.wait_for("every poison record dead-lettered", all_dead_lettered, timeout=60)
    stack.wait_for(
        "every event archived", lambda: stack.reader.scalar("SELECT count(*) FROM events") == len(events), timeout=60
    )
    figures.seconds = round(time.monotonic() - began, 1)
    measure(stack, figures, expected, bad_sources=sources)
    letters = {d.source: d for d in dead_letter_records(stack.settings)}
    on_topic = [s for s in sources if s in letters]
    figures.dead_lettered = min(figures.dead_lettered, len(on_topic))  # in the store and on the topic
    figures.dead_lettered_pct = round(100.0 * figures.dead_lettered / len(sources), 1)
    figures.extra |= {
        "complete": complete,
        "missing_from_topic": sorted(set(sources) - set(on_topic)),
        "reasons": {s: letters[s].reason[:120] for s in on_topic},
        "not_consumed_by_cityops": not_consumed,
    }
    report(figures)
    assert_figures(figures, stack)
    for source in sources:
        assert letters[source].reason, source
    for name, child in stack.children.items():
        assert child.alive(), f"{name} stopped:\n{stack.log_tail(name)}"
