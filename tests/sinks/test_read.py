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
