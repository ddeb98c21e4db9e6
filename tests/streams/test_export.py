"""`cityops store export`: history out of the running store, read-only, as Parquet or CSV."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import duckdb
import pytest
from factories import T0, incident
from pydantic import SecretStr

from sinks.store import Batch, Store
from streams.broker import free_port
from streams.cli_incidents import export
from streams.settings import Settings


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_export_writes_the_rows_since_a_time_to_a_file_other_tools_can_read(tmp_path: Path, fmt: str) -> None:
    store = Store(tmp_path / "s.duckdb")
    s = Settings()
    s.store.quack_port = free_port()
    s.store.token = SecretStr("export-token")
    store.serve("127.0.0.1", s.store.quack_port, "export-token")
    try:
        old = incident(1, 2).model_copy(update={"last_event_at": T0 - timedelta(days=10)})
        store.apply(Batch(incidents=[old, incident(2, 3), incident(3, 4)]))
        out = tmp_path / f"incidents.{fmt}"
        assert export(s, "incidents", fmt, T0 - timedelta(days=1), out) == 2
        reader = "read_parquet" if fmt == "parquet" else "read_csv_auto"
        rows = duckdb.sql(f"SELECT id, revision FROM {reader}('{out}') ORDER BY id").fetchall()
        assert rows == [("inc0002", 3), ("inc0003", 4)]
        assert export(s, "incident_history", fmt, None, tmp_path / f"history.{fmt}") == 3
    finally:
        store.close()
