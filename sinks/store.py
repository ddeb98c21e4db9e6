"""The single DuckDB store writer: migrations, idempotent batch upserts, lifecycle, audit, Quack.

Only this class opens the DuckDB file read-write; every other process reads through Quack
(see ``sinks.read``). Each batch is applied in one transaction; re-applying a batch leaves the
store exactly as it was, so the Kafka offsets can be committed after the transaction. The
incident history is append-only (the audit trail) and doubles as the outbox of the
incident-updates topic (``published_at``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pyarrow as pa

from rules.lifecycle import (
    Action,
    Status,
    Transition,
    TransitionError,
    apply_action,
    rule_cleared,
    rule_fired_again,
    update_id,
)
from rules.model import Enriched, Incident
from rules.silences import Silence, silenced_by
from rules.spec import SEVERITIES
from sinks.errors import SinkError
from sinks.quack import load_quack
from sinks.schema import MIGRATIONS

logger = logging.getLogger(__name__)

# Only statements that start like a read are served over Quack, and no write keyword may appear outside
# string literals (so a category named 'load' can still be queried).
_READ_ONLY_MACRO = r"""
CREATE OR REPLACE MACRO cityops_read_only(sid, query) AS (
    regexp_matches(upper(trim(query)), '^(SELECT|FROM|WITH|DESCRIBE|SHOW|SUMMARIZE|EXPLAIN|PRAGMA TABLE_INFO)\b')
    AND NOT regexp_matches(upper(regexp_replace(query, '''[^'']*''', '''''', 'g')),
        '\b(INSERT|UPDATE|DELETE|CREATE|DROP|ALTER|ATTACH|DETACH|COPY|EXPORT|IMPORT|INSTALL|LOAD|SET|RESET|CALL|CHECKPOINT|VACUUM|TRUNCATE|GRANT|MERGE)\b')
)
"""
_STATE_COLS = (
    "id, revision, status, rule_status, severity, opened_at, acknowledged_at, assignee, closed_at, status_changed_at"
)


@dataclass(frozen=True)
class DeadLetter:
    """A record that could not be processed, as stored."""

    source: str
    kind: str
    reason: str
    original: bytes
    failed_at: datetime


@dataclass
class Batch:
    """One transaction's worth of records."""

    incidents: list[Incident] = field(default_factory=list)
    events: list[Enriched] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)
    silences: list[Silence] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.incidents) + len(self.events) + len(self.dead_letters) + len(self.actions) + len(self.silences)


