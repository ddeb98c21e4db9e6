"""`cityops bench`: cityops against a naive Faust agent and raw aiokafka, on one event set, in one run.

It starts its own Tansu broker on a free loopback port, generates one deterministic event set
(``streams.bench_data``), and runs, one after the other so that they do not share the 2 cores:

1. **raw aiokafka** (the limit): the events one per message, consumed by a plain aiokafka
   consumer that parses each JSON value;
2. **naive Faust** (the baseline a user would write; ``streams.bench_naive`` in a child
   process): the same events one per message through one agent that validates, locates zones
   and runs the rule engine per event;
3. **cityops**: the real worker (``cityops worker``, a child process) fed micro-batch envelopes
   as the simulator and gateways send them. Timed from the first produce until a marker track
   at the end of the set has opened its incident in every partition of the events topic;
4. **latency**: a fresh live worker (``worker.clock=wall``), and the alerts process, fed
   envelopes at a fixed rate; one probe per envelope opens a new incident, and the time from
   handing the probe to the producer to reading its incident (and its alert) back is sampled.

Incident sets are compared with ``rules.replay`` on the same events. Every child process is
stopped at the end, also on Ctrl-C or SIGTERM. The result is one JSON document.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from rules.decode import decode_message
from rules.engine import Engine
from rules.pack import LoadedPack, load_pack
from rules.pipeline import Pipeline
from rules.replay import BATCH, gc_tuned, replay
from streams import bench_data
from streams.bench_data import BenchError, Event
from streams.bench_latency import latency_phase
from streams.bench_phases import BenchOptions, Run, chunks, cityops_phase, naive_phase, raw_phase
from streams.broker import DevBroker
from streams.settings import Settings

__all__ = ["BenchOptions", "bench_main", "run_bench"]

logger = logging.getLogger(__name__)

_RUN_DIR_ENTRIES = {"broker.log", "logs", "faust", "pack"}  # what a run directory holds


def run_bench(settings: Settings, opts: BenchOptions) -> dict[str, Any]:
    """Run every phase and return the result document. Stops every child process, whatever happens."""
    if opts.run_dir.exists():
        foreign = {p.name for p in opts.run_dir.iterdir()} - _RUN_DIR_ENTRIES
        if foreign:  # never wipe a directory the bench did not make
            raise BenchError(f"--run-dir {opts.run_dir} holds files of something else: {sorted(foreign)[:5]}")
        shutil.rmtree(opts.run_dir)
    opts.run_dir.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()[0]  # the other processes on the machine: the numbers are only as quiet as it
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM unwinds like Ctrl-C
    broker: DevBroker | None = None
    run: Run | None = None
    try:
        pack, events, markers, label = _event_set(settings, opts)
        logger.info("bench event set pack=%s events=%d rules=%d", label, len(events), len(pack.spec.rules))
        replay_rate, replayed, rule_of = _replay(pack, events)
        per_event_rate = _per_event(pack, events)
        stages = _stages(pack, events, opts.batch, settings.kafka.partitions, replayed)
        broker = DevBroker(log_path=opts.run_dir / "broker.log")
        with _signals_held():  # the broker's process must be known before a signal may unwind
            broker.start()
        settings.kafka.bootstrap = broker.bootstrap
        run = Run(settings, opts, pack, events, replayed, markers, rule_of)
        run.broker_pid = broker.proc.pid if broker.proc else -1
        run.pids.append(run.broker_pid)
        try:
            result = asyncio.run(_phases(run))
        except asyncio.CancelledError:
            raise KeyboardInterrupt from None
        result["replay"] = {"events_per_s": round(replay_rate), "incidents": len(replayed)}
        result["engine_per_event"] = round(per_event_rate)
        result["stages"] = stages
        result["config"] = {**_config(run, label), "load_average_1m_at_start": round(load, 2)}
        return _ordered(result, run)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not orphan a child
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            for child in reversed(run.children if run else []):
                child.stop(grace=10)
            if broker is not None:
                broker.stop()
        finally:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, previous)
        logger.info("bench stopped every child process")


def _event_set(settings: Settings, opts: BenchOptions) -> tuple[LoadedPack, list[Event], set[str], str]:
    """The pack and the one event set every phase uses: regular events, then one marker per partition."""
    if opts.zones is not None or opts.rules is not None:
        zones, rules = opts.zones or 1000, opts.rules or 100
        pack = load_pack(bench_data.write_grid_pack(opts.run_dir / "pack", zones, rules))
        body = bench_data.grid_events(max(0, opts.events - settings.kafka.partitions), opts.seed)
        label = f"grid ({len(pack.layers['grid'].ids)} zones, {len(pack.spec.rules)} rules)"
    else:
        pack = load_pack(settings.rules.pack)
        body = bench_data.wuhan_events(max(0, opts.events - settings.kafka.partitions), opts.seed)
        label = f"{pack.spec.pack}@{pack.version} ({pack.path})"
    settings.rules.pack = pack.path
    at = bench_data.START + timedelta(milliseconds=len(body) * bench_data.STEP_MS)
    where = (float(body[0]["lon"]), float(body[0]["lat"])) if body else (114.3, 30.6)
    marks = bench_data.markers(pack, settings.kafka.partitions, at, where)
    return pack, body + marks, {m["id"] for m in marks}, label


def _replay(pack: LoadedPack, events: list[Event]) -> tuple[float, dict[str, int], dict[str, str]]:
    began = time.perf_counter()
    result = replay(pack, (orjson.dumps(e) for e in events))
    rate = len(events) / (time.perf_counter() - began)
    logger.info("bench replay events_per_s=%.0f incidents=%d", rate, len(result.incidents))
    return rate, {i.id: i.revision for i in result.incidents}, {i.id: i.rule_id for i in result.incidents}


def _per_event(pack: LoadedPack, events: list[Event], limit: int = 5_000) -> float:
    """The naive agent's work without Kafka or Faust: decode, enrich and process one event at a time."""
    engine, state = Engine(pack), dict[str, Any]()
    values = [orjson.dumps(e) for e in events[:limit]]
    began = time.perf_counter()
    for value in values:
        engine.process(engine.enrich(decode_message(value).events), state)
    rate = len(values) / (time.perf_counter() - began)
    logger.info("bench engine per event (in process) events_per_s=%.0f", rate)
    return rate


