"""The single DuckDB store writer: migrations, idempotent batch upserts, and the Quack endpoint.

Only this class opens the DuckDB file read-write; every other process reads through Quack
(see ``sinks.read``). Each batch is applied in one transaction; re-applying a batch leaves the
store exactly as it was, so the Kafka offsets can be committed after the transaction.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pyarrow as pa

from rules.model import Enriched, Incident
from sinks.errors import SinkError
from sinks.quack import load_quack
from sinks.schema import MIGRATIONS

logger = logging.getLogger(__name__)

# Only statements that start like a read are served over Quack, and no write keyword may appear.
_READ_ONLY_MACRO = r"""
CREATE OR REPLACE MACRO cityops_read_only(sid, query) AS (
    regexp_matches(upper(trim(query)), '^(SELECT|FROM|WITH|DESCRIBE|SHOW|SUMMARIZE|EXPLAIN|PRAGMA TABLE_INFO)\b')
    AND NOT regexp_matches(upper(query),
        '\b(INSERT|UPDATE|DELETE|CREATE|DROP|ALTER|ATTACH|DETACH|COPY|EXPORT|IMPORT|INSTALL|LOAD|SET|RESET|CALL|CHECKPOINT|VACUUM|TRUNCATE|GRANT|MERGE)\b')
)
"""


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

    def __len__(self) -> int:
        return len(self.incidents) + len(self.events) + len(self.dead_letters)


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

    def apply(self, batch: Batch) -> None:
        """Apply a batch in one transaction, idempotently."""
        if not len(batch):
            return
        now = datetime.now(UTC)
        self.con.execute("BEGIN TRANSACTION")
        try:
            if batch.incidents:
                self._upsert_incidents(batch.incidents, now)
            if batch.events:
                self._insert_events(batch.events, now)
            if batch.dead_letters:
                self._insert_dead_letters(batch.dead_letters, now)
            self.con.execute("COMMIT")
        except Exception:
            self.con.execute("ROLLBACK")
            raise

    def _upsert_incidents(self, incidents: list[Incident], now: datetime) -> None:
        latest: dict[str, Incident] = {}
        for inc in incidents:
            prev = latest.get(inc.id)
            if prev is None or inc.revision >= prev.revision:
                latest[inc.id] = inc
        rows: list[dict[str, Any]] = []
        for inc in latest.values():
            row = inc.model_dump(exclude={"evidence"})
            row["evidence_count"] = inc.evidence.count
            row["evidence"] = orjson.dumps(inc.evidence.model_dump()).decode()
            row["stored_at"] = now
            row["updated_at"] = now
            rows.append(row)
        self.con.register("_batch_incidents", pa.Table.from_pylist(rows))
        cols = [c for c in rows[0] if c != "stored_at"]
        updates = ", ".join(f"{c} = excluded.{c}" for c in cols if c != "id")
        self.con.execute(
            f"INSERT INTO incidents BY NAME SELECT * FROM _batch_incidents "  # noqa: S608 - column names are ours
            f"ON CONFLICT (id) DO UPDATE SET {updates} WHERE excluded.revision >= incidents.revision"
        )
        self.con.unregister("_batch_incidents")

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
        self.con.register("_batch_events", pa.Table.from_pylist(rows))
        self.con.execute("INSERT INTO events BY NAME SELECT * FROM _batch_events ON CONFLICT (id) DO NOTHING")
        self.con.unregister("_batch_events")

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
        self.con.register("_batch_dead", pa.Table.from_pylist(list(rows.values())))
        self.con.execute("INSERT INTO dead_letters BY NAME SELECT * FROM _batch_dead ON CONFLICT (source) DO NOTHING")
        self.con.unregister("_batch_dead")

    def close(self) -> None:
        self.con.close()
