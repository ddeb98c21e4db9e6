"""Fixtures of the dashboard tests: a real store writer serving Quack in-process, on a free port.

Every fixture clears the ``CITYOPS_*`` environment, points the dashboard at its own store and
clears the settings cache and Streamlit's data cache, so tests never see each other's numbers.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import streamlit as st

from rules.engine import incident_id
from rules.model import Evidence, Incident
from sinks.store import Batch, DeadLetter, Store
from streams.broker import free_port
from streams.settings import get_settings

REPO = Path(__file__).resolve().parents[2]
APP = REPO / "dashboard" / "app.py"
TOKEN = "test-token-123"
PACK_VERSION = "2026.11.1"
NOW = datetime.now(UTC).replace(microsecond=0)


def make_incident(
    rule_id: str,
    title: str,
    severity: str,
    category: str,
    subject: str,
    zone_id: str,
    zone_name: str,
    lon: float,
    lat: float,
    value: float,
    threshold: float,
    *,
    op: str = ">",
    count: int = 1,
    minutes_ago: int = 5,
    kind: str = "threshold",
    window: timedelta = timedelta(minutes=15),
) -> Incident:
    """An incident as the worker would emit it (ids are deterministic, as in the engine)."""
    last = NOW - timedelta(minutes=minutes_ago)
    start = last - timedelta(minutes=2)
    return Incident.model_validate(
        {
            "id": incident_id("wuhan", rule_id, subject, int(start.timestamp() * 1000)),
            "revision": count,
            "pack": "wuhan",
            "pack_version": PACK_VERSION,
            "rule_id": rule_id,
            "rule_version": 1,
            "kind": kind,
            "title": title,
            "severity": severity,
            "category": category,
            "subject": subject,
            "layer": "districts",
            "zone_id": zone_id,
            "zone_name": zone_name,
            "window_start": start,
            "window_end": start + window,
            "first_event_at": start,
            "last_event_at": last,
            "lon": lon,
            "lat": lat,
            "value": value,
            "threshold": threshold,
            "op": op,
            "evidence": Evidence(
                event_ids=[f"{subject}-e{i}" for i in range(count)], values=[value] * count, count=count
            ),
        }
    )


# Five incidents in four Wuhan districts (positions lie inside the district they name).
WATER_LEVEL = make_incident(
    "flood.water-level-high", "Water level above 30 cm", "high", "flood", "wl-jianghan-007",
    "420103", "江汉区", 114.255, 30.605, 42.5, 30, count=3, minutes_ago=2,
)  # fmt: skip
WATERLOGGING = make_incident(
    "flood.waterlogging-reports", "Three or more waterlogging reports in a district within 15 minutes", "high",
    "flood", "420111", "420111", "洪山区", 114.37, 30.51, 4, 3, op=">=", count=4, minutes_ago=7, kind="window",
)  # fmt: skip
DRONE = make_incident(
    "airspace.drone-too-high", "Drone flying above 120 m", "high", "airspace", "uav-0042",
    "420111", "洪山区", 114.40, 30.52, 168, 120, count=2, minutes_ago=11,
)  # fmt: skip
PM25 = make_incident(
    "air.pm25-very-high", "PM2.5 above 150 µg/m³", "medium", "air_quality", "aq-qingshan-02",
    "420107", "青山区", 114.42, 30.64, 187, 150, minutes_ago=16,
)  # fmt: skip
DUMPING = make_incident(
    "sanitation.dumping-reports", "Three or more illegal-dumping reports in a district within 10 minutes", "medium",
    "sanitation", "420106", "420106", "武昌区", 114.32, 30.55, 3, 3, op=">=", count=3, minutes_ago=23, kind="window",
)  # fmt: skip
INCIDENTS = [WATER_LEVEL, WATERLOGGING, DRONE, PM25, DUMPING]
DEAD = [DeadLetter("cityops.events.raw[0]@17", "bad_json", "not JSON", b"{oops", NOW)]


@dataclass
class RunningStore:
    """A store the dashboard under test reads from."""

    port: int
    uri: str
    incidents: list[Incident] = field(default_factory=list)
    store: Store | None = None

    def by_rule(self, rule_id: str) -> Incident:
        """The fixture's incident of one rule."""
        return next(i for i in self.incidents if i.rule_id == rule_id)


def _point_dashboard_at(monkeypatch: pytest.MonkeyPatch, port: int, language: str = "zh-CN") -> None:
    for name in list(os.environ):
        if name.startswith("CITYOPS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("CITYOPS_STORE__QUACK_HOST", "127.0.0.1")
    monkeypatch.setenv("CITYOPS_STORE__QUACK_PORT", str(port))
    monkeypatch.setenv("CITYOPS_STORE__TOKEN", TOKEN)
    monkeypatch.setenv("CITYOPS_DASHBOARD__LANGUAGE", language)
    monkeypatch.setenv("CITYOPS_DASHBOARD__REFRESH_S", "2")
    get_settings.cache_clear()
    st.cache_data.clear()


def _serve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, batch: Batch) -> Iterator[RunningStore]:
    store = Store(tmp_path / "s.duckdb")
    port = free_port()
    uri = store.serve("127.0.0.1", port, TOKEN)
    store.apply(batch)
    _point_dashboard_at(monkeypatch, port)
    try:
        yield RunningStore(port=port, uri=uri, incidents=list(batch.incidents), store=store)
    finally:
        store.close()
        get_settings.cache_clear()
        st.cache_data.clear()


@pytest.fixture
def live_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningStore]:
    """A real store with five incidents in Wuhan districts and one dead letter."""
    yield from _serve(tmp_path, monkeypatch, Batch(incidents=list(INCIDENTS), dead_letters=list(DEAD)))


@pytest.fixture
def empty_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningStore]:
    """A real store that has not received anything yet."""
    yield from _serve(tmp_path, monkeypatch, Batch())


@pytest.fixture
def unreachable_store(monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningStore]:
    """Settings that point at a free port where nothing listens."""
    port = free_port()
    _point_dashboard_at(monkeypatch, port)
    yield RunningStore(port=port, uri=f"quack:127.0.0.1:{port}")
    get_settings.cache_clear()
    st.cache_data.clear()
