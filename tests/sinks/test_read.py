"""The read side over a real Quack endpoint: read-only policy and injection-proof parameters."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from factories import incident

from sinks.errors import QueryError
from sinks.read import StoreReader
from sinks.store import Batch, Store
from streams.broker import free_port

INJECTIONS = [
    "x'; DROP TABLE incidents; --",
    "' OR '1'='1",
    "flood') OR TRUE --",
    "\\'; DELETE FROM incidents; --",
    "load",
    "'; ATTACH 'evil.db' AS e; --",
]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Store, StoreReader]]:
    store = Store(tmp_path / "s.duckdb")
    port = free_port()
    store.serve("127.0.0.1", port, "read-test-token")
    store.apply(Batch(incidents=[incident(1, 2), incident(2, 3, zone="420106")]))
    yield store, StoreReader(f"quack:127.0.0.1:{port}", "read-test-token")
    store.close()


@pytest.mark.parametrize("payload", INJECTIONS)
def test_filter_values_are_literals_so_injection_payloads_match_nothing_and_change_nothing(
    served: tuple[Store, StoreReader], payload: str
) -> None:
    store, reader = served
    assert reader.incidents(categories=[payload]) == []
    assert reader.incidents(zones=[payload], severities=[payload]) == []
    assert reader.incident(payload) is None
    assert store.con.execute("SELECT count(*) FROM incidents").fetchone() == (2,)


@pytest.mark.parametrize(
    "sql",
    [
        "DELETE FROM incidents",
        "INSERT INTO incidents SELECT * FROM incidents",
        "DROP TABLE incidents",
        "WITH x AS (SELECT 1) DELETE FROM incidents",
        "ATTACH 'x.db' AS x",
        "COPY incidents TO 'x.csv'",
        "SELECT 1; DROP TABLE incidents",
        "CALL quack_serve('quack:127.0.0.1:1')",
    ],
)
def test_the_store_refuses_every_write_through_quack(served: tuple[Store, StoreReader], sql: str) -> None:
    store, reader = served
    with pytest.raises(QueryError):
        reader.rows(sql)
    assert store.con.execute("SELECT count(*) FROM incidents").fetchone() == (2,)


def test_a_write_keyword_inside_a_string_literal_does_not_block_a_read(served: tuple[Store, StoreReader]) -> None:
    _, reader = served
    assert reader.rows("SELECT count(*) AS n FROM incidents WHERE category <> 'load; drop'") == [{"n": 2}]


def test_reads_see_the_writers_commits_at_once(served: tuple[Store, StoreReader]) -> None:
    store, reader = served
    store.apply(Batch(incidents=[incident(3, 1)]))
    assert reader.counts()["incidents"] == 3


# -- a store file no writer holds (StoreReader.of_file) ----------------------------------------


def _archived(path: Path) -> None:
    """A store file with two incidents and three events, its writer closed."""
    from datetime import UTC, datetime, timedelta

    from rules.model import Enriched, Reading

    store = Store(path)
    at = datetime(2026, 7, 1, tzinfo=UTC)
    readings = [
        Reading(id=f"r{i}", ts=at + timedelta(minutes=i), lon=114.3, lat=30.6, sensor_id="s", metric="m", value=i)
        for i in (2, 0, 1)
    ]
    store.apply(
        Batch(incidents=[incident(1, 2), incident(2, 3)], events=[Enriched(event=r, zones={}) for r in readings])
    )
    store.close()


def test_a_store_file_is_read_locally_with_the_same_queries(tmp_path: Path) -> None:
    _archived(tmp_path / "copy.duckdb")
    reader = StoreReader.of_file(tmp_path / "copy.duckdb")
    assert reader.uri == f"file:{tmp_path / 'copy.duckdb'}"
    assert reader.counts()["incidents"] == 2
    payloads = list(reader.event_payloads(None, None, page=2))  # two pages, in event-time order
    assert [p.split(b'"id":"')[1][:2] for p in payloads] == [b"r0", b"r1", b"r2"]
    with pytest.raises(QueryError):
        reader.rows("DELETE FROM incidents")  # the connection is read-only
    assert reader.counts()["incidents"] == 2


def test_a_store_file_held_by_a_writer_or_missing_says_what_to_do(tmp_path: Path) -> None:
    import subprocess
    import sys

    from sinks.errors import StoreUnavailableError

    with pytest.raises(StoreUnavailableError, match="no store file at"):
        StoreReader.of_file(tmp_path / "none.duckdb")
    path = tmp_path / "live.duckdb"
    _archived(path)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import duckdb, sys, time; c = duckdb.connect({str(path)!r}); print('ok', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ok"
        with pytest.raises(StoreUnavailableError, match="A running `cityops store` holds its file"):
            StoreReader.of_file(path)
    finally:
        holder.kill()
        holder.wait()
