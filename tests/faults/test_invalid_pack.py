"""Invalid rule packs published straight to the rules topic mid-run: refused, dead-lettered, last good pack kept.

``cityops rules publish`` refuses invalid packs on the client; these bypass it with a plain
Kafka producer (another tool, an older cityops). The worker must keep the pack it runs, dead-letter
each bundle under its ``topic[partition]@offset``, and the incidents must equal replay's with the
good pack, also across a worker restart that reads the compacted rules topic from the start.
"""

from __future__ import annotations

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

from rules.bundle import bundle_pack
from rules.pipeline import source_label

pytestmark = [pytest.mark.integration, pytest.mark.faults]

EVENTS = 10_000


def invalid_bundles(stack: Stack) -> dict[str, bytes]:
    good = bundle_pack(stack.settings.rules.pack)
    unknown_kind = good.yaml_text.replace("kind: threshold", "kind: nonsense", 1)
    assert unknown_kind != good.yaml_text
    return {
        "not a bundle": b'{"pack": "wuhan", "yaml": 42',
        "bundle of an invalid YAML": good.model_copy(
            update={"digest": "bad00001", "version": "bad-yaml", "yaml_text": "pack: wuhan\nrules: [{}\n"}
        )
        .model_dump_json()
        .encode(),
        "bundle with an unknown rule kind": good.model_copy(
            update={"digest": "bad00002", "version": "bad-kind", "yaml_text": unknown_kind}
        )
        .model_dump_json()
        .encode(),
        "bundle whose layer is missing": good.model_copy(
            update={"digest": "bad00003", "version": "bad-layer", "layers": {}}
        )
        .model_dump_json()
        .encode(),
    }


def test_invalid_packs_published_mid_run_are_refused_and_incidents_equal_replay_with_the_good_pack(
    stack: Stack,
) -> None:
    events = event_set(EVENTS)
    expected = expected_incidents(events)
    figures = Figures("invalid_pack_mid_run", len(events))
    began = time.monotonic()
    kafka = stack.settings.kafka
    stack.start("store")
    stack.start("alerts")
    stack.start("worker-0")
    messages = envelopes(events, 250)
    third = len(messages) // 3
    send(stack.settings, messages[:third])
    stack.wait_for("first incidents", lambda: stack.reader.scalar("SELECT count(*) FROM incidents") > 0)

    prod = producer(stack.settings)
    sources = []
    for value in invalid_bundles(stack).values():
        meta = prod.send(kafka.rules_topic, key=b"wuhan", value=value).get(30)
        sources.append(source_label(kafka.rules_topic, meta.partition, meta.offset))
    prod.close()
    send(stack.settings, messages[third : 2 * third])

    def refused() -> bool:
        return set(sources) <= {d.source for d in dead_letter_records(stack.settings) if d.kind == "invalid_pack"}

    stack.wait_for("every invalid pack refused", refused, timeout=60)
    # a worker (re)started now reads the compacted rules topic from the start: it must refuse them again
    stack.stop("worker-0")
    stack.start("worker-1")
    send(stack.settings, messages[2 * third :])

    complete = wait_until_complete(stack, expected, timeout=180)
    stack.wait_for(
        "every event archived", lambda: stack.reader.scalar("SELECT count(*) FROM events") == len(events), timeout=60
    )
    stack.wait_for(
        "the refusals in the store",
        lambda: stack.reader.scalar("SELECT count(*) FROM dead_letters WHERE kind = 'invalid_pack'") >= len(sources),
        timeout=30,
    )
    figures.supervisor_restarts = 1
    figures.seconds = round(time.monotonic() - began, 1)
    measure(stack, figures, expected, bad_sources=sources)
    letters = [d for d in dead_letter_records(stack.settings) if d.kind == "invalid_pack"]
    figures.extra |= {
        "complete": complete,
        "reasons": sorted({d.reason[:100] for d in letters}),
        "pack_versions": sorted(stack.reader.scalar("SELECT list(DISTINCT pack_version) FROM incidents")),
    }
    report(figures)
    assert_figures(figures, stack)
    assert figures.extra["pack_versions"] == ["2026.11.2"]
    for name in ("worker-0", "worker-1"):
        log = (stack.logs / f"{name}.log").read_text(errors="replace")
        assert log.count("rule pack refused, keeping pack=wuhan version=2026.11.2") >= len(sources), name
