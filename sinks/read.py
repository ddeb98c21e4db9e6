"""The read side: every query other processes run against the store, through Quack (or, for a
store file no writer holds, on a local read-only connection: ``StoreReader.of_file``).

This is the single module that talks to the store for reading. Queries are fixed SQL with
``$name`` placeholders; values are rendered as literals by ``sinks.sql.bind`` (Quack has no
bind parameters for the remote SQL), and identifiers come only from allow-lists.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import duckdb
import orjson

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
QUEUE_COLUMNS = (
    "id, title, severity, status, rule_id, rule_version, subject, zone_id, zone_name, opened_at, acknowledged_at, "
    "assignee"
)
"""What a queue row shows (the detail reads the whole incident): few columns keep the top-N cheap."""
_SEVERITY_RANK = (
    "CASE severity WHEN 'critical' THEN 0 WHEN 'high' THEN 1 WHEN 'medium' THEN 2 WHEN 'low' THEN 3 ELSE 4 END"
)
QUEUE_SORTS = {
    "severity": f"{_SEVERITY_RANK}, opened_at ASC, first_event_at ASC",
    "age": "opened_at ASC, first_event_at ASC",
    "newest": "last_event_at DESC",
}
"""Sort orders of the incident queue (allow-listed SQL)."""
BUCKETS = {"minute": "'minute'", "hour": "'hour'", "day": "'day'"}
"""Time buckets of the analytics queries (allow-listed ``date_trunc`` parts)."""
GROUPS = {"category": "category", "zone": "coalesce(zone_id, '')", "severity": "severity", "rule": "rule_id"}
"""What incidents over time can be split by (allow-listed expressions)."""
_RESOLVED_AT = "CASE status WHEN 'closed' THEN closed_at WHEN 'resolved' THEN status_changed_at END"


@dataclass(frozen=True)
class IncidentFilter:
    """The incident filters of the dashboard; every value reaches the store as a bound literal.

    Empty tuples mean "any". ``since``/``until`` select incidents whose events overlap the range
    (last event at or after ``since``, first event before ``until``).
    """

    statuses: tuple[str, ...] = ()
    severities: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    zones: tuple[str, ...] = ()
    packs: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None

    def where(self) -> tuple[str, dict[str, Param]]:
        """The WHERE clause (fixed SQL with ``$f_*`` placeholders) and its parameters."""
        terms = ["TRUE"]
        params: dict[str, Param] = {}
        for name, column, values in (
            ("f_status", "status", self.statuses),
            ("f_sev", "severity", self.severities),
            ("f_cat", "category", self.categories),
            ("f_zone", "zone_id", self.zones),
            ("f_pack", "pack", self.packs),
        ):
            if values:
                terms.append(f"list_contains(${name}, {column})")
                params[name] = list(values)
        if self.since is not None:
            terms.append("last_event_at >= $f_since")
            params["f_since"] = self.since
        if self.until is not None:
            terms.append("first_event_at < $f_until")
            params["f_until"] = self.until
        return " AND ".join(terms), params


def _check_timezone(tz: str) -> str:
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise QueryError(f"unknown time zone {tz!r} (use an IANA name such as Asia/Shanghai)") from None
    return tz


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

    def __init__(self, uri: str, token: str, *, local: duckdb.DuckDBPyConnection | None = None) -> None:
        self.uri = uri
        self._token = token
        self._lock = threading.Lock()
        self._local = local is not None  # queries run on this connection, not through Quack
        if local is not None:
            self._con = local
        else:
            self._con = duckdb.connect()
            load_quack(self._con)

    @classmethod
    def of_file(cls, path: Path) -> StoreReader:
        """A reader of a store file that no writer holds (a copy, an archive): the same queries, run
        in this process on a read-only connection instead of through Quack.

        Raises:
            StoreUnavailableError: no such file, or a running ``cityops store`` holds it (DuckDB
                lets no other process open a file its writer has open, even read-only).
        """
        if not path.is_file():
            raise StoreUnavailableError(f"no store file at {path}")
        try:
            con = duckdb.connect(str(path), read_only=True)
        except duckdb.Error as exc:
            raise StoreUnavailableError(
                f"cannot open the store file {path} read-only ({exc}). A running `cityops store` holds "
                "its file: read it through Quack instead, or use a copy taken after the writer stopped."
            ) from exc
        return cls(f"file:{path}", "", local=con)

    def rows(self, sql: str, params: Mapping[str, Param] | None = None) -> list[dict[str, Any]]:
        """Run a read-only query on the store; rows as dicts."""
        remote = bind(sql, params or {})
        with self._lock:
            try:
                if self._local:
                    cur = self._con.execute(remote)
                else:
                    cur = self._con.execute(
                        "SELECT * FROM quack_query(?, ?, token => ?)", [self.uri, remote, self._token]
                    )
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
        self,
        since: datetime | None,
        until: datetime | None,
        *,
        page: int = 50_000,
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

    # -- the dashboard's queries ---------------------------------------------------------------
    # Each one is a single round trip, returns few rows (aggregates or a LIMIT), and stays within
    # tens of milliseconds over a million incidents (bench/dashboard.py measures them).
    def queue(
        self, flt: IncidentFilter, *, sort: str = "severity", limit: int = 200, offset: int = 0
    ) -> list[dict[str, Any]]:
        """One page of the incident queue, in an allow-listed order."""
        if sort not in QUEUE_SORTS:
            raise QueryError(f"unknown sort {sort!r}; expected one of {sorted(QUEUE_SORTS)}")
        where, params = flt.where()
        params.update(limit=max(1, min(int(limit), 5_000)), offset=max(0, int(offset)))
        return self.rows(
            f"SELECT {QUEUE_COLUMNS} FROM incidents WHERE {where} "  # noqa: S608 - allow-listed parts
            f"ORDER BY {QUEUE_SORTS[sort]}, id LIMIT $limit OFFSET $offset",
            params,
        )

    def count(self, flt: IncidentFilter) -> int:
        """How many incidents match the filter."""
        where, params = flt.where()
        return int(self.scalar(f"SELECT count(*) FROM incidents WHERE {where}", params) or 0)  # noqa: S608

    def points(self, flt: IncidentFilter, *, limit: int = 5_000) -> list[dict[str, Any]]:
        """The newest incidents matching the filter, with only what a map needs.

        The time comes as ``last_event_ms`` (epoch milliseconds): turning thousands of TIMESTAMPTZ
        values into Python datetimes costs more than the query itself.
        """
        where, params = flt.where()
        params["limit"] = max(1, min(int(limit), 50_000))
        return self.rows(
            "SELECT id, title, severity, zone_id, zone_name, epoch_ms(last_event_at) AS last_event_ms, lon, lat "  # noqa: S608
            f"FROM incidents WHERE {where} ORDER BY last_event_at DESC, id LIMIT $limit",
            params,
        )

    def grid(self, flt: IncidentFilter, *, step_deg: float) -> list[dict[str, Any]]:
        """Incidents matching the filter counted per square cell of ``step_deg`` degrees.

        Rows: ``gx``, ``gy`` (cell = round(lon / step), round(lat / step)), ``n`` and ``worst`` (0 =
        critical ... 4 = info). The dashboard bins the cells into H3 hexagons.
        """
        if not 0.0001 <= step_deg <= 1.0:
            raise QueryError(f"grid step {step_deg!r} is outside 0.0001..1 degrees")
        where, params = flt.where()
        params["step"] = float(step_deg)
        return self.rows(
            "SELECT CAST(round(lon / $step) AS BIGINT) AS gx, CAST(round(lat / $step) AS BIGINT) AS gy, "  # noqa: S608
            f"count(*) AS n, min({_SEVERITY_RANK}) AS worst FROM incidents WHERE {where} GROUP BY ALL",
            params,
        )

    def zone_counts(self, flt: IncidentFilter) -> dict[str, int]:
        """Incidents matching the filter per zone id."""
        where, params = flt.where()
        rows = self.rows(
            f"SELECT zone_id, count(*) AS n FROM incidents WHERE {where} AND zone_id IS NOT NULL "  # noqa: S608
            "GROUP BY zone_id",
            params,
        )
        return {str(r["zone_id"]): int(r["n"]) for r in rows}

    def distinct(self, column: str) -> list[str]:
        """Distinct values of an allow-listed incident column (category, pack, rule_id, severity)."""
        allowed = {"category", "pack", "rule_id", "severity"}
        if column not in allowed:
            raise QueryError(f"unknown column {column!r}; expected one of {sorted(allowed)}")
        return [str(r["v"]) for r in self.rows(f"SELECT DISTINCT {column} AS v FROM incidents ORDER BY 1")]  # noqa: S608

    def blind_zones(self) -> list[dict[str, Any]]:
        """Zones a silence rule finds blind now (its zone incident open): which rules rely on them.

        ``rules`` are the pack's rules that take the events the silence rule watches (the blind
        incident's ``details.rules``): in these zones they cannot report "all clear".
        """
        found = self.rows(
            "SELECT zone_id, zone_name, layer, rule_id, window_start AS blind_since, "
            "CAST(details->>'silent' AS INTEGER) AS silent, CAST(details->>'known' AS INTEGER) AS known, "
            "CAST(details->'rules' AS VARCHAR) AS rules FROM incidents "
            "WHERE kind = 'silence' AND subject LIKE 'zone:%' AND rule_status = 'open' ORDER BY zone_id, rule_id"
        )
        for row in found:
            row["rules"] = orjson.loads(row["rules"]) if row["rules"] else []
        return found

    def sensors(self, since: datetime, *, limit: int = 5_000) -> list[dict[str, Any]]:
        """Fixed sensors seen since ``since``: last position, metric, last event time and readings."""
        return self.rows(
            "SELECT subject, any_value(topic_label) AS metric, arg_max(lon, ts) AS lon, arg_max(lat, ts) AS lat, "
            "max(ts) AS last_seen, count(*) AS readings FROM events WHERE kind = 'reading' AND ts >= $since "
            "GROUP BY subject ORDER BY subject LIMIT $limit",
            {"since": since, "limit": max(1, min(int(limit), 50_000))},
        )

    def tracks(self, since: datetime, active_since: datetime, *, limit: int = 200) -> list[dict[str, Any]]:
        """Moving objects with a fix since ``active_since``: their path since ``since``, oldest first."""
        return self.rows(
            "WITH recent AS (SELECT subject, topic_label, ts, lon, lat, value FROM events "
            "WHERE kind = 'track' AND ts >= $since), "
            "active AS (SELECT subject FROM recent GROUP BY subject HAVING max(ts) >= $active "
            "ORDER BY max(ts) DESC LIMIT $limit) "
            "SELECT r.subject, any_value(r.topic_label) AS object_type, "
            "list([r.lon, r.lat] ORDER BY r.ts) AS path, max(r.ts) AS last_seen, arg_max(r.value, r.ts) AS alt_m "
            "FROM recent r JOIN active a ON a.subject = r.subject GROUP BY r.subject ORDER BY r.subject",
            {"since": since, "active": active_since, "limit": max(1, min(int(limit), 5_000))},
        )

    def over_time(self, since: datetime, until: datetime, *, bucket: str, by: str, tz: str) -> list[dict[str, Any]]:
        """Incidents per time bucket (city-local, by first event) and per category, zone, ..."""
        if bucket not in BUCKETS or by not in GROUPS:
            raise QueryError(f"unknown bucket {bucket!r} or grouping {by!r}")
        return self.rows(
            f"SELECT date_trunc({BUCKETS[bucket]}, first_event_at AT TIME ZONE $tz) AS bucket, "  # noqa: S608
            f"{GROUPS[by]} AS key, count(*) AS n FROM incidents "
            "WHERE first_event_at >= $since AND first_event_at < $until GROUP BY ALL ORDER BY 1, 2",
            {"since": since, "until": until, "tz": _check_timezone(tz)},
        )

    def response_times(self, since: datetime, until: datetime) -> list[dict[str, Any]]:
        """MTTA and MTTR (mean and median, seconds) per category, plus a total row (category NULL).

        Opened = ``opened_at``; acknowledged = ``acknowledged_at`` (first ack or assign); resolved =
        ``closed_at`` for closed incidents and ``status_changed_at`` for resolved ones.
        """
        # greatest() would turn a missing time (NULL) into 0: clamp clock skew with CASE instead.
        ack = "CASE WHEN acknowledged_at < opened_at THEN 0 ELSE epoch(acknowledged_at - opened_at) END"
        res = f"CASE WHEN ({_RESOLVED_AT}) < opened_at THEN 0 ELSE epoch(({_RESOLVED_AT}) - opened_at) END"
        return self.rows(
            "SELECT category, count(*) AS incidents, count(acknowledged_at) AS acknowledged, "  # noqa: S608
            f"avg({ack}) AS mtta_s, median({ack}) AS mtta_p50_s, count({_RESOLVED_AT}) AS resolved, "
            f"avg({res}) AS mttr_s, median({res}) AS mttr_p50_s FROM incidents "
            "WHERE opened_at >= $since AND opened_at < $until "
            "GROUP BY ROLLUP (category) ORDER BY category NULLS LAST",
            {"since": since, "until": until},
        )

    def top_locations(self, since: datetime, until: datetime, *, limit: int = 15) -> list[dict[str, Any]]:
        """Places (about 100 m cells) with the most incidents, and what happens there most."""
        return self.rows(
            "SELECT round(lon, 3) AS lon, round(lat, 3) AS lat, count(*) AS n, mode(category) AS category, "
            "mode(zone_id) AS zone_id, any_value(zone_name) AS zone_name, count(DISTINCT rule_id) AS rules, "
            "max(last_event_at) AS last_at FROM incidents WHERE first_event_at >= $since AND first_event_at < $until "
            "GROUP BY 1, 2 ORDER BY n DESC, 1, 2 LIMIT $limit",
            {"since": since, "until": until, "limit": max(1, min(int(limit), 500))},
        )

    def intake(self, since: datetime, *, bucket: str = "minute") -> list[dict[str, Any]]:
        """Events stored and records dead-lettered per bucket since ``since`` (by store time)."""
        if bucket not in BUCKETS:
            raise QueryError(f"unknown bucket {bucket!r}")
        trunc = BUCKETS[bucket]
        return self.rows(
            f"SELECT date_trunc({trunc}, stored_at) AS bucket, 'events' AS what, count(*) AS n FROM events "  # noqa: S608
            "WHERE stored_at >= $since GROUP BY 1 UNION ALL "
            f"SELECT date_trunc({trunc}, stored_at), 'dead_letters', count(*) FROM dead_letters "
            "WHERE stored_at >= $since GROUP BY 1 ORDER BY 1, 2",
            {"since": since},
        )

    def rule_hits(self, since: datetime | None) -> list[dict[str, Any]]:
        """Per rule: incidents (since ``since``), how many are active, newest version seen, last hit."""
        return self.rows(
            "SELECT rule_id, max(rule_version) AS rule_version, count(*) AS hits, "
            "count(*) FILTER (WHERE list_contains($active, status)) AS active, max(last_event_at) AS last_hit "
            "FROM incidents WHERE $since IS NULL OR last_event_at >= $since GROUP BY rule_id ORDER BY rule_id",
            {"since": since, "active": sorted(ACTIVE)},
        )

    def pack_versions(self) -> list[dict[str, Any]]:
        """Pack versions seen on stored incidents, newest first."""
        return self.rows(
            "SELECT pack, pack_version, count(*) AS incidents, min(first_event_at) AS first_seen, "
            "max(last_event_at) AS last_seen FROM incidents GROUP BY ALL ORDER BY last_seen DESC LIMIT 50"
        )

    def health(self) -> dict[str, Any]:
        """What the store knows about the pipeline: schema, newest records, the updates outbox."""
        return self.rows(  # the history (the largest table) is scanned once
            "WITH h AS (SELECT count(*) FILTER (WHERE published_at IS NULL) AS updates_pending, "
            "min(happened_at) FILTER (WHERE published_at IS NULL) AS oldest_pending, "
            "count(published_at) AS updates_published, max(published_at) AS last_published FROM incident_history) "
            "SELECT (SELECT max(version) FROM schema_migrations) AS schema_version, "
            "(SELECT max(stored_at) FROM events) AS last_event_stored, "
            "(SELECT max(ts) FROM events) AS last_event_time, "
            "(SELECT max(updated_at) FROM incidents) AS last_incident_update, "
            "(SELECT max(stored_at) FROM actions) AS last_action, "
            "(SELECT max(stored_at) FROM dead_letters) AS last_dead_letter, h.* FROM h"
        )[0]

    def dead_letter_kinds(self) -> list[dict[str, Any]]:
        """Dead letters per kind, with the newest failure time."""
        return self.rows(
            "SELECT kind, count(*) AS n, max(failed_at) AS last_failed FROM dead_letters GROUP BY kind ORDER BY n DESC"
        )

    def event_count(self, since: datetime, until: datetime) -> int:
        """Archived events with event time in ``[since, until)`` (what a backtest would replay)."""
        sql = "SELECT count(*) FROM events WHERE ts >= $since AND ts < $until"
        return int(self.scalar(sql, {"since": since, "until": until}) or 0)
