"""Loading DuckDB's Quack and httpfs extensions from their PyPI packages (no downloads here)."""

from __future__ import annotations

import importlib.resources

import duckdb

DUCKDB_VERSION = "v1.5.5"


def extension_path(name: str) -> str:
    """Path of a bundled extension, e.g. ``quack`` from ``duckdb-extension-quack``."""
    root = importlib.resources.files(f"duckdb_extension_{name}")
    return str(root / "extensions" / DUCKDB_VERSION / f"{name}.duckdb_extension")


def load_quack(con: duckdb.DuckDBPyConnection) -> None:
    """LOAD httpfs then quack into a connection (httpfs first, or every request fails)."""
    for name in ("httpfs", "quack"):
        con.execute(f"LOAD '{extension_path(name)}'")