def _stages(
    pack: LoadedPack, events: list[Event], batch: int, partitions: int, replayed: dict[str, int]
) -> dict[str, Any]:
    """The worker's two stages without Kafka or Faust: ingest and detect (with the handoff) in process.

    The same envelopes of ``batch`` events the worker is fed, over ``partitions`` events
    partitions, with the worker's GC threshold. CPU seconds per stage, so the worker's rate can be
    split into the rules' work and what Kafka and Faust add; and whether the final incidents equal
    ``replayed`` (the stages with the handoff over partitions against replay).
    """
    pipeline = Pipeline(Engine(pack), partitions=partitions, handoff=20_000)
    raws = [orjson.dumps({"events": c}) for c in chunks(events, batch)]
    state: dict[str, Any] = {}
    spent = {"ingest": 0.0, "detect": 0.0}
    snapshots = 0
    latest: dict[str, int] = {}
    with gc_tuned():
        for offset, raw in enumerate(raws):
            began = time.process_time()
            out = pipeline.ingest(raw, "raw", 0, offset)
            envelopes = []
            for partition in out.targets():
                envelope = out.envelope(partition, (0, offset))
                pipeline.handoff.keep(envelope, out, partition, (0, offset), None)
                envelopes.append((partition, envelope))
            ingested = time.process_time()
            for partition, envelope in envelopes:
                found = pipeline.detect(envelope, state, "events", partition, offset)
                snapshots += len(found.incidents)
                for incident in found.incidents:  # as the worker sends them
                    incident.model_dump_json()
                    latest[incident.id] = max(incident.revision, latest.get(incident.id, 0))
            spent["ingest"] += ingested - began
            spent["detect"] += time.process_time() - ingested
    for incident in pipeline.engine.tick(state):  # time-driven rules, once at the end as replay does
        latest[incident.id] = max(incident.revision, latest.get(incident.id, 0))
    rates = {k: round(len(events) / v) if v else None for k, v in spent.items()}
    both = sum(spent.values())
    logger.info("bench stages in process ingest=%s detect=%s events/s", rates["ingest"], rates["detect"])
    return {
        **{f"{k}_events_per_s": r for k, r in rates.items()},
        "worker_events_per_s": round(len(events) / both) if both else None,
        "incident_snapshots": snapshots,
        "incidents_equal_replay": latest == replayed,
    }


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Delay SIGINT and SIGTERM until the block is done (they are delivered right after)."""
    held = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, held)


async def _phases(run: Run) -> dict[str, Any]:
    """The phases in order. SIGINT/SIGTERM cancel them at their next await, so their cleanup runs in order."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    try:
        out: dict[str, Any] = {}
        rounds: dict[str, list[dict[str, Any]]] = {"raw_aiokafka": [], "naive_faust": [], "cityops": []}
        for number in range(max(1, run.opts.repeat)):  # in turn, so that every phase sees the same periods
            run.round = number
            if run.opts.repeat > 1:
                logger.info("bench round %d of %d", number + 1, run.opts.repeat)
            rounds["raw_aiokafka"].append(await raw_phase(run))
            rounds["naive_faust"].append(await naive_phase(run))
            rounds["cityops"].append(await cityops_phase(run))
        out.update({name: _median_round(runs) for name, runs in rounds.items()})
        if run.opts.repeat > 1:
            out["rounds"] = [
                {name: runs[n]["events_per_s"] for name, runs in rounds.items()} for n in range(run.opts.repeat)
            ]
        if run.opts.latency_seconds > 0:
            out["latency"] = await latency_phase(run)
        return out
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
            signal.signal(sig, signal.default_int_handler)  # until run_bench's cleanup ignores them