class Store:
    """Owns the DuckDB file. Not thread-safe: one writer thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.con = duckdb.connect(str(path))
        except duckdb.IOException as exc:
            raise SinkError(f"cannot open store {path}: {exc} (is another `cityops store` running?)") from exc
        self.migrate()
        row = self.con.execute("SELECT coalesce(max(seq), 0) FROM incident_history").fetchone()
        self._seq = int(row[0]) if row else 0
        self.silences: dict[str, Silence] = {
            s.silence_id: s
            for s in (
                Silence.model_validate_json(r[0]) for r in self.con.execute("SELECT payload FROM silences").fetchall()
            )
        }

    def migrate(self) -> int:
        """Apply pending migrations; returns the schema version."""
        self.con.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name VARCHAR, "
            "applied_at TIMESTAMPTZ)"
        )
        row = self.con.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()
        current = int(row[0]) if row else 0
        for version, name, ddl in MIGRATIONS:
            if version <= current:
                continue
            self.con.execute("BEGIN TRANSACTION")
            self.con.execute(ddl)
            self.con.execute("INSERT INTO schema_migrations VALUES (?, ?, ?)", [version, name, datetime.now(UTC)])
            self.con.execute("COMMIT")
            logger.info("store migrated version=%d name=%s path=%s", version, name, self.path)
            current = version
        return current

    def serve(self, host: str, port: int, token: str) -> str:
        """Start the Quack endpoint (background threads) with the read-only policy."""
        load_quack(self.con)
        self.con.execute(_READ_ONLY_MACRO)
        self.con.execute("SET GLOBAL quack_authorization_function = 'cityops_read_only'")
        uri = f"quack:{host}:{port}"
        self.con.execute("CALL quack_serve(?, token => ?)", [uri, token])
        logger.info("quack serving uri=%s", uri)
        return uri

    # -- writing ------------------------------------------------------------------------------
    def apply(self, batch: Batch) -> None:
        """Apply a batch in one transaction, idempotently."""
        if not len(batch):
            return
        now = datetime.now(UTC)
        self.con.execute("BEGIN TRANSACTION")
        try:
            if batch.silences:
                self._store_silences(batch.silences, now)
            if batch.incidents:
                self._upsert_incidents(batch.incidents, now)
            if batch.actions:
                self._apply_actions(batch.actions, now)
            if batch.events:
                self._insert_events(batch.events, now)
            if batch.dead_letters:
                self._insert_dead_letters(batch.dead_letters, now)
            self.con.execute("COMMIT")
        except Exception:
            self.con.execute("ROLLBACK")
            self._reload_seq()
            raise

    def _reload_seq(self) -> None:
        row = self.con.execute("SELECT coalesce(max(seq), 0) FROM incident_history").fetchone()
        self._seq = int(row[0]) if row else 0

    def _current(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        cur = self.con.execute(f"SELECT {_STATE_COLS} FROM incidents WHERE list_contains(?, id)", [ids])  # noqa: S608
        names = [d[0] for d in cur.description or []]
        return {r[0]: dict(zip(names, r, strict=True)) for r in cur.fetchall()}

    def _history(self, rows: list[dict[str, Any]], t: Transition) -> None:
        self._seq += 1
        row = t.model_dump(exclude={"schema_version", "at"})
        rows.append({**row, "happened_at": t.at, "seq": self._seq, "published_at": None})

    def _upsert_incidents(self, incidents: list[Incident], now: datetime) -> None:
        latest: dict[str, Incident] = {}
        for inc in incidents:
            seen = latest.get(inc.id)
            if seen is None or inc.revision >= seen.revision:
                latest[inc.id] = inc
        current = self._current(list(latest))
        rows: list[dict[str, Any]] = []
        history: list[dict[str, Any]] = []
        evidence: list[dict[str, Any]] = []
        for inc in latest.values():
            prev = current.get(inc.id)
            if prev is not None and inc.revision <= int(prev["revision"]):
                continue  # a re-delivery or an older snapshot: nothing changes
            actor = f"rule:{inc.rule_id}"
            at = inc.resolved_at or inc.last_event_at
            if prev is None:
                status: Status = "open"
                self._history(
                    history,
                    Transition(
                        update_id=update_id(inc.id, "created"),
                        incident_id=inc.id,
                        kind="created",
                        from_status=None,
                        to_status="open",
                        actor=actor,
                        at=inc.first_event_at,
                        note=inc.title,
                        revision=inc.revision,
                        severity=inc.severity,
                    ),
                )
                prev_rule_status = "open"
            else:
                status = prev["status"]
                prev_rule_status = prev["rule_status"] or "open"
                escalated = SEVERITIES.index(inc.severity) > SEVERITIES.index(prev["severity"])
                kind = "escalated" if escalated else "updated"
                note = f"severity {prev['severity']} -> {inc.severity}" if escalated else f"revision {inc.revision}"
                self._history(
                    history,
                    Transition(
                        update_id=update_id(inc.id, kind, inc.revision),
                        incident_id=inc.id,
                        kind=kind,
                        from_status=status,
                        to_status=status,
                        actor=actor,
                        at=at,
                        note=note,
                        revision=inc.revision,
                        severity=inc.severity,
                    ),
                )
            new_status = status
            if inc.status == "resolved" and prev_rule_status != "resolved":
                new_status = rule_cleared(status)
            elif inc.status == "open" and prev_rule_status == "resolved":
                new_status = rule_fired_again(status)
            if new_status != status:
                note = "condition cleared" + (", awaiting operator" if new_status == "cleared" else "")
                self._history(
                    history,
                    Transition(
                        update_id=update_id(inc.id, "transition", inc.revision, new_status),
                        incident_id=inc.id,
                        kind="transition",
                        from_status=status,
                        to_status=new_status,
                        actor=actor,
                        at=at,
                        note=note,
                        revision=inc.revision,
                        severity=inc.severity,
                    ),
                )
            covering = silenced_by(inc, list(self.silences.values()))
            row = inc.model_dump(exclude={"evidence", "status", "details"})
            row.update(
                status=new_status,
                rule_status=inc.status,
                details=orjson.dumps(inc.details).decode(),
                evidence_count=inc.evidence.count,
                evidence=orjson.dumps(inc.evidence.model_dump()).decode(),
                silenced=bool(covering),
                silences=orjson.dumps(covering).decode(),
                assignee=prev["assignee"] if prev else None,
                opened_at=prev["opened_at"] if prev else now,
                acknowledged_at=prev["acknowledged_at"] if prev else None,
                closed_at=prev["closed_at"] if prev else None,
                status_changed_at=now if (prev is None or new_status != status) else prev["status_changed_at"],
                stored_at=now,
                updated_at=now,
            )
            rows.append(row)
            evidence.extend(
                {"incident_id": inc.id, "event_id": e, "value": v}
                for e, v in zip(inc.evidence.event_ids, inc.evidence.values, strict=False)
            )
        if rows:
            self._insert(
                "incidents",
                rows,
                "ON CONFLICT (id) DO UPDATE SET "
                + ", ".join(f"{c} = excluded.{c}" for c in rows[0] if c not in ("id", "stored_at")),
            )
        if history:
            self._insert("incident_history", history, "ON CONFLICT (update_id) DO NOTHING")
        if evidence:
            self._insert("evidence", evidence, "ON CONFLICT (incident_id, event_id) DO NOTHING")

    def _insert(self, table: str, rows: list[dict[str, Any]], conflict: str) -> None:
        name = f"_batch_{table}"
        self.con.register(name, pa.Table.from_pylist(rows))
        try:
            self.con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM {name} {conflict}")  # noqa: S608 - ours
        finally:
            self.con.unregister(name)

    def _apply_actions(self, actions: list[Action], now: datetime) -> None:
        done = {
            r[0]
            for r in self.con.execute(
                "SELECT action_id FROM actions WHERE list_contains(?, action_id)", [[a.action_id for a in actions]]
            ).fetchall()
        }
        for action in actions:
            if action.action_id in done:
                continue
            done.add(action.action_id)
            state = self._current([action.incident_id]).get(action.incident_id)
            outcome, reason = "applied", ""
            history: list[dict[str, Any]] = []
            actor = f"user:{action.actor}"
            if state is None:
                outcome, reason = "rejected", f"unknown incident {action.incident_id}"
            else:
                try:
                    new = apply_action(state["status"], action)
                except TransitionError as exc:
                    outcome, reason = "rejected", str(exc)
                else:
                    self._set_status(action, state, new, now)
                    kind = "comment" if action.action == "comment" else "transition"
                    note = action.note if action.action != "assign" else f"assigned to {action.assignee}. {action.note}"
                    self._history(
                        history,
                        Transition(
                            update_id=update_id(action.action_id),
                            incident_id=action.incident_id,
                            kind=kind,
                            from_status=state["status"],
                            to_status=new,
                            actor=actor,
                            at=action.at,
                            note=note.strip(),
                            revision=int(state["revision"]),
                            severity=state["severity"],
                        ),
                    )
            if outcome == "rejected":
                logger.warning(
                    "action rejected action_id=%s incident=%s reason=%s", action.action_id, action.incident_id, reason
                )
                if state is not None:
                    self._history(
                        history,
                        Transition(
                            update_id=update_id(action.action_id),
                            incident_id=action.incident_id,
                            kind="rejected",
                            from_status=state["status"],
                            to_status=state["status"],
                            actor=actor,
                            at=action.at,
                            note=reason,
                            revision=int(state["revision"]),
                            severity=state["severity"],
                        ),
                    )
            self.con.execute(
                "INSERT INTO actions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    action.action_id,
                    action.incident_id,
                    action.action,
                    action.actor,
                    action.at,
                    action.note,
                    action.assignee,
                    outcome,
                    reason,
                    now,
                ],
            )
            if history:
                self._insert("incident_history", history, "ON CONFLICT (update_id) DO NOTHING")

    def _set_status(self, action: Action, state: dict[str, Any], new: Status, now: datetime) -> None:
        assignee = action.assignee if action.action == "assign" else state["assignee"]
        acked = state["acknowledged_at"] or (action.at if action.action in ("ack", "assign") else None)
        closed = action.at if new == "closed" else (None if new == "open" else state["closed_at"])
        changed = now if new != state["status"] else state["status_changed_at"]
        self.con.execute(
            "UPDATE incidents SET status = ?, assignee = ?, acknowledged_at = ?, closed_at = ?, status_changed_at = ?, "
            "updated_at = ? WHERE id = ?",
            [new, assignee, acked, closed, changed, now, action.incident_id],
        )

    def _store_silences(self, silences: list[Silence], now: datetime) -> None:
        for s in silences:
            self.silences[s.silence_id] = s
            self.con.execute(
                "INSERT OR REPLACE INTO silences VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [s.silence_id, s.model_dump_json(), s.starts_at, s.ends_at, s.expired, s.created_by, s.reason, now],
            )

    def _insert_events(self, events: list[Enriched], now: datetime) -> None:
        rows = []
        seen: set[str] = set()
        for item in events:
            e = item.event
            if e.id in seen:
                continue
            seen.add(e.id)
            label = getattr(e, "metric", None) or getattr(e, "category", None) or getattr(e, "object_type", None)
            value = getattr(e, "value", None) if e.kind == "reading" else getattr(e, "alt_m", None)
            rows.append(
                {
                    "id": e.id,
                    "kind": e.kind,
                    "ts": e.ts,
                    "lon": e.lon,
                    "lat": e.lat,
                    "subject": e.subject,
                    "topic_label": label,
                    "value": value,
                    "zones": orjson.dumps(item.zones).decode(),
                    "payload": e.model_dump_json(),
                    "stored_at": now,
                }
            )
        self._insert("events", rows, "ON CONFLICT (id) DO NOTHING")

    def _insert_dead_letters(self, letters: list[DeadLetter], now: datetime) -> None:
        rows = {
            d.source: {
                "source": d.source,
                "kind": d.kind,
                "reason": d.reason,
                "original": d.original,
                "failed_at": d.failed_at,
                "stored_at": now,
            }
            for d in letters
        }
        self._insert("dead_letters", list(rows.values()), "ON CONFLICT (source) DO NOTHING")

    # -- outbox and housekeeping -------------------------------------------------------------
    def pending_updates(self, limit: int = 1000) -> list[Transition]:
        """History entries not yet published on the incident-updates topic, oldest first."""
        cur = self.con.execute(
            "SELECT update_id, incident_id, kind, from_status, to_status, actor, happened_at AS at, note, revision, "
            "severity FROM incident_history WHERE published_at IS NULL ORDER BY seq LIMIT ?",
            [limit],
        )
        names = [d[0] for d in cur.description or []]
        return [Transition.model_validate(dict(zip(names, r, strict=True))) for r in cur.fetchall()]

    def mark_published(self, update_ids: list[str]) -> None:
        self.con.execute(
            "UPDATE incident_history SET published_at = ? WHERE list_contains(?, update_id)",
            [datetime.now(UTC), update_ids],
        )

    def prune_events(self, retention_days: int) -> int:
        """Delete archived events stored longer ago than the retention.

        By storage time, not event time: a backfill of last year's readings stays available for
        backtests for the whole retention period.
        """
        cutoff = datetime.now(UTC) - timedelta(days=retention_days)
        row = self.con.execute("DELETE FROM events WHERE stored_at < ? RETURNING id", [cutoff]).fetchall()
        if row:
            logger.info("events pruned rows=%d before=%s", len(row), cutoff.isoformat())
        return len(row)

    def close(self) -> None:
        self.con.close()
