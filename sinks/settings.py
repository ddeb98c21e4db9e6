"""Settings section of the sinks package (composed into the root Settings in streams)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field, SecretStr


class StoreSettings(BaseModel):
    """The single DuckDB store writer and its Quack read endpoint."""

    path: Path = Field(default=Path("var/cityops.duckdb"), description="DuckDB file the writer owns.")
    quack_host: str = Field(default="127.0.0.1", description="Address the Quack read endpoint binds to.")
    quack_port: int = Field(default=9494, ge=1, le=65535)
    token: SecretStr = Field(default=SecretStr("cityops-dev-token"), description="Quack token (>= 4 chars).")
    batch_max_records: int = Field(default=5000, ge=1, description="Max records per store transaction.")
    poll_timeout_ms: int = Field(default=200, ge=1)
    event_retention_days: int = Field(default=30, ge=1, description="Days of events kept for backtests.")

    @property
    def quack_uri(self) -> str:
        return f"quack:{self.quack_host}:{self.quack_port}"
