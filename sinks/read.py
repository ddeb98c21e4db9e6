"""The read side: every query other processes run against the store, through Quack.

This is the single module that talks to the store for reading. Queries are fixed SQL with
``$name`` placeholders; values are rendered as literals by ``sinks.sql.bind`` (Quack has no
bind parameters for the remote SQL), and identifiers come only from allow-lists.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

import duckdb

from rules.lifecycle import ACTIVE
from sinks.errors import QueryError, StoreUnavailableError
from sinks.quack import load_quack
from sinks.sql import Param, bind

logger = logging.getLogger(__name__)

SEVERITIES = ("critical", "high", "medium", "low", "info")
SORTS = {
    "newest": "last_event_at DESC",
    "oldest": "first_event_at ASC",
    "severity": "CASE severity WHEN 'critical' THEN 0 WHEN 'high' THEN 1 WHEN 'medium' THEN 2 "
    "WHEN 'low' THEN 3 ELSE 4 END, last_event_at DESC",
}
INCIDENT_COLUMNS = (
    "id, revision, rule_id, rule_version, pack, pack_version, kind, title, severity, category, status, "
    "subject, zone_id, zone_name, window_start, window_end, first_event_at, last_event_at, lon, lat, value, "
    "threshold, op, evidence_count, evidence"
)

POINT_COLUMNS = "id, title, severity, category, zone_id, zone_name, last_event_at, lon, lat"


def _incident_filters(
    severities: Sequence[str], categories: Sequence[str], zones: Sequence[str], since: datetime | None
) -> tuple[list[str], dict[str, Param]]:
    """WHERE terms (fixed SQL) and their parameters for the common incident filters."""
    where = ["TRUE"]
    params: dict[str, Param] = {}
    if severities:
        where.append("list_contains($sev, severity)")
        params["sev"] = list(severities)
    if categories:
        where.append("list_contains($cat, category)")
        params["cat"] = list(categories)
    if zones:
        where.append("list_contains($zones, zone_id)")
        params["zones"] = list(zones)
    if since is not None:
        where.append("last_event_at >= $since")
        params["since"] = since
    return where, params


class StoreReader:
    """A Quack client for the store. Thread-safe; reconnects by itself when the writer restarts."""

    def __init__(self, uri: str, token: str) -> None:
        self.uri = uri
        self._token = token
        self._lock = threading.Lock()
        self._con = duckdb.connect()
        load_quack(self._con)

    def rows(self, sql: str, params: Mapping[str, Param] | None = None) -> list[dict[str, Any]]:
        """Run a read-only query on the store; rows as dicts."""
        remote = bind(sql, params or {})
        with self._lock:
            try:
                cur = self._con.execute("SELECT * FROM quack_query(?, ?, token => ?)", [self.uri, remote, self._token])
                names = [d[0] for d in cur.description or []]
                return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
            except duckdb.IOException as exc:
                raise StoreUnavailableError(
                    f"the store at {self.uri} is unreachable ({exc}). Start it with `cityops store`."
                ) from exc
            except duckdb.Error as exc:
                raise QueryError(f"query failed on {self.uri}: {exc}") from exc

    def scalar(self, sql: str, params: Mapping[str, Param] | None = None) -> Any:
        rows = self.rows(sql, params)
        return next(iter(rows[0].values())) if rows else None

    # -- named queries -------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        """Headline counts: events stored, incidents (all and open), dead letters."""
        row = self.rows(
            "SELECT (SELECT count(*) FROM events) AS events, (SELECT count(*) FROM incidents) AS incidents, "
            "(SELECT count(*) FROM incidents WHERE status IN ('open', 'acknowledged', 'in_progress', 'cleared')) "
            "AS open_incidents, "
            "(SELECT count(*) FROM dead_letters) AS dead_letters"
        )[0]
        return {k: int(v) for k, v in row.items()}

    def incidents(
        self,
        *,
        severities: Sequence[str] = (),
        categories: Sequence[str] = (),
        zones: Sequence[str] = (),
        since: datetime | None = None,
        sort: str = "newest",
        limit: int = 500,
    ) -> list[dict[str, Any]]:
        """Incidents matching the filters (all values are bound as literals)."""
        if sort not in SORTS:
            raise QueryError(f"unknown sort {sort!r}; expected one of {sorted(SORTS)}")
        where, params = _incident_filters(severities, categories, zones, since)
        params["limit"] = max(1, min(int(limit), 50_000))
        sql = (
            f"SELECT {INCIDENT_COLUMNS} FROM incidents WHERE {' AND '.join(where)} "  # noqa: S608 - allow-listed
            f"ORDER BY {SORTS[sort]}, id LIMIT $limit"
        )
        return self.rows(sql, params)

    def incident_points(
        self,
        *,
        severities: Sequence[str] = (),
        categories: Sequence[str] = (),
        zones: Sequence[str] = (),
        limit: int = 5_000,
    ) -> list[dict[str, Any]]:
        """The newest active incidents (open, acknowledged, in progress, cleared: the ``open_incidents``
        of ``counts()``), only the columns a map needs, at most ``limit`` of them (capped at 50,000)."""
        where, params = _incident_filters(severities, categories, zones, None)
        where.append("list_contains($active, status)")
        params["active"] = sorted(ACTIVE)
        params["limit"] = max(1, min(int(limit), 50_000))
        sql = (
            f"SELECT {POINT_COLUMNS} FROM incidents WHERE {' AND '.join(where)} "  # noqa: S608 - allow-listed
            "ORDER BY last_event_at DESC, id LIMIT $limit"
        )
        return self.rows(sql, params)

    def incidents_by_zone(self) -> dict[str, int]:
        """Open-incident count per zone id."""
        rows = self.rows(
            "SELECT zone_id, count(*) AS n FROM incidents "
            "WHERE status IN ('open', 'acknowledged', 'in_progress', 'cleared') AND zone_id IS NOT NULL "
            "GROUP BY zone_id"
        )
        return {str(r["zone_id"]): int(r["n"]) for r in rows}

    def categories(self) -> list[str]:
        return [str(r["category"]) for r in self.rows("SELECT DISTINCT category FROM incidents ORDER BY 1")]

    def dead_letters(self, limit: int = 100) -> list[dict[str, Any]]:
        return self.rows(
            "SELECT source, kind, reason, failed_at FROM dead_letters ORDER BY failed_at DESC, source LIMIT $n",
            {"n": int(limit)},
        )

    def ping(self) -> bool:
        """True when the store answers."""
        try:
            return bool(self.scalar("SELECT 1") == 1)
        except (StoreUnavailableError, QueryError):
            return False

    # -- one incident, its history and actions (lifecycle) --------------------------------------
    def incident(self, incident_id: str) -> dict[str, Any] | None:
        """One incident with its lifecycle columns, or None."""
        rows = self.rows("SELECT * EXCLUDE (evidence), evidence FROM incidents WHERE id = $id", {"id": incident_id})
        return rows[0] if rows else None

    def history(self, incident_id: str) -> list[dict[str, Any]]:
        """The audit trail of an incident, oldest first."""
        return self.rows(
            "SELECT update_id, kind, from_status, to_status, actor, happened_at, note, revision, severity "
            "FROM incident_history WHERE incident_id = $id ORDER BY seq",
            {"id": incident_id},
        )

    def evidence_events(self, incident_id: str, limit: int = 50) -> list[dict[str, Any]]:
        """The archived events that contributed to an incident (as far as the archive keeps them)."""
        return self.rows(
            "SELECT e.id, e.kind, e.ts, e.subject, e.topic_label, e.value, e.lon, e.lat FROM evidence v "
            "JOIN events e ON e.id = v.event_id WHERE v.incident_id = $id ORDER BY e.ts, e.id LIMIT $n",
            {"id": incident_id, "n": int(limit)},
        )

    def action(self, action_id: str) -> dict[str, Any] | None:
        """How the store handled one operator action (outcome applied/rejected and reason), or None."""
        rows = self.rows("SELECT * FROM actions WHERE action_id = $id", {"id": action_id})
        return rows[0] if rows else None

    def silences(self, *, active_only: bool = False) -> list[dict[str, Any]]:
        """Silences, newest first; with counts of the incidents each one covers."""
        return self.rows(
            "SELECT s.silence_id, s.starts_at, s.ends_at, s.expired, s.created_by, s.reason, s.payload, "
            "(SELECT count(*) FROM incidents i WHERE list_contains(CAST(i.silences AS VARCHAR[]), s.silence_id)) "
            "AS incidents FROM silences s WHERE NOT $active OR (NOT s.expired AND s.ends_at > now()) "
            "ORDER BY s.starts_at DESC",
            {"active": active_only},
        )

    def event_payloads(
        self, since: datetime | None, until: datetime | None, *, page: int = 50_000,
        progress: Callable[[int], None] | None = None,
    ) -> Iterator[bytes]:
        """Archived events (their JSON) in event-time order, paged by (ts, id) keyset."""
        after_ts: datetime | None = None
        after_id = ""
        total = 0
        while True:
            rows = self.rows(
                "SELECT ts, id, payload FROM events WHERE ($since IS NULL OR ts >= $since) "
                "AND ($until IS NULL OR ts < $until) AND ($after_ts IS NULL OR (ts, id) > ($after_ts, $after_id)) "
                "ORDER BY ts, id LIMIT $page",
                {"since": since, "until": until, "after_ts": after_ts, "after_id": after_id, "page": page},
            )
            for row in rows:
                yield str(row["payload"]).encode()
            total += len(rows)
            if progress is not None and rows:
                progress(total)
            if len(rows) < page:
                return
            after_ts, after_id = rows[-1]["ts"], rows[-1]["id"]

