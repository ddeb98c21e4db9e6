"""The naive baseline of `cityops bench`: the Faust agent a user would write, one event per message.

It does the same work as the cityops worker, one Kafka message (one event) at a time: validate
with pydantic (``rules.decode``), locate the zones (the engine's enrich), run the rule engine on
a one-event batch with its state in a dict, and send every incident snapshot to the output
topic. The dict is generous to the baseline: a Faust table would add a changelog write per
state change. After the expected number of events it ticks the engine once (as replay does)
and sends a ``done`` control record with its counts.

Run by the benchmark as ``python -m streams.bench_naive SOURCE SINK EXPECTED`` with the
benchmark's Settings in the environment.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import faust
import orjson

from rules.decode import decode_message
from rules.engine import Engine
from rules.model import Incident
from rules.pack import load_pack
from streams.logs import setup_logging
from streams.security import faust_credentials
from streams.settings import Settings

logger = logging.getLogger(__name__)

WARMUP = b"__cityops_bench_warmup__"
CONTROL_KEY = b"__control__"
PROGRESS_EVERY = 10_000


def build_app(settings: Settings, source: str, sink: str, expected: int) -> faust.App:
    """The naive app: one agent over ``source``, incidents and control records to ``sink``."""
    kafka = settings.kafka
    engine = Engine(load_pack(settings.rules.pack))
    state: dict[str, Any] = {}
    settings.worker.data_dir.mkdir(parents=True, exist_ok=True)
    counts = {"events": 0, "rejected": 0, "late": 0, "sent": 0}
    app = faust.App(
        f"{kafka.app_id}-naive",
        broker=[f"kafka://{b}" for b in kafka.bootstrap.split(",")],
        broker_credentials=faust_credentials(kafka),
        store="memory://",
        value_serializer="raw",
        topic_partitions=kafka.partitions,
        broker_session_timeout=kafka.session_timeout_s,  # Tansu holds a join for half of it
        broker_heartbeat_interval=kafka.heartbeat_s,
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        datadir=str(settings.worker.data_dir / "naive"),
    )
    src = app.topic(source, value_type=bytes, value_serializer="raw", partitions=kafka.partitions)
    out = app.topic(sink, key_type=bytes, value_type=bytes, value_serializer="raw", partitions=kafka.partitions)

    async def send_incidents(incidents: list[Incident]) -> None:
        for inc in incidents:
            await out.send(key=inc.id.encode(), value=inc.model_dump_json().encode())
            counts["sent"] += 1

    async def control(what: str) -> None:
        await out.send(key=CONTROL_KEY, value=orjson.dumps({"control": what, **counts}))

    @app.agent(src, name="naive")  # type: ignore[untyped-decorator]
    async def naive(stream: Any) -> None:
        async for value in stream:
            if value == WARMUP:
                await control("ready")
                continue
            decoded = decode_message(value)
            counts["rejected"] += len(decoded.rejected)
            outcome = engine.process(engine.enrich(decoded.events), state)
            counts["late"] += len(outcome.late)
            await send_incidents(outcome.incidents)
            counts["events"] += len(decoded.events)
            done = counts["events"] + counts["rejected"]
            if done % PROGRESS_EVERY == 0:
                await control("progress")
            if done == expected:
                await send_incidents(engine.tick(state))  # time-driven rules, once at the end like replay
                await control("done")

    return app


def main(argv: list[str]) -> None:
    source, sink, expected = argv[0], argv[1], int(argv[2])
    settings = Settings()
    setup_logging(settings.log_level, json=settings.log_json)
    from faust.worker import Worker

    app = build_app(settings, source, sink, expected)
    worker = Worker(app, loglevel=settings.log_level.lower(), quiet=True, override_logging=False)
    worker.spinner = None  # avoids Faust switching the root logger to DEBUG
    worker.execute_from_commandline()


if __name__ == "__main__":
    main(sys.argv[1:])
