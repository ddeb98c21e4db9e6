"""`cityops incident ...`, `cityops silence ...` and `cityops store export`: operators from a shell."""

from __future__ import annotations

import getpass
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click

from rules.duration import parse_duration
from rules.silences import Silence
from sinks.actions import ActionError, ActionSender, new_action
from sinks.errors import SinkError
from sinks.read import StoreReader
from streams.settings import Settings


def _reader(s: Settings) -> StoreReader:
    return StoreReader(s.store.quack_uri, s.store.token.get_secret_value())


def _sender(s: Settings) -> ActionSender:
    return ActionSender(_reader(s), s.kafka.producer_options(), s.kafka.actions_topic, s.kafka.silences_topic)


def _echo_rows(rows: list[dict[str, Any]]) -> None:
    for row in rows:
        click.echo(json.dumps(row, default=str, ensure_ascii=False))


@click.group()
def incident() -> None:
    """Work on incidents: ack, assign, comment, resolve, close, reopen, show."""


def _action_command(name: str, help_text: str) -> click.Command:
    @click.command(name=name, help=help_text)
    @click.argument("incident_id")
    @click.option("--note", default="", help="Free text recorded in the audit trail.")
    @click.option("--actor", default=None, help="Your user name (default: the login name).")
    @click.option(
        "--wait",
        "wait_s",
        type=float,
        default=10.0,
        show_default=True,
        help="Seconds to wait for the store to apply it (0: do not wait).",
    )
    @click.pass_context
    def command(
        ctx: click.Context, incident_id: str, note: str, actor: str | None, wait_s: float, assignee: str | None = None
    ) -> None:
        s: Settings = ctx.obj
        sender = _sender(s)
        try:
            action = new_action(
                incident_id,
                name,  # type: ignore[arg-type]
                actor or getpass.getuser(),
                note=note,
                assignee=assignee,
            )
            row = sender.send(action, wait_s=wait_s)
        except (ActionError, SinkError) as exc:
            raise click.ClickException(str(exc)) from exc
        finally:
            sender.close()
        state = _reader(s).incident(incident_id) if row else None
        click.echo(f"{name}: {incident_id}" + (f" -> {state['status']}" if state else " (sent)"))

    if name == "assign":
        command = click.option("--to", "assignee", required=True, help="Who takes the incident.")(command)
    return command


for _name, _help in (
    ("ack", "Acknowledge an incident."),
    ("assign", "Assign an incident (in progress)."),
    ("comment", "Add a comment."),
    ("resolve", "Resolve an incident."),
    ("close", "Close a resolved incident."),
    ("reopen", "Reopen a resolved or closed incident."),
):
    incident.add_command(_action_command(_name, _help))


@incident.command("show")
@click.argument("incident_id")
@click.pass_context
def incident_show(ctx: click.Context, incident_id: str) -> None:
    """Print an incident and its full history."""
    reader = _reader(ctx.obj)
    try:
        row = reader.incident(incident_id)
        if row is None:
            raise click.ClickException(f"unknown incident {incident_id}")
        _echo_rows([row])
        _echo_rows(reader.history(incident_id))
    except SinkError as exc:
        raise click.ClickException(str(exc)) from exc


@click.group()
def silence() -> None:
    """Geo-scoped silences and maintenance windows."""


