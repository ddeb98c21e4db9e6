"""Child processes for the demo: each in its own process group, stopped with TERM then KILL."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, grace: float = 10.0) -> int | None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                logger.warning("child did not stop in %.0fs, killing name=%s pid=%d", grace, self.name, self.proc.pid)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(grace)
        else:
            # the leader is gone; make sure no grandchild survives it
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        return self.proc.returncode


def spawn(name: str, args: list[str], env: dict[str, str], log_dir: Path) -> Child:
    """Start ``python -m streams.cli ARGS`` (or another argv) with its own process group."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{name}.log"
    argv = args if args[0] != "cityops" else [sys.executable, "-m", "streams.cli", *args[1:]]
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
            start_new_session=True,
            stdin=subprocess.DEVNULL,
        )
    logger.info("started name=%s pid=%d log=%s", name, proc.pid, log)
    return Child(name, proc, log)
