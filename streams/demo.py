"""`cityops demo`: broker, topics, worker(s), store writer, dashboard and simulator, one command."""

from __future__ import annotations

import contextlib
import logging
import shutil
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import click

from sinks.errors import SinkError
from sinks.read import StoreReader
from streams.broker import DevBroker, free_port
from streams.procs import Child, spawn
from streams.settings import Settings
from streams.simulate import build_scenario, now_utc, produce
from streams.topics import create_topics

logger = logging.getLogger(__name__)


@dataclass
class DemoOptions:
    duration: float | None
    headless: bool
    workers: int
    run_dir: Path
    speed: float
    ingest: str = "open311"


def _dashboard_argv(settings: Settings) -> list[str]:
    """The Streamlit command line; refuses a non-loopback address without authentication configured."""
    import sys

    from streams.security import dashboard_exposure_problem

    refusal = dashboard_exposure_problem(settings.dashboard, settings.dashboard.host)
    if refusal:
        raise click.ClickException(refusal)
    app = Path(__file__).resolve().parent.parent / "dashboard" / "app.py"
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(app),
        "--server.headless",
        "true",
        "--server.address",
        settings.dashboard.host,
        "--server.port",
        str(settings.dashboard.port),
        "--browser.gatherUsageStats",
        "false",
        "--global.developmentMode",
        "false",
    ]


def run_demo(settings: Settings, opts: DemoOptions) -> int:
    """Run the whole pipeline; returns the process exit code."""
    if opts.run_dir.exists():
        shutil.rmtree(opts.run_dir)
    opts.run_dir.mkdir(parents=True)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    broker = DevBroker(log_path=opts.run_dir / "broker.log").start()
    children: list[Child] = []
    try:
        settings.kafka.bootstrap = broker.bootstrap
        settings.store.path = opts.run_dir / "cityops.duckdb"
        settings.store.quack_port = free_port()
        settings.worker.data_dir = opts.run_dir / "faust"
        settings.gateway.http.port = free_port()
        settings.dashboard.demo_mode = True  # no login in the demo; the dashboard labels it on every page
        if not opts.headless:
            settings.dashboard.port = free_port() if _busy(settings.dashboard.port) else settings.dashboard.port
        create_topics(settings.kafka)
        env = settings.to_env()
        logs = opts.run_dir / "logs"
        children.append(spawn("store", ["cityops", "store"], env, logs))
        for n in range(opts.workers):
            children.append(spawn(f"worker-{n + 1}", ["cityops", "worker"], env, logs))
        children.append(spawn("alerts", ["cityops", "alerts"], env, logs))
        if opts.ingest != "json":
            gateway_url = f"http://{settings.gateway.http.host}:{settings.gateway.http.port}"
            children.append(spawn("gateway", ["cityops", "gateway", "http"], env, logs))
            _wait_http(f"{gateway_url}/health", children[-1])
            click.echo(f"gateway: {gateway_url} (Open311 GeoReport v2, SensorThings, CloudEvents)")
        if not opts.headless:
            children.append(spawn("dashboard", _dashboard_argv(settings), env, logs))
            click.echo(f"dashboard: http://{settings.dashboard.host}:{settings.dashboard.port}")
        click.echo(f"broker: {broker.bootstrap}   store: {settings.store.path}   logs: {logs}")
        duration = opts.duration if opts.duration is not None else 3600.0 * 24
        messages = build_scenario(settings, now_utc(), duration)
        if opts.ingest == "json":
            sim = threading.Thread(
                target=produce,
                args=(settings, messages),
                kwargs={"speed": opts.speed, "stop": stop},
                name="simulator",
                daemon=True,
            )
        else:  # reports go through the real HTTP gateway, readings and tracks straight to Kafka
            from streams.gateways.emit import emit

            sim = threading.Thread(
                target=emit,
                args=(settings, messages, opts.ingest),
                kwargs={"speed": opts.speed, "stop": stop},
                name="simulator",
                daemon=True,
            )
        sim.start()
        reader = StoreReader(settings.store.quack_uri, settings.store.token.get_secret_value())
        began = time.monotonic()
        counts: dict[str, int] = {}
        while not stop.is_set():
            if opts.duration is not None and time.monotonic() - began >= opts.duration:
                break
            dead = [c.name for c in children if not c.alive()]
            if dead:
                click.echo(f"\nprocess exited unexpectedly: {', '.join(dead)} (see {logs})", err=True)
                return 1
            try:
                counts = reader.counts()
                line = (
                    f"[{time.monotonic() - began:5.0f}s] events in={counts['events']} "
                    f"incidents open={counts['open_incidents']} dead letters={counts['dead_letters']}"
                )
            except SinkError:
                line = f"[{time.monotonic() - began:5.0f}s] waiting for the store writer..."
            click.echo(line, nl=True)
            stop.wait(2.0)
        time.sleep(0.5)
        with contextlib.suppress(SinkError):
            counts = reader.counts()
        click.echo(
            f"summary: events in={counts.get('events', 0)} incidents={counts.get('incidents', 0)} "
            f"open={counts.get('open_incidents', 0)} dead letters={counts.get('dead_letters', 0)}"
        )
        if opts.headless and opts.duration is not None and counts.get("incidents", 0) == 0:
            click.echo("no incidents were detected: check the worker log", err=True)
            return 1
        return 0
    finally:
        stop.set()
        for child in reversed(children):
            child.stop()
        broker.stop()
        click.echo("stopped every process")


def _busy(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _wait_http(url: str, child: Child, timeout: float = 30.0) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and child.alive():
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.3)
    raise click.ClickException(f"{child.name} did not answer on {url} (see {child.log})")
