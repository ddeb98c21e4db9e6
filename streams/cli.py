"""The `cityops` command line. Every option also has an environment variable (see --help)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from streams.gateways.cli import gateway
from streams.logs import setup_logging
from streams.settings import Settings

_SERVICES = {"demo", "worker", "store", "broker", "dashboard", "alerts", "gateway", "bench"}
#: Subcommands of a service group that are one-shot tools (they log like one).
_TOOLS_OF_SERVICES = {("store", "query"), ("store", "export"), ("dashboard", "hash-password")}
_ARGS = "cityops.args"
_SERVICE = "cityops.service"


def _runs_service(ctx: click.Context) -> bool:
    """Whether this invocation runs a long-lived service: not ``--help``, not a service group's tool."""
    args = ctx.meta.get(_ARGS, [])
    if ctx.invoked_subcommand not in _SERVICES or "--help" in args:
        return False
    return tuple(args[:2]) not in _TOOLS_OF_SERVICES


def _settings(ctx: click.Context) -> Settings:
    obj: Settings = ctx.obj
    return obj


class _Commands(click.Group):
    """The ``cityops`` group: a failure cityops knows (its own errors, an unreachable broker) ends
    the command with ``Error: <message>`` and exit status 1, not a traceback. A service logs the
    traceback as an ERROR; a one-shot tool with ``--log-level DEBUG``."""

    def invoke(self, ctx: click.Context) -> Any:
        from kafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError

        from rules.errors import RulesError
        from sinks.errors import SinkError
        from streams.errors import StreamsError

        # what follows the group's own options (``store query ...``), before click hands it down
        ctx.meta[_ARGS] = [*getattr(ctx, "_protected_args", []), *ctx.args]
        try:
            return super().invoke(ctx)
        except (StreamsError, RulesError, SinkError, KafkaError) as exc:
            # a service's log keeps the traceback; a one-shot tool shows it with --log-level DEBUG
            level = logging.ERROR if ctx.meta.get(_SERVICE) else logging.DEBUG
            logging.getLogger("streams.cli").log(level, "command failed: %s", exc, exc_info=True)
            message = str(exc) or type(exc).__name__
            if isinstance(exc, KafkaTimeoutError | KafkaConnectionError):
                bootstrap = ctx.obj.kafka.bootstrap if isinstance(ctx.obj, Settings) else "the configured address"
                message = (
                    f"cannot reach the Kafka broker at {bootstrap} ({message}); check --bootstrap or "
                    "CITYOPS_KAFKA__BOOTSTRAP, or start the development broker with `cityops broker`"
                )
            raise click.ClickException(message) from exc


@click.group(cls=_Commands)
@click.option(
    "--bootstrap", envvar="CITYOPS_KAFKA__BOOTSTRAP", help="Kafka bootstrap servers [CITYOPS_KAFKA__BOOTSTRAP]"
)
@click.option(
    "--pack", type=click.Path(path_type=Path), envvar="CITYOPS_RULES__PACK", help="Rule pack YAML [CITYOPS_RULES__PACK]"
)
@click.option(
    "--store-path",
    type=click.Path(path_type=Path),
    envvar="CITYOPS_STORE__PATH",
    help="DuckDB file of the store writer [CITYOPS_STORE__PATH]",
)
@click.option("--log-level", envvar="CITYOPS_LOG_LEVEL", default=None, help="DEBUG, INFO, ... [CITYOPS_LOG_LEVEL]")
@click.option(
    "--log-json/--no-log-json", envvar="CITYOPS_LOG_JSON", default=None, help="JSON log lines [CITYOPS_LOG_JSON]"
)
@click.pass_context
def main(
    ctx: click.Context,
    bootstrap: str | None,
    pack: Path | None,
    store_path: Path | None,
    log_level: str | None,
    log_json: bool | None,
) -> None:
    """cityops: urban-governance event stream processor."""
    settings = Settings()
    service = ctx.meta[_SERVICE] = _runs_service(ctx)
    if bootstrap:
        settings.kafka.bootstrap = bootstrap
    if pack:
        settings.rules.pack = pack
    if store_path:
        settings.store.path = store_path
    if log_level:
        settings.log_level = log_level.upper()  # type: ignore[assignment]
    elif "CITYOPS_LOG_LEVEL" not in os.environ and not service:
        settings.log_level = "WARNING"  # one-shot tools stay quiet unless asked
    if log_json is not None:
        settings.log_json = log_json
    setup_logging(settings.log_level, json=settings.log_json)
    if settings.log_level == "WARNING" and not service:
        # kafka-python logs every failed connection attempt as an ERROR; a tool that cannot reach
        # the broker ends with one "Error: cannot reach ..." line instead (``_Commands``)
        logging.getLogger("kafka").setLevel(logging.CRITICAL)
    if service:
        logging.getLogger("streams.cli").info("effective settings %s", json.dumps(settings.masked()))
    ctx.obj = settings


