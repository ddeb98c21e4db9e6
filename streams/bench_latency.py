"""The latency phase of `cityops bench`: a live worker (and the alerts process) at a fixed rate.

One envelope every 20 ms; one event per envelope is a probe that opens a new incident, and the
time from handing it to the producer to reading its incident (and its alert) back is sampled.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer

from streams.bench_data import BenchError, markers, probe_event, probe_rule
from streams.bench_phases import Run, create_plain_topics, percentiles, producer, reader, wait_for
from streams.topics import create_topics

logger = logging.getLogger(__name__)

ENVELOPE_INTERVAL_S = 0.02  # one envelope every 20 ms
DRAIN_S = 30.0  # how long, beyond the phase's own length, the last probes may take


@dataclass
class _Samples:
    sent: dict[str, float] = field(default_factory=dict)
    incident: dict[str, float] = field(default_factory=dict)
    alert: dict[str, float] = field(default_factory=dict)


async def _follow_probes(consumer: AIOKafkaConsumer, out: _Samples, alert_topic: str | None) -> None:
    while True:
        batches: Any = await consumer.getmany(timeout_ms=100)
        now = time.time()
        for tp, records in batches.items():
            into = out.alert if tp.topic == alert_topic else out.incident
            for record in records:
                doc = orjson.loads(record.value)
                inc = doc.get("incident", doc)
                ids = inc["evidence"]["event_ids"]
                # the first record whose incident starts with the probe: not necessarily revision 1,
                # as the alerts process coalesces a batch's snapshots of one incident (alerts.coalesce)
                if ids and ids[0] in out.sent and ids[0] not in into:
                    into[ids[0]] = now - out.sent[ids[0]]


async def latency_phase(run: Run) -> dict[str, Any]:
    """A live worker (and the alerts process) at a fixed rate; event -> incident (-> alert) latency."""
    s = run.child_settings("latency", clock="wall")
    kafka, opts = s.kafka, run.opts
    create_topics(kafka)
    probe = probe_rule(run.pack)
    alert_topic = None
    if opts.alerts:
        plain = [r for r in s.alerts.routes if r.format == "json" and not r.categories and r.min_severity is None]
        alert_topic = plain[0].topic_name(kafka.topic_prefix) if plain else None
        if alert_topic:
            create_plain_topics(s, [alert_topic])
    out = _Samples()
    consumer = await reader(s, [kafka.incidents_topic] + ([alert_topic] if alert_topic else []))
    follower = asyncio.create_task(_follow_probes(consumer, out, alert_topic))
    children = [run.spawn("latency-worker", ["cityops", "worker"], s)]
    if opts.alerts:
        children.append(run.spawn("latency-alerts", ["cityops", "alerts"], s))
    background = [e for e in run.events if e["id"] not in run.markers] or [dict(run.events[0])]
    where = (float(background[0]["lon"]), float(background[0]["lat"]))
    prod = producer(s)  # no linger: each envelope leaves at once
    await prod.start()
    per_envelope = max(1, round(opts.rate * ENVELOPE_INTERVAL_S))
    sent_events = 0

    async def envelope(probes: list[tuple[str, str]], n: int) -> None:
        """Send ``n`` events: the (event id, object id) probes and background events, stamped now."""
        now = time.time()
        ts = datetime.fromtimestamp(now, UTC)
        stamp = ts.isoformat()
        items = [
            {**background[(sent_events + j) % len(background)], "id": f"l{sent_events + j}", "ts": stamp}
            for j in range(n - len(probes))
        ]
        for probe_id, object_id in probes:
            items.append(probe_event(probe, probe_id, object_id, ts, *where))
            out.sent[probe_id] = now
        await prod.send(kafka.raw_topic, orjson.dumps({"events": items}), key=b"bench")

    # warm-up: probes routed to every events partition (the marker objects), once a second,
    # until each partition has answered (and the alerts process has joined its group)
    warm_objects = [str(m["object_id"]) for m in markers(run.pack, kafka.partitions, datetime.now(UTC), where)]

    def ready() -> bool:
        return all(
            any(k.startswith(f"warm-{p}-") for k in out.incident)
            and (alert_topic is None or any(k.startswith(f"warm-{p}-") for k in out.alert))
            for p in range(len(warm_objects))
        )

    try:
        began = time.monotonic()
        for warm in range(180):
            await envelope([(f"warm-{p}-{warm}", obj) for p, obj in enumerate(warm_objects)], len(warm_objects))
            if await wait_for(run, "the live worker", ready, 1.0, required=False):
                break
        else:
            raise BenchError(f"the live worker (or alerts) did not answer within 180 s (logs in {run.logs})")
        logger.info("bench latency: ready after %.1f s", time.monotonic() - began)
        logger.info("bench latency: worker ready; %.0f events/s for %.0f s", opts.rate, opts.latency_seconds)
        probes = 0
        start = time.monotonic()
        next_at = start
        while next_at < start + opts.latency_seconds:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            await envelope([(f"probe-{probes}", f"probe-{probes}")], per_envelope)
            sent_events += per_envelope
            probes += 1
            next_at += ENVELOPE_INTERVAL_S
            if probes % round(5 / ENVELOPE_INTERVAL_S) == 0:
                answered = len(out.incident)
                logger.info("bench latency sent_events=%d probes=%d answered=%d", sent_events, probes, answered)
        seconds = time.monotonic() - start
        wanted = {f"probe-{k}" for k in range(probes)}
        # a worker that fell behind answers late: wait for it (the samples would be biased low without)
        await wait_for(
            run,
            "the last probes",
            lambda: wanted <= out.incident.keys() and (alert_topic is None or wanted <= out.alert.keys()),
            DRAIN_S + opts.latency_seconds,
            lambda: f"incidents={len(wanted & out.incident.keys())}/{len(wanted)}",
            required=False,
        )
    finally:
        await prod.stop()
        follower.cancel()
        await consumer.stop()
        for child in children:
            run.stop(child)
    result: dict[str, Any] = {
        "rate_target": opts.rate,
        "rate_achieved": round(sent_events / seconds),
        "seconds": round(seconds, 2),
        "events": sent_events,
        "envelope_events": per_envelope,
        "envelope_interval_ms": round(ENVELOPE_INTERVAL_S * 1000),
        "event_to_incident": percentiles([v for k, v in out.incident.items() if k in wanted]),
        "missing_incidents": len(wanted - out.incident.keys()),
    }
    if alert_topic:
        result["event_to_alert"] = percentiles([v for k, v in out.alert.items() if k in wanted])
        result["missing_alerts"] = len(wanted - out.alert.keys())
        result["alert_topic"] = alert_topic
    if result["missing_incidents"] or result.get("missing_alerts"):
        result["note"] = (
            f"some probes were not answered within {DRAIN_S + opts.latency_seconds:.0f} s after the last one was "
            "sent: the worker did not keep up with the rate, and the percentiles (over answered probes) are "
            "lower bounds"
        )
    result["what"] = (
        "a live worker (clock=wall) on fresh topics, fed one envelope every 20 ms with the events stamped with "
        "the wall time at which the envelope is handed to the producer; one event per envelope is a probe "
        "(a new drone above the height limit) that opens a new incident; a sample is the time from that "
        "hand-over to this process reading the incident on the incidents topic (and its alert on "
        "the alert topic, through `cityops alerts`): broker, ingest, events topic, detect, broker, plus the "
        "reading consumer's fetch; no gateway batching is included"
    )
    result["broker_note"] = (
        "on the Tansu dev broker a record that arrives while a consumer's fetch is waiting is delivered only when "
        "that fetch's wait expires (a plain aiokafka consumer at 50 records/s: p50 4 ms with fetch_max_wait_ms=20, "
        "131 ms with 500, 392 ms with 1500); faust's aiokafka driver hard-codes 1500 ms and kafka-python (the "
        "alerts process) defaults to 500 ms, so every consumer hop can add up to that here, which Apache Kafka "
        "does not (it answers a waiting fetch as soon as fetch_min_bytes are there)"
    )
    return result
