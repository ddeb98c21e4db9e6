"""Running the Faust worker process."""

from __future__ import annotations

import logging
from typing import Any

from streams import metrics
from streams.app import Runtime, build_runtime
from streams.settings import Settings

logger = logging.getLogger(__name__)


def run_worker(settings: Settings) -> None:
    """Run the stream worker until SIGTERM/SIGINT (blocks)."""
    from faust.worker import Worker

    runtime = build_runtime(settings)
    observe(runtime)
    log_assignments(runtime)
    # override_logging=False keeps cityops' handlers (key=value or --log-json): Faust would replace them
    worker = Worker(runtime.app, loglevel=settings.log_level.lower(), quiet=True, override_logging=False)
    worker.spinner = None  # avoids Faust switching the root logger to DEBUG
    worker.execute_from_commandline()


def observe(runtime: Runtime) -> metrics.MetricsServer | None:
    """Serve the worker's metrics (``CITYOPS_METRICS__WORKER_PORT``); its health is ``runtime.health``.

    A Faust timer and every message the agents handle beat it. Both run on the worker's event loop,
    so a stuck loop turns ``/healthz`` to 503.
    """
    settings = runtime.settings
    health = runtime.health

    @runtime.app.timer(interval=1.0)  # type: ignore[untyped-decorator]
    async def heartbeat() -> None:
        health.beat()

    return metrics.serve(settings.metrics.host, settings.metrics.worker_port, health, process="worker")


def log_assignments(runtime: Runtime) -> None:
    """Log the partitions this worker owns after every rebalance (which worker holds which rule state).

    One line per rebalance: ``partitions assigned app_id=... events=[0, 2] raw=[0, 2] all=N``.
    ``events`` are the partitions whose rule state (changelog) this worker now holds.
    """
    kafka = runtime.settings.kafka

    async def on_assigned(sender: object, assigned: set[Any], **_: object) -> None:
        def of(topic: str) -> list[int]:
            return sorted(tp.partition for tp in assigned if tp.topic == topic)

        logger.info(
            "partitions assigned app_id=%s events=%s raw=%s all=%d",
            kafka.app_id,
            of(kafka.events_topic),
            of(kafka.raw_topic),
            len(assigned),
        )

    runtime.app.on_partitions_assigned.connect(on_assigned)