@main.command()
@click.option("--duration", type=float, default=None, help="Stop after this many seconds (default: until Ctrl-C).")
@click.option("--headless", is_flag=True, help="No dashboard; print a summary at the end.")
@click.option("--workers", type=int, default=1, show_default=True, help="Stream worker processes.")
@click.option("--speed", type=float, default=1.0, show_default=True, help="Scenario speed (2 = twice as fast).")
@click.option("--run-dir", type=click.Path(path_type=Path), default=Path("var/demo"), show_default=True)
@click.option(
    "--ingest",
    type=click.Choice(["open311", "gcj02-app", "cloudevents", "json"]),
    default="open311",
    show_default=True,
    help="How the simulator's reports arrive: through the HTTP gateway, or plain JSON.",
)
@click.pass_context
def demo(
    ctx: click.Context, duration: float | None, headless: bool, workers: int, speed: float, run_dir: Path, ingest: str
) -> None:
    """Start broker, worker(s), store, alerts, gateway, dashboard and the Wuhan simulator."""
    from streams.demo import DemoOptions, run_demo

    sys.exit(run_demo(_settings(ctx), DemoOptions(duration, headless, workers, run_dir, speed, ingest)))


@main.command()
@click.option("--port", type=int, default=9092, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
def broker(port: int, host: str) -> None:
    """Run the Tansu development broker in the foreground (memory only)."""
    import signal
    import threading

    from streams.broker import DevBroker

    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    with DevBroker(host, port) as b:
        click.echo(f"broker ready at {b.bootstrap} (Ctrl-C to stop)")
        with contextlib.suppress(KeyboardInterrupt):
            done.wait()


@main.group()
def topics() -> None:
    """Kafka topics of cityops."""


@topics.command("create")
@click.pass_context
def topics_create(ctx: click.Context) -> None:
    """Create every topic with its declared partitions."""
    from streams.topics import create_topics

    settings = _settings(ctx)
    created = create_topics(settings.kafka)
    click.echo(f"created {len(created)} topic(s); all present: {', '.join(settings.kafka.all_topics())}")


@main.command()
@click.pass_context
def worker(ctx: click.Context) -> None:
    """Run a stream worker (ingest + detect)."""
    from streams.worker import run_worker

    run_worker(_settings(ctx))


@main.command()
@click.pass_context
def alerts(ctx: click.Context) -> None:
    """Publish incidents to the alert routes (topics, CloudEvents, CAP, SDM) and webhooks.

    Configured by CITYOPS_ALERTS__ROUTES, CITYOPS_ALERTS__WEBHOOKS (JSON lists), CITYOPS_ALERTS__TIMEZONE
    and the other CITYOPS_ALERTS__* variables; see docs/alerts.md.
    """
    from streams.alerting import AlertRunner

    runner = AlertRunner(_settings(ctx))
    runner.install_signal_handlers()
    runner.run()


@main.group(invoke_without_command=True)
@click.pass_context
def store(ctx: click.Context) -> None:
    """Run the single store writer (DuckDB + Quack); subcommands query it."""
    if ctx.invoked_subcommand is None:
        from streams.writer import Writer

        w = Writer(_settings(ctx))
        w.install_signal_handlers()
        w.run()


@store.command("query")
@click.argument("sql")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.pass_context
def store_query(ctx: click.Context, sql: str, fmt: str) -> None:
    """Run a read-only SQL query on the running store through Quack."""
    from sinks.errors import SinkError
    from sinks.read import StoreReader

    s = _settings(ctx)
    try:
        rows = StoreReader(s.store.quack_uri, s.store.token.get_secret_value()).rows(sql)
    except SinkError as exc:
        raise click.ClickException(str(exc)) from exc
    if fmt == "json":
        for row in rows:
            click.echo(json.dumps(row, default=str, ensure_ascii=False))
        return
    if not rows:
        click.echo("(no rows)")
        return
    cols = list(rows[0])
    widths = [max(len(c), *(len(str(r[c])) for r in rows)) for c in cols]
    click.echo("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)))
    for r in rows:
        click.echo("  ".join(str(r[c]).ljust(w) for c, w in zip(cols, widths, strict=True)))


@store.command("export")
@click.option("--table", default="incidents", show_default=True, help="incidents, incident_history, events, ...")
@click.option("--format", "fmt", type=click.Choice(["parquet", "csv"]), default="parquet", show_default=True)
@click.option("--since", default=None, help="ISO time or a duration back from now (e.g. 7d).")
@click.option("--out", type=click.Path(path_type=Path), required=True)
@click.pass_context
def store_export(ctx: click.Context, table: str, fmt: str, since: str | None, out: Path) -> None:
    """Export history from the running store (read-only, through Quack) for other tools."""
    from sinks.errors import SinkError
    from streams.cli_incidents import export, since_option

    try:
        n = export(_settings(ctx), table, fmt, since_option(since), out)
    except SinkError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"exported {n} rows of {table} to {out}")


@main.command()
@click.option("--duration", type=float, default=120.0, show_default=True, help="Scenario length in seconds.")
@click.option("--speed", type=float, default=1.0, show_default=True, help="0 = as fast as possible.")
@click.option(
    "--start",
    type=click.DateTime(formats=["%Y-%m-%dT%H:%M:%S%z"]),
    default=None,
    help="Event time of the first event (default: now).",
)
@click.option("--seed", type=int, default=7, show_default=True)
@click.option(
    "--out", type=click.Path(path_type=Path), default=None, help="Write the events as JSONL instead of sending them."
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["json", "open311", "sensorthings-mqtt", "cloudevents", "gcj02-app"]),
    default="json",
    show_default=True,
    help="Ingest path: json = Kafka; the others go through `cityops gateway http|mqtt` (docs/gateways.md).",
)
@click.pass_context
def simulate(
    ctx: click.Context, duration: float, speed: float, start: datetime | None, seed: int, out: Path | None, fmt: str
) -> None:
    """Stream the scripted Wuhan scenario to the raw topic (or through a gateway, see --format)."""
    from streams.simulate import build_scenario, now_utc, produce

    s = _settings(ctx)
    messages = build_scenario(s, start or now_utc(), duration, seed)
    if fmt != "json" and out is None:
        from streams.gateways.emit import emit

        counts = emit(s, messages, fmt, speed=speed)
        click.echo(f"sent {counts} ({fmt})")
        return
    if out is not None:
        with out.open("wb") as fh:
            for m in messages:
                fh.write((m.bad or json.dumps({"events": m.events}, ensure_ascii=False).encode()) + b"\n")
        click.echo(f"wrote {sum(len(m.events) for m in messages)} events to {out}")
        return
    sent = produce(s, messages, speed=speed)
    click.echo(f"sent {sent} events to {s.kafka.raw_topic}")


