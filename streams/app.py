"""The Faust app, built once from Settings, with every topic and table it uses declared."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faust

from rules.bundle import bundle_pack
from rules.engine import Engine
from rules.pack import load_pack
from rules.pipeline import Chain, Pipeline
from streams import metrics
from streams.checkpoint import Checkpointer, matches_topics
from streams.delivery import Deliveries
from streams.metrics import Health
from streams.outbox import Outbox
from streams.security import faust_credentials
from streams.settings import Settings
from streams.transport import App

logger = logging.getLogger(__name__)


@dataclass
class Runtime:
    """Everything the agents share: the app, its topics, the rule-state table and the pipeline."""

    settings: Settings
    app: faust.App
    raw: Any
    events: Any
    incidents: Any
    deadletter: Any
    state: Any
    pipeline: Pipeline
    pack_digest: str = ""
    refused: list[Any] = field(default_factory=list)
    # beaten by a timer and by every message the agents handle: Faust starts its timers only after
    # startup and table recovery, so a worker already busy with messages must count as beating
    health: Health = field(default_factory=Health)
    checkpoints: Checkpointer = field(default_factory=lambda: Checkpointer(Path("."), "", 0.0))
    chain: Chain = field(default_factory=Chain)  # ingest's envelope links (rules.pipeline.Chain)
    # failed sends and their retries; raw messages are acked once what ingest sent for them is delivered
    resends: SendErrors | None = None
    deliveries: Deliveries | None = None
    outbox: Outbox | None = None  # detect's held sends, with the state in a changelog (streams.outbox)


def _topic(app: faust.App, name: str, partitions: int) -> Any:
    return app.topic(
        name,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=partitions,
        internal=False,
    )


def build_runtime(settings: Settings) -> Runtime:
    """Build the Faust app and its topics for the configured pack (loaded and validated here)."""
    kafka = settings.kafka
    worker = settings.worker
    pack = load_pack(settings.rules.pack)
    worker.data_dir.mkdir(parents=True, exist_ok=True)
    # Without a changelog table nothing reads end offsets back, so Tansu's ListOffsets bug with
    # multi-record batches does not matter and the producer may batch (one record per request
    # costs a broker round trip each).
    batch_bytes = kafka.producer_max_batch_size if worker.state_changelog else worker.producer_batch_bytes
    app = App(
        kafka.app_id,
        fetch_max_wait_ms=kafka.fetch_max_wait_ms,
        broker=[f"kafka://{b}" for b in kafka.bootstrap.split(",")],
        broker_credentials=faust_credentials(kafka),
        store="memory://",
        value_serializer="raw",
        topic_partitions=kafka.partitions,
        topic_replication_factor=kafka.replication_factor,
        topic_allow_declare=True,
        broker_session_timeout=kafka.session_timeout_s,
        broker_heartbeat_interval=kafka.heartbeat_s,
        broker_commit_interval=kafka.commit_interval_s,
        producer_max_batch_size=batch_bytes,
        producer_linger=worker.producer_linger_ms / 1000,
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        datadir=str(worker.data_dir / kafka.app_id),
        table_cleanup_interval=60.0,
    )
    # With a changelog: keys and values are JSON (Faust's default for plain types), entries small dicts.
    # Without (the default): rule state is a pure function of the events topic (the engine is
    # idempotent per source position), and the detect agent's gap guard re-applies each
    # partition's history at start and when a partition is assigned (worker.rebuild_state).
    state: Any = app.Table("rule-state", default=None, partitions=kafka.partitions) if worker.state_changelog else {}
    runtime = Runtime(
        settings=settings,
        app=app,
        raw=_topic(app, kafka.raw_topic, kafka.partitions),
        events=_topic(app, kafka.events_topic, kafka.partitions),
        incidents=_topic(app, kafka.incidents_topic, kafka.partitions),
        deadletter=_topic(app, kafka.deadletter_topic, kafka.partitions),
        state=state,
        pipeline=Pipeline(
            Engine(pack),
            max_bytes=worker.max_message_bytes,
            wall_clock=worker.clock == "wall",
            partitions=kafka.partitions,
            handoff=worker.handoff_events,
            # what the producer takes, less room for the record's framing
            max_envelope_bytes=app.conf.producer_max_request_size - 1_024,
        ),
        health=Health(stale_after_s=max(60.0, 6 * worker.tick_s)),
        # checkpoints stand in for a changelog: with a Faust table, its changelog restores the state
        checkpoints=Checkpointer(
            worker.data_dir / kafka.app_id / "checkpoints",
            kafka.app_id,
            0.0 if worker.state_changelog or not worker.rebuild_state else worker.checkpoint_interval_s,
        ),
    )
    runtime.pack_digest = bundle_pack(settings.rules.pack).digest
    runtime.resends = SendErrors(runtime)
    runtime.deliveries = Deliveries(runtime.resends)
    from streams.agents import detect, ingest, rules  # agents attach themselves to the runtime's app

    ingest.attach(runtime)
    detect.attach(runtime)
    rules.attach(runtime)
    restore_on_assignment(runtime)
    app.sensors.add(runtime.resends)
    if worker.gc_threshold:
        # Every event allocates a few dicts; with Python's default gen-0 threshold (700) the cyclic
        # GC runs every few events and its older generations scan the whole rule state. What was
        # built at start (pack, layers, STRtrees) is frozen out of collection altogether.
        _, gen1, gen2 = gc.get_threshold()
        gc.set_threshold(worker.gc_threshold, gen1, gen2)
        gc.collect()
        gc.freeze()
    logger.info(
        "worker app built app_id=%s pack=%s version=%s topics=%s",
        kafka.app_id,
        pack.spec.pack,
        pack.version,
        kafka.all_topics(),
    )
    return runtime


class SendErrors(faust.Sensor):  # type: ignore[misc]
    """Counts, logs and sends again every record the worker's producer failed to deliver.

    Faust only logs a failed send (a warning) and goes on; the source message counts as done. So the
    record is sent again here, with backoff, for up to ``worker.send_retry_s``; checkpoints pause
    meanwhile, and stop if it gives up. Order: a resent incident or dead letter is idempotent in the
    store (highest revision wins); a resent events envelope that detect finds already derived again
    from the raw topic (``rules.pipeline.Chain``) is skipped as applied.
    """

    def __init__(self, runtime: Runtime) -> None:
        super().__init__()
        self.runtime = runtime
        self.retry_s = runtime.settings.worker.send_retry_s
        self.pending: set[asyncio.Task[None]] = set()
        # per record being resent (by identity): True once delivered, False when given up or abandoned
        self.outcomes: dict[int, tuple[Any, asyncio.Future[bool]]] = {}  # by the send's token

    def outcome(self, token: Any) -> asyncio.Future[bool] | None:
        """The outcome of resending the record a failed send reported, if it is resent. ``token`` names
        the send: Faust's PendingMessage (``Topic.send``) or the producer's future (``streams.publisher``)."""
        found = self.outcomes.get(id(token))
        return found[1] if found is not None and found[0] is token else None

    def on_send_initiated(self, producer: Any, topic: str, message: Any, keysize: int, valsize: int) -> Any:
        return topic, message, message

    def on_send_error(self, producer: Any, exc: BaseException, state: Any) -> None:
        """``state``: ``(topic, record, token)``, from ``on_send_initiated`` or ``streams.publisher``."""
        topic, message, token = state
        metrics.SEND_ERRORS.labels(topic).inc()
        retry = self.retry_s > 0
        logger.error(
            "send failed topic=%s partition=%s error=%r%s",
            topic,
            message.partition,
            exc,
            "; sending it again" if retry else "",
        )
        self.runtime.checkpoints.on_send_failed(topic, exc, retrying=retry)
        if retry:
            self.outcomes[id(token)] = (token, asyncio.get_running_loop().create_future())
            task = asyncio.ensure_future(self.resend(producer, topic, message, token))
            self.pending.add(task)
            task.add_done_callback(self.pending.discard)

    async def resend(self, producer: Any, topic: str, message: Any, token: Any) -> None:
        """Send ``message`` again until the broker takes it or ``retry_s`` has passed."""
        deadline = time.monotonic() + self.retry_s
        delay = 0.2
        attempt = 0
        delivered = False
        try:
            while True:
                attempt += 1
                await asyncio.sleep(delay)
                try:
                    await producer.send_and_wait(
                        topic,
                        message.key,
                        message.value,
                        partition=message.partition,
                        timestamp=message.timestamp,
                        headers=message.headers,
                    )
                except Exception as exc:
                    if time.monotonic() + delay > deadline:
                        logger.error(
                            "send gave up topic=%s partition=%s attempts=%d error=%r: record lost; checkpoints "
                            "stop, a restart resumes from the last one",
                            topic,
                            message.partition,
                            attempt,
                            exc,
                        )
                        return
                    logger.warning("send retry failed topic=%s attempt=%d error=%r", topic, attempt, exc)
                    delay = min(delay * 2, 5.0)
                    continue
                delivered = True
                logger.warning(
                    "send retried topic=%s partition=%s attempts=%d: delivered", topic, message.partition, attempt
                )
                return
        except asyncio.CancelledError:  # the worker stops: a restart resumes from the last checkpoint
            logger.error("send abandoned at shutdown topic=%s partition=%s", topic, message.partition)
            raise
        finally:
            metrics.SEND_RETRIES.labels(topic, "delivered" if delivered else "gave_up").inc()
            self.runtime.checkpoints.on_send_retried(topic, delivered)
            found = self.outcomes.pop(id(token), None)
            if found is not None and not found[1].done():
                found[1].set_result(delivered)


def restore_on_assignment(runtime: Runtime) -> None:
    """Tell the checkpointer every assignment; the first one may restore a checkpoint (``streams.checkpoint``).

    Faust sends this signal inside the rebalance, before any message of the new assignment reaches an agent.
    """
    kafka = runtime.settings.kafka

    async def on_assigned(sender: object, assigned: set[Any], **_: object) -> None:
        checkpoints = runtime.checkpoints
        runtime.chain.forget({tp.partition for tp in assigned if tp.topic == kafka.raw_topic})
        runtime.pipeline.handoff.assign({tp.partition for tp in assigned if tp.topic == kafka.events_topic})
        if runtime.outbox is not None:
            runtime.outbox.assigned(tp.partition for tp in assigned if tp.topic == kafka.events_topic)
        checkpoints.assign(
            (tp.partition for tp in assigned if tp.topic == kafka.raw_topic),
            (tp.partition for tp in assigned if tp.topic == kafka.events_topic),
        )
        cp = checkpoints.candidate(runtime.state)
        if cp is None:
            return
        with checkpoints.deciding():  # the agents wait: Faust may resume the partitions meanwhile
            if await matches_topics(kafka, cp, kafka.raw_topic, kafka.events_topic):
                checkpoints.restore(cp, runtime.state, runtime.pipeline.engine)

    runtime.app.on_partitions_assigned.connect(on_assigned)
