"""Benchmark: the dashboard over a store with a million incidents.

Fills a store (the real schema, through ``sinks.store.Store``'s migrations) with ``--incidents``
synthetic incidents over 30 days (a few percent still active), their history and evidence,
``--events`` archived events over the last day and some dead letters, with one DuckDB ``INSERT ...
SELECT`` per table. Serves it over Quack like the store writer, then measures:

- every read-side query the pages run (``sinks.read.StoreReader``), ``--runs`` times each: p50/p95/max;
- each page's first render (AppTest, a fresh session with Streamlit's data cache cleared): server-side
  script time, without the browser;
- a filter change on the queue and on the map (the new filter is not cached).

Run: ``.venv/bin/python bench/dashboard.py`` (about two minutes). Prints JSON. Targets: queries
p95 <= 50 ms, first render <= 2 s, filter change <= 1 s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import streamlit as st  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

from dashboard import data, maps  # noqa: E402
from rules.lifecycle import ACTIVE  # noqa: E402
from rules.pack import load_pack  # noqa: E402
from sinks.read import IncidentFilter, StoreReader  # noqa: E402
from sinks.store import Store  # noqa: E402
from streams.broker import free_port  # noqa: E402
from streams.settings import default_pack, get_settings  # noqa: E402

TOKEN = "bench-token-1234"
APP = REPO / "dashboard" / "app.py"
PAGES = ("pages/map.py", "pages/queue.py", "pages/analytics.py", "pages/rules.py", "pages/system.py")


def fill(store: Store, incidents: int, events: int, now: datetime) -> dict[str, float]:
    """Synthetic incidents (30 days, time-ordered), history, evidence, events (1 day), dead letters."""
    con = store.con
    pack = load_pack(default_pack())
    districts = pack.layers["districts"]
    import shapely

    reps = shapely.point_on_surface(districts.geoms)
    con.execute("CREATE TEMP TABLE zones (z INTEGER, zone_id VARCHAR, zone_name VARCHAR, lon DOUBLE, lat DOUBLE)")
    con.executemany(
        "INSERT INTO zones VALUES (?, ?, ?, ?, ?)",
        [
            (i, zid, name, p.x, p.y)
            for i, (zid, name, p) in enumerate(zip(districts.ids, districts.names, reps, strict=True))
        ],
    )
    con.execute("CREATE TEMP TABLE rules_t (r INTEGER, rule_id VARCHAR, kind VARCHAR, title VARCHAR, category VARCHAR, "
                "severity VARCHAR)")  # fmt: skip
    con.executemany(
        "INSERT INTO rules_t VALUES (?, ?, ?, ?, ?, ?)",
        [(i, r.id, r.kind, r.title, r.category, r.severity) for i, r in enumerate(pack.spec.rules)],
    )
    nz, nr = len(districts.ids), len(pack.spec.rules)
    timings: dict[str, float] = {}
    began = time.perf_counter()
    con.execute("SELECT setseed(0.42)")
    con.execute(
        f"""
        CREATE TEMP TABLE gen AS
        SELECT i, $now::TIMESTAMPTZ - INTERVAL 30 DAY + (i * 2592.0 / $n) * INTERVAL 1000 MILLISECOND AS t0,
               random() AS u1, random() AS u2, random() AS u3, random() AS u4, random() AS u5,
               CAST(floor(random() * {nz}) AS INTEGER) AS z, CAST(floor(random() * {nr}) AS INTEGER) AS r
        FROM range($n) t(i)
        """,  # noqa: S608 - numbers we computed
        {"now": now, "n": incidents},
    )
    con.execute(
        """
        INSERT INTO incidents BY NAME
        SELECT 'b' || lpad(CAST(g.i AS VARCHAR), 8, '0') AS id, 1 AS revision, '1.0' AS schema_version,
               'wuhan' AS pack, $version AS pack_version, rt.rule_id, 1 AS rule_version, rt.kind, rt.title,
               CASE WHEN g.u5 < 0.03 THEN 'critical' WHEN g.u5 < 0.2 THEN 'high' WHEN g.u5 < 0.55 THEN 'medium'
                    WHEN g.u5 < 0.85 THEN 'low' ELSE 'info' END AS severity,
               rt.category, s.status, 'sub-' || CAST(g.i % 5000 AS VARCHAR) AS subject, 'districts' AS layer,
               zo.zone_id, zo.zone_name, g.t0 AS window_start, g.t0 + INTERVAL 15 MINUTE AS window_end,
               g.t0 AS first_event_at, g.t0 + g.u2 * INTERVAL 20 MINUTE AS last_event_at,
               zo.lon + (g.u3 - 0.5) * 0.06 AS lon, zo.lat + (g.u4 - 0.5) * 0.05 AS lat,
               40 + g.u2 * 30 AS value, 30 AS threshold, '>' AS op, 1 AS evidence_count,
               '{"event_ids":["e1"],"values":[41.0],"count":1}' AS evidence, g.t0 AS stored_at, g.t0 AS updated_at,
               CASE WHEN s.status IN ('resolved', 'closed') THEN 'resolved' ELSE 'open' END AS rule_status,
               'likely' AS certainty, '{}' AS details, false AS silenced, '[]' AS silences,
               g.t0 + INTERVAL 5 SECOND AS opened_at,
               CASE WHEN s.status <> 'open' THEN g.t0 + INTERVAL 5 SECOND + g.u2 * INTERVAL 30 MINUTE END
                   AS acknowledged_at,
               CASE WHEN s.status = 'closed' THEN g.t0 + INTERVAL 1 HOUR + g.u3 * INTERVAL 3 HOUR END AS closed_at,
               g.t0 + INTERVAL 1 HOUR AS status_changed_at
        FROM gen g
        JOIN zones zo ON zo.z = g.z
        JOIN rules_t rt ON rt.r = g.r
        CROSS JOIN LATERAL (SELECT CASE
            WHEN g.t0 < $now::TIMESTAMPTZ - INTERVAL 1 DAY THEN
                CASE WHEN g.u1 < 0.93 THEN 'closed' WHEN g.u1 < 0.99 THEN 'resolved' ELSE 'acknowledged' END
            ELSE CASE WHEN g.u1 < 0.4 THEN 'open' WHEN g.u1 < 0.6 THEN 'acknowledged' WHEN g.u1 < 0.7 THEN 'in_progress'
                      WHEN g.u1 < 0.9 THEN 'resolved' ELSE 'closed' END END AS status) s
        ORDER BY g.i
        """,
        {"now": now, "version": pack.version},
    )
    timings["incidents_s"] = time.perf_counter() - began
    began = time.perf_counter()
    con.execute(
        """
        INSERT INTO incident_history
        SELECT 'h' || id, id, 'created', NULL, 'open', 'rule:' || rule_id, first_event_at, title, 1, severity,
               row_number() OVER (), opened_at FROM incidents
        UNION ALL
        SELECT 'a' || id, id, 'transition', 'open', 'acknowledged', 'user:bench', acknowledged_at, '', 1, severity,
               1000000000 + row_number() OVER (), acknowledged_at FROM incidents WHERE acknowledged_at IS NOT NULL
        """
    )
    con.execute(
        "INSERT INTO evidence SELECT id, 'e' || CAST(hash(id) % $events AS VARCHAR), value FROM incidents",
        {"events": max(events, 1)},
    )
    timings["history_evidence_s"] = time.perf_counter() - began
    began = time.perf_counter()
    con.execute(
        """
        INSERT INTO events
        SELECT 'e' || CAST(i AS VARCHAR) AS id,
               CASE WHEN i % 20 = 0 THEN 'track' WHEN i % 20 = 1 THEN 'report' ELSE 'reading' END AS kind,
               $now::TIMESTAMPTZ - INTERVAL 1 DAY + (i * 86.4 / $n) * INTERVAL 1000 MILLISECOND AS ts,
               CASE WHEN i % 20 = 0 THEN 114.2 + (i % 997) * 0.0003 ELSE 114.1 + (hash(i % 600) % 1000) * 0.0005 END,
               CASE WHEN i % 20 = 0 THEN 30.5 + (i % 991) * 0.0002 ELSE 30.4 + (hash(i % 600 + 7) % 1000) * 0.0004 END,
               CASE WHEN i % 20 = 0 THEN 'uav-' || CAST(i % 20 AS VARCHAR) || CAST((i / 20) % 20 AS VARCHAR)
                    WHEN i % 20 = 1 THEN 'r' || CAST(i AS VARCHAR) ELSE 'wl-' || CAST(i % 600 AS VARCHAR) END,
               CASE WHEN i % 20 = 0 THEN 'drone' WHEN i % 20 = 1 THEN 'noise' ELSE 'water_level_cm' END,
               10 + (i % 17), '{}', '{"kind":"reading"}',
               $now::TIMESTAMPTZ - INTERVAL 1 DAY + (i * 86.4 / $n) * INTERVAL 1000 MILLISECOND AS stored_at
        FROM range($n) t(i)
        """,
        {"now": now, "n": events},
    )
    con.execute(
        "INSERT INTO dead_letters SELECT 'raw[0]@' || CAST(i AS VARCHAR), CASE WHEN i % 3 = 0 THEN 'bad_json' "
        "ELSE 'invalid' END, 'bench reason', 'x'::BLOB, $now::TIMESTAMPTZ - i * INTERVAL 1 MINUTE, "
        "$now::TIMESTAMPTZ - i * INTERVAL 1 MINUTE FROM range(2000) t(i)",
        {"now": now},
    )
    timings["events_s"] = time.perf_counter() - began
    began = time.perf_counter()
    con.execute("CHECKPOINT")
    timings["checkpoint_s"] = time.perf_counter() - began
    return timings


def stats(samples_ms: list[float]) -> dict[str, float]:
    ordered = sorted(samples_ms)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"p50_ms": round(statistics.median(ordered), 1), "p95_ms": round(p95, 1), "max_ms": round(ordered[-1], 1)}


def time_queries(reader: StoreReader, now: datetime, runs: int) -> dict[str, dict[str, float]]:
    """Every query the pages run, with the parameters they use (cache off: straight to the store)."""
    active = IncidentFilter(statuses=tuple(sorted(ACTIVE)))
    week, day, hour = now - timedelta(days=7), now - timedelta(days=1), now - timedelta(hours=1)
    one = str(reader.scalar("SELECT id FROM incidents WHERE status = 'open' ORDER BY id DESC LIMIT 1"))
    queries: dict[str, Callable[[], Any]] = {
        "counts": reader.counts,
        "map.count_active": lambda: reader.count(active),
        "map.zone_counts": lambda: reader.zone_counts(active),
        "map.points": lambda: reader.points(active, limit=data.MAP_POINT_LIMIT),
        "map.grid_h3": lambda: maps.hexagons(reader.grid(active, step_deg=maps.GRID_STEP_DEG)),
        "map.sensors_24h": lambda: reader.sensors(day),
        "map.tracks": lambda: reader.tracks(now - timedelta(minutes=12), now - timedelta(minutes=2)),
        "queue.page_by_severity": lambda: reader.queue(active, sort="severity", limit=200),
        "queue.count": lambda: reader.count(active),
        "queue.filtered_high_flood_7d": lambda: reader.queue(
            IncidentFilter(statuses=tuple(sorted(ACTIVE)), severities=("high",), categories=("flood",), since=week),
            sort="age",
        ),
        "queue.all_newest": lambda: reader.queue(IncidentFilter(), sort="newest", limit=200),
        "queue.categories": lambda: reader.distinct("category"),
        "queue.packs": lambda: reader.distinct("pack"),
        "detail.incident": lambda: reader.incident(one),
        "detail.history": lambda: reader.history(one),
        "detail.evidence_events": lambda: reader.evidence_events(one),
        "analytics.over_time_category_7d": lambda: reader.over_time(week, now, bucket="day", by="category",
                                                                    tz="Asia/Shanghai"),
        "analytics.over_time_zone_7d": lambda: reader.over_time(week, now, bucket="day", by="zone", tz="Asia/Shanghai"),
        "analytics.response_times_7d": lambda: reader.response_times(week, now),
        "analytics.top_locations_7d": lambda: reader.top_locations(week, now),
        "analytics.intake_1h": lambda: reader.intake(hour),
        "rules.hits_7d": lambda: reader.rule_hits(week),
        "rules.pack_versions": reader.pack_versions,
        "system.health": reader.health,
        "system.dead_letter_kinds": reader.dead_letter_kinds,
        "system.dead_letters": lambda: reader.dead_letters(100),
        "system.silences": reader.silences,
        "rules.backtest_event_count_1d": lambda: reader.event_count(day, now),
    }  # fmt: skip
    out = {}
    for name, call in queries.items():
        for _ in range(2):
            call()
        samples = []
        for _ in range(runs):
            began = time.perf_counter()
            call()
            samples.append((time.perf_counter() - began) * 1000)
        out[name] = stats(samples)
    return out


def time_pages(runs: int) -> dict[str, Any]:
    """First render of each page (fresh session, empty data cache) and filter changes, server-side."""
    began = time.perf_counter()
    AppTest.from_file(str(APP), default_timeout=120).run()
    out: dict[str, Any] = {"first_run_in_process_s": round(time.perf_counter() - began, 2)}
    for page in PAGES:
        samples = []
        for _ in range(runs):
            at = AppTest.from_file(str(APP), default_timeout=120)
            if page != PAGES[0]:
                at.run()
                at.switch_page(page)
            st.cache_data.clear()
            began = time.perf_counter()
            at.run()
            samples.append((time.perf_counter() - began) * 1000)
            assert not at.exception, [e.value for e in at.exception]
        out[f"first_render.{page}"] = stats(samples)
    for page, key, values in (
        ("pages/queue.py", "queue_severity.zh-CN", (["high"], ["critical"], ["medium"], ["low"], ["info"])),
        ("pages/map.py", "map_severity.zh-CN", (["high"], ["critical"], ["medium"], ["low"], ["info"])),
    ):
        at = AppTest.from_file(str(APP), default_timeout=120).run()
        at.switch_page(page).run()
        samples = []
        for value in values[:runs] if runs < len(values) else values:
            at.multiselect(key=key).set_value(value)
            began = time.perf_counter()
            at.run()
            samples.append((time.perf_counter() - began) * 1000)
            assert not at.exception, [e.value for e in at.exception]
        out[f"filter_change.{page}"] = stats(samples)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--incidents", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument("--runs", type=int, default=30, help="Runs per query.")
    parser.add_argument("--page-runs", type=int, default=5, help="Runs per page render.")
    args = parser.parse_args()
    now = datetime.now(UTC)
    with tempfile.TemporaryDirectory(prefix="cityops-bench-dash-") as tmp:
        store = Store(Path(tmp) / "bench.duckdb")
        fill_times = fill(store, args.incidents, args.events, now)
        port = free_port()
        uri = store.serve("127.0.0.1", port, TOKEN)
        reader = StoreReader(uri, TOKEN)
        active = reader.count(IncidentFilter(statuses=tuple(sorted(ACTIVE))))
        queries = time_queries(reader, now, args.runs)
        for name in [k for k in os.environ if k.startswith("CITYOPS_")]:
            del os.environ[name]
        os.environ.update(
            CITYOPS_STORE__QUACK_PORT=str(port), CITYOPS_STORE__TOKEN=TOKEN, CITYOPS_DASHBOARD__DEMO_MODE="true"
        )
        get_settings.cache_clear()
        pages = time_pages(args.page_runs)
        worst = max(queries.items(), key=lambda kv: kv[1]["p95_ms"])
        result = {
            "incidents": args.incidents,
            "active_incidents": active,
            "events": args.events,
            "fill": {k: round(v, 2) for k, v in fill_times.items()},
            "queries": queries,
            "pages": pages,
            "summary": {
                "query_p95_max_ms": worst[1]["p95_ms"],
                "slowest_query": worst[0],
                "first_render_p50_max_ms": max(v["p50_ms"] for k, v in pages.items() if k.startswith("first_render")),
                "filter_change_p50_max_ms": max(v["p50_ms"] for k, v in pages.items() if k.startswith("filter_change")),
                "targets": {"query_p95_ms": 50, "first_render_ms": 2000, "filter_change_ms": 1000},
            },
        }
        store.close()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