@main.command()
@click.option("--events", type=int, default=100_000, show_default=True, help="Events in the throughput phases.")
@click.option(
    "--zones", type=int, default=None, help="Use a synthetic grid of about N zones (default: the configured pack)."
)
@click.option(
    "--rules", "rule_count", type=int, default=None, help="Rules of the synthetic pack (default 100 with --zones)."
)
@click.option("--batch", type=int, default=500, show_default=True, help="Events per envelope sent to cityops.")
@click.option("--rate", type=float, default=5000.0, show_default=True, help="Events/s of the latency phase.")
@click.option("--latency-seconds", type=float, default=20.0, show_default=True, help="0 skips the latency phase.")
@click.option(
    "--alerts/--no-alerts", default=True, show_default=True, help="Also measure to the alert topic (`cityops alerts`)."
)
@click.option(
    "--repeat",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Rounds of the throughput phases, in turn; the median of each phase is reported, with every round.",
)
@click.option("--run-dir", type=click.Path(path_type=Path), default=Path("var/bench"), show_default=True)
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None, help="Also write the JSON here.")
@click.pass_context
def bench(
    ctx: click.Context,
    events: int,
    zones: int | None,
    rule_count: int | None,
    batch: int,
    rate: float,
    latency_seconds: float,
    alerts: bool,
    repeat: int,
    run_dir: Path,
    json_path: Path | None,
) -> None:
    """Events/s of cityops vs a naive Faust agent vs raw aiokafka on one event set, and latency at --rate.

    Starts its own broker on a free loopback port (--bootstrap is not used); prints JSON on stdout,
    progress on stderr. Exit code 2 when cityops' incidents differ from replay's. See README, "Benchmarks".
    """
    from streams.bench import BenchOptions, bench_main

    opts = BenchOptions(events, batch, zones, rule_count, rate, latency_seconds, alerts, run_dir, repeat=repeat)
    sys.exit(bench_main(_settings(ctx), opts, json_path))