@silence.command("create")
@click.option("--zone", "zones", multiple=True, help="Zone id (repeatable).")
@click.option("--polygon", "polygon_wkt", default=None, help="WGS-84 polygon as WKT (e.g. a street).")
@click.option("--rule", "rules", multiple=True, help="Rule id glob (repeatable; default: all rules).")
@click.option(
    "--start",
    type=click.DateTime(formats=["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M%z"]),
    default=None,
    help="Start (default: now).",
)
@click.option("--for", "length", default="1h", show_default=True, help="Duration, e.g. 3d.")
@click.option("--reason", default="", help="Why, for the audit trail.")
@click.option("--actor", default=None)
@click.pass_context
def silence_create(
    ctx: click.Context,
    zones: tuple[str, ...],
    polygon_wkt: str | None,
    rules: tuple[str, ...],
    start: datetime | None,
    length: str,
    reason: str,
    actor: str | None,
) -> None:
    """Create a silence: matching incidents are recorded and counted but not notified."""
    begin = start or datetime.now(UTC)
    try:
        item = Silence(
            silence_id=uuid.uuid4().hex[:12],
            starts_at=begin,
            ends_at=begin + parse_duration(length),
            zones=list(zones),
            polygon_wkt=polygon_wkt,
            rules=list(rules) or ["*"],
            created_by=actor or getpass.getuser(),
            reason=reason,
        )
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    sender = _sender(ctx.obj)
    try:
        sender.silence(item)
    finally:
        sender.close()
    click.echo(f"silence {item.silence_id} from {item.starts_at.isoformat()} until {item.ends_at.isoformat()}")


@silence.command("list")
@click.option("--active", is_flag=True, help="Only silences in force now.")
@click.pass_context
def silence_list(ctx: click.Context, active: bool) -> None:
    """List silences and how many incidents each covers."""
    try:
        rows = _reader(ctx.obj).silences(active_only=active)
    except SinkError as exc:
        raise click.ClickException(str(exc)) from exc
    _echo_rows([{k: v for k, v in r.items() if k != "payload"} for r in rows] or [])
    if not rows:
        click.echo("(no silences)")


@silence.command("expire")
@click.argument("silence_id")
@click.pass_context
def silence_expire(ctx: click.Context, silence_id: str) -> None:
    """End a silence now."""
    reader = _reader(ctx.obj)
    rows = [r for r in reader.silences() if r["silence_id"] == silence_id]
    if not rows:
        raise click.ClickException(f"unknown silence {silence_id}")
    item = Silence.model_validate_json(rows[0]["payload"]).model_copy(update={"expired": True})
    sender = _sender(ctx.obj)
    try:
        sender.silence(item)
    finally:
        sender.close()
    click.echo(f"silence {silence_id} expired")


EXPORT_TABLES = {
    "incidents": "last_event_at",
    "incident_history": "happened_at",
    "events": "ts",
    "dead_letters": "failed_at",
    "actions": "acted_at",
}


def export(s: Settings, table: str, fmt: str, since: datetime | None, out: Path) -> int:
    """Copy a table (rows since a time) from the running store to a local Parquet/CSV file."""
    import duckdb

    from sinks.quack import load_quack
    from sinks.sql import bind

    if table not in EXPORT_TABLES:
        raise click.ClickException(f"unknown table {table!r}; one of {sorted(EXPORT_TABLES)}")
    remote = f"SELECT * FROM {table}"  # noqa: S608 - allow-listed name
    if since is not None:
        remote = bind(f"{remote} WHERE {EXPORT_TABLES[table]} >= $since", {"since": since})
    con = duckdb.connect()
    load_quack(con)
    rel = con.sql(
        "SELECT * FROM quack_query($uri, $sql, token => $token)",
        params={"uri": s.store.quack_uri, "sql": remote, "token": s.store.token.get_secret_value()},
    )
    data = rel.arrow()
    con.register("export_rows", data.read_all() if hasattr(data, "read_all") else data)  # a reader reads once
    option = "FORMAT parquet" if fmt == "parquet" else "FORMAT csv, HEADER true"
    out.parent.mkdir(parents=True, exist_ok=True)
    con.execute(f"COPY export_rows TO '{str(out).replace(chr(39), chr(39) * 2)}' ({option})")
    count = con.execute("SELECT count(*) FROM export_rows").fetchone()
    return int(count[0]) if count else 0


def since_option(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.now(UTC) - parse_duration(value)
    except ValueError:
        parsed = datetime.fromisoformat(value)
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


__all__ = ["export", "incident", "silence", "since_option", "timedelta"]