def _median_round(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median rate (the lower middle one of an even number), with every round's
    rate in ``rounds_events_per_s``; incidents equal replay's only if they did in every round."""
    ranked = sorted(runs, key=lambda r: r["events_per_s"])
    chosen = dict(ranked[(len(ranked) - 1) // 2])
    if len(runs) > 1:
        chosen["rounds_events_per_s"] = [r["events_per_s"] for r in runs]
        if "incidents_equal_replay" in chosen:
            chosen["incidents_equal_replay"] = all(r["incidents_equal_replay"] for r in runs)
    return chosen


def _config(run: Run, label: str) -> dict[str, Any]:
    return {
        "pack": label,
        "zones": {name: len(layer.ids) for name, layer in run.pack.layers.items()},
        "rules": len(run.pack.spec.rules),
        "events": len(run.events),
        "markers": len(run.markers),
        "envelope_events": run.opts.batch,
        "rounds": max(1, run.opts.repeat),
        "partitions": run.settings.kafka.partitions,
        "cpus": os.cpu_count(),
    }


def _ordered(result: dict[str, Any], run: Run) -> dict[str, Any]:
    """The result document: rates and ratios first, then incident counts, phase details and latency."""
    rates = {k: result[k]["events_per_s"] for k in ("raw_aiokafka", "naive_faust", "cityops")}
    mine = rates["cityops"]
    doc: dict[str, Any] = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": result["config"],
        "events_per_s": rates,
        "ratios": {
            "cityops_vs_naive": round(mine / rates["naive_faust"], 2) if rates["naive_faust"] else None,
            "cityops_vs_raw": round(mine / rates["raw_aiokafka"], 3) if rates["raw_aiokafka"] else None,
        },
        "incidents": {
            "replay": result["replay"]["incidents"],
            "naive_faust": result["naive_faust"]["incidents"],
            "cityops": result["cityops"]["incidents"],
            "naive_equal_replay": result["naive_faust"]["incidents_equal_replay"],
            "cityops_equal_replay": result["cityops"]["incidents_equal_replay"],
        },
        "in_process": {
            "replay_events_per_s": result["replay"]["events_per_s"],
            "engine_per_event_events_per_s": result["engine_per_event"],
            "worker_stages": result["stages"],
            "what": f"no broker: `rules.replay` (batches of {BATCH:,}); the naive agent's work one event at a "
            "time (decode, enrich, process) on the first 5,000 events; and the worker's ingest and detect "
            "stages (CPU time) on the envelopes cityops is fed: ceilings for cityops and the baseline",
        },
        "phases": {k: result[k] for k in ("raw_aiokafka", "naive_faust", "cityops")},
    }
    if "rounds" in result:  # every round's rates and ratio, in the order they ran
        doc["rounds"] = [
            {**r, "cityops_vs_naive": round(r["cityops"] / r["naive_faust"], 2) if r["naive_faust"] else None}
            for r in result["rounds"]
        ]
    if "latency" in result:
        doc["latency"] = result["latency"]
    doc["pids"] = run.pids
    return doc


def bench_main(settings: Settings, opts: BenchOptions, json_path: Path | None) -> int:
    """Run the benchmark, print its JSON on stdout (and to ``json_path``); returns the exit code."""
    try:
        result = run_bench(settings, opts)
    except KeyboardInterrupt:
        logger.warning("bench interrupted; every child process was stopped")
        return 130
    except BenchError as exc:
        logger.error("bench failed: %s", exc)
        return 1
    text = orjson.dumps(result, option=orjson.OPT_INDENT_2).decode()
    if json_path is not None:
        json_path.write_text(text + "\n", encoding="utf-8")
    sys.stdout.write(text + "\n")
    return 0 if _consistent(result) else 2


def _consistent(result: dict[str, Any]) -> bool:
    """Whether cityops gave exactly replay's incidents (the naive baseline is reported, not required)."""
    return bool(result["phases"]["cityops"].get("incidents_equal_replay"))