_SHOWN_REJECTIONS = 20  # rejections replay prints one by one; the rest are counted


def _lines(path: Path) -> Iterator[bytes]:
    with path.open("rb") as fh:
        yield from fh


@main.command()
@click.argument("events", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--pack", "pack_path", type=click.Path(path_type=Path), default=None, help="Rule pack (default: settings)."
)
@click.option("--out", type=click.Path(path_type=Path), default=None, help="incidents JSONL (default: stdout)")
@click.pass_context
def replay(ctx: click.Context, events: Path, pack_path: Path | None, out: Path | None) -> None:
    """Run the rule engine over a JSONL file of events, in event time, without a broker."""
    from rules.errors import PackError
    from rules.pack import load_pack
    from rules.replay import replay as run_replay

    try:
        pack = load_pack(pack_path or _settings(ctx).rules.pack)
    except PackError as exc:
        raise click.ClickException(str(exc)) from exc
    began = time.perf_counter()
    result = run_replay(pack, _lines(events), progress=lambda n: click.echo(f"... {n} events", err=True))
    seconds = time.perf_counter() - began
    payload = "".join(inc.model_dump_json() + "\n" for inc in result.incidents)
    if out is None:
        click.echo(payload, nl=False)
    else:
        out.write_text(payload, encoding="utf-8")
    for number, rej in result.rejected[:_SHOWN_REJECTIONS]:
        click.echo(f"{events}:{number}: rejected: {rej.reason}", err=True)
    if len(result.rejected) > _SHOWN_REJECTIONS:
        click.echo(f"... and {len(result.rejected) - _SHOWN_REJECTIONS} more rejected records", err=True)
    rate = result.events / seconds if seconds > 0 else 0.0
    click.echo(
        f"replayed {result.events} events -> {len(result.incidents)} incidents ({len(result.rejected)} rejected)"
        f" in {seconds:.2f} s ({rate:,.0f} events/s)",
        err=True,
    )


def _load_or_exit(pack: Path) -> Any:
    """Load a pack, or print its problems as file:line: message and exit 1."""
    from rules.errors import PackError
    from rules.pack import load_pack

    try:
        return load_pack(pack)
    except PackError as exc:
        for problem in exc.problems:
            click.echo(problem, err=True)
        sys.exit(1)


@main.group()
def rules() -> None:
    """Validate and test rule packs."""


@rules.command("validate")
@click.argument("pack", type=click.Path(path_type=Path))
def rules_validate(pack: Path) -> None:
    """Validate a pack; errors are printed as file:line: message (warnings too, on stderr)."""
    from rules.pack import caveats

    loaded = _load_or_exit(pack)
    for warning in caveats(loaded):
        click.echo(warning, err=True)
    click.echo(
        f"{pack}: ok: pack '{loaded.spec.pack}' version {loaded.version}, {len(loaded.spec.rules)} rules, "
        f"layers {', '.join(f'{n} ({len(lay.ids)} zones)' for n, lay in loaded.layers.items())}"
    )


@rules.command("test")
@click.argument("pack", type=click.Path(path_type=Path))
def rules_test(pack: Path) -> None:
    """Run the pack's own test cases; every rule must be tested."""
    from rules.testing import run_pack_tests, untested_rules

    loaded = _load_or_exit(pack)
    failed = 0
    for result in run_pack_tests(loaded):
        click.echo(f"{'PASS' if result.ok else 'FAIL'}  {result.name}")
        for p in result.problems:
            click.echo(f"      {p}")
        failed += not result.ok
    missing = untested_rules(loaded)
    for rid in missing:
        click.echo(f"FAIL  rule '{rid}' has no test that expects it to fire")
    total = len(loaded.spec.tests)
    click.echo(f"{total - failed} passed, {failed + len(missing)} failed")
    sys.exit(1 if failed or missing else 0)


@rules.command("diff")
@click.argument("old", type=click.Path(path_type=Path))
@click.argument("new", type=click.Path(path_type=Path))
def rules_diff(old: Path, new: Path) -> None:
    """Which rules NEW adds, removes or changes compared with OLD."""
    from rules.diff import diff_packs
    from rules.errors import PackError
    from rules.pack import load_pack

    try:
        result = diff_packs(load_pack(old), load_pack(new))
    except PackError as exc:
        raise click.ClickException(str(exc)) from exc
    for line in result.lines():
        click.echo(line)


