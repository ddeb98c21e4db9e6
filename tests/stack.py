"""Test harness: a worker and a store writer as real processes, each test with its own topics."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from rules.model import Incident
from sinks.read import StoreReader
from streams.broker import DevBroker, free_port
from streams.procs import Child, spawn
from streams.settings import Settings
from streams.topics import create_topics


def make_settings(broker: DevBroker, tmp: Path, name: str) -> Settings:
    tag = f"{name}-{uuid.uuid4().hex[:6]}"
    s = Settings()
    s.kafka.bootstrap = broker.bootstrap
    s.kafka.topic_prefix = f"t.{tag}"
    s.kafka.app_id = f"w-{tag}"
    s.store.path = tmp / "store.duckdb"
    s.store.quack_port = free_port()
    s.store.token = s.store.token.__class__("test-token-1234")
    s.worker.data_dir = tmp / "faust"
    s.worker.clock = "event"  # parity with replay: only event time moves the watermark
    return s


@dataclass
class Stack:
    settings: Settings
    logs: Path
    children: dict[str, Child] = field(default_factory=dict)

    def __post_init__(self) -> None:
        create_topics(self.settings.kafka)
        self.reader = StoreReader(self.settings.store.quack_uri, self.settings.store.token.get_secret_value())

    def start(self, name: str) -> Child:
        role = name.split("-")[0]
        child = spawn(name, ["cityops", role], self.settings.to_env(), self.logs)
        self.children[name] = child
        return child

    def stop(self, name: str, *, kill: bool = False) -> None:
        child = self.children.pop(name)
        if kill:
            import os
            import signal

            os.killpg(child.proc.pid, signal.SIGKILL)
            child.proc.wait(10)
        else:
            child.stop(grace=20)

    def close(self) -> None:
        for name in list(self.children):
            self.stop(name)

    def log_tail(self, name: str, lines: int = 40) -> str:
        path = self.logs / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def wait_for(self, what: str, check: Callable[[], bool], timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if check():
                    return
            except Exception:
                pass
            for name, child in self.children.items():
                assert child.alive(), f"{name} died:\n{self.log_tail(name)}"
            time.sleep(0.5)
        tails = "\n".join(f"--- {n}\n{self.log_tail(n)}" for n in self.children)
        raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n{tails}")

    def stored_incidents(self) -> list[dict[str, Any]]:
        return self.reader.rows(
            "SELECT id, revision, rule_id, subject, zone_id, value, evidence_count, evidence FROM incidents ORDER BY id"
        )


def read_topic(settings: Settings, topic: str, timeout_s: float = 5.0) -> list[Any]:
    """Every record of a topic from the beginning (no consumer group)."""
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka.bootstrap, enable_auto_commit=False, consumer_timeout_ms=int(timeout_s * 1000)
    )
    parts = consumer.partitions_for_topic(topic) or set()
    consumer.assign([TopicPartition(topic, p) for p in parts])
    consumer.seek_to_beginning()
    records = list(consumer)
    consumer.close()
    return records


def latest_by_id(incidents: list[Incident]) -> dict[str, Incident]:
    out: dict[str, Incident] = {}
    for inc in incidents:
        if inc.id not in out or inc.revision >= out[inc.id].revision:
            out[inc.id] = inc
    return out


def checkpointing_runtime(s: Settings, retry_s: float) -> tuple[Any, Any]:
    """A worker runtime (not started) from ``s``: checkpoints due at once for partition 0, failed
    sends resent for ``retry_s`` (0: not at all). Returns the runtime and its SendErrors sensor."""
    from streams.app import SendErrors, build_runtime

    s.worker.send_retry_s = retry_s
    s.worker.checkpoint_interval_s = 0.001
    rt = build_runtime(s)
    rt.checkpoints.on_assigned([0], [0], {}, rt.pipeline.engine)
    [sensor] = [x for x in rt.app.sensors if isinstance(x, SendErrors)]
    return rt, sensor
