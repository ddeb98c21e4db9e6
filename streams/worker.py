"""Running the Faust worker process."""

from __future__ import annotations

import logging

from streams.app import build_runtime
from streams.settings import Settings

logger = logging.getLogger(__name__)


def run_worker(settings: Settings) -> None:
    """Run the stream worker until SIGTERM/SIGINT (blocks)."""
    from faust.worker import Worker

    runtime = build_runtime(settings)
    worker = Worker(runtime.app, loglevel=settings.log_level.lower(), quiet=True)
    worker.spinner = None  # avoids Faust switching the root logger to DEBUG
    worker.execute_from_commandline()