@rules.command("publish")
@click.argument("pack", type=click.Path(path_type=Path))
@click.option("--actor", default=None, help="Who publishes (recorded in the bundle).")
@click.pass_context
def rules_publish(ctx: click.Context, pack: Path, actor: str | None) -> None:
    """Validate PACK and publish it to the compacted rules topic; workers swap to it live."""
    import getpass

    from kafka import KafkaProducer

    from rules.bundle import bundle_pack
    from rules.errors import PackError

    s = _settings(ctx)
    try:
        bundle = bundle_pack(pack, published_by=actor or getpass.getuser())
    except PackError as exc:
        for problem in exc.problems:
            click.echo(problem, err=True)
        raise click.ClickException("refused: the pack is invalid, nothing was published") from exc
    producer = KafkaProducer(
        client_id="cityops-rules", acks="all", max_request_size=32 * 2**20, **s.kafka.producer_options()
    )
    producer.send(s.kafka.rules_topic, key=bundle.pack.encode(), value=bundle.model_dump_json().encode()).get(30)
    producer.close()
    click.echo(f"published {bundle.pack}@{bundle.version} digest {bundle.digest} to {s.kafka.rules_topic}")


@rules.command("backtest")
@click.argument("pack", type=click.Path(path_type=Path))
@click.option("--since", required=True, help="ISO time or a duration back from now (e.g. 7d).")
@click.option("--until", "until", default=None, help="ISO time (default: now).")
@click.option(
    "--live",
    "live_path",
    type=click.Path(path_type=Path),
    default=None,
    help="The pack to compare with (default: the configured pack).",
)
@click.option(
    "--store-file",
    type=click.Path(path_type=Path),
    default=None,
    help="Read this DuckDB store file (a copy, an archive) instead of the running store through Quack.",
)
@click.pass_context
def rules_backtest(
    ctx: click.Context, pack: Path, since: str, until: str | None, live_path: Path | None, store_file: Path | None
) -> None:
    """Run PACK over the events stored in DuckDB and compare per-rule counts with the live pack."""
    from rules.backtest import backtest
    from rules.errors import PackError
    from rules.pack import load_pack
    from sinks.errors import SinkError
    from sinks.read import StoreReader
    from streams.cli_incidents import since_option

    s = _settings(ctx)
    try:
        candidate, live = load_pack(pack), load_pack(live_path or s.rules.pack)
    except PackError as exc:
        raise click.ClickException(str(exc)) from exc
    start, end = since_option(since), since_option(until) if until else None
    try:
        if store_file is not None:
            reader = StoreReader.of_file(store_file)
        else:
            reader = StoreReader(s.store.quack_uri, s.store.token.get_secret_value())
        lines = list(reader.event_payloads(start, end, progress=lambda n: click.echo(f"... {n} events", err=True)))
    except SinkError as exc:
        raise click.ClickException(str(exc)) from exc
    for line in backtest(candidate, live, lines).lines():
        click.echo(line)


@main.group(invoke_without_command=True)
@click.pass_context
def dashboard(ctx: click.Context) -> None:
    """Run the Streamlit operations dashboard (see docs/dashboard.md), or a subcommand."""
    import os

    from streams.demo import _dashboard_argv

    if ctx.invoked_subcommand is not None:
        return
    s = _settings(ctx)
    argv = _dashboard_argv(s)  # refuses a non-loopback address without a login
    os.execvpe(argv[0], argv, {**os.environ, **s.to_env()})


@dashboard.command("hash-password")
@click.option(
    "--password",
    prompt=True,
    hide_input=True,
    confirmation_prompt=True,
    help="Read from a prompt when not given (keeps it out of the shell history).",
)
def dashboard_hash_password(password: str) -> None:
    """Print a salted scrypt hash for CITYOPS_DASHBOARD__USERS (a user's "password_hash")."""
    from dashboard.passwords import hash_password  # the CLI composes every package; dashboard imports no CLI

    try:
        click.echo(hash_password(password))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc


main.add_command(gateway)


from streams.cli_incidents import incident, silence  # noqa: E402 - registered after main is defined

main.add_command(incident)
main.add_command(silence)


def run() -> Any:
    return main(auto_envvar_prefix=None)


if __name__ == "__main__":
    main()
