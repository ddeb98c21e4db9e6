"""Fixtures of the dashboard tests: a real store writer serving Quack in-process, on a free port.

Every fixture clears the ``CITYOPS_*`` environment, points the dashboard at its own store and
clears the settings cache and Streamlit's data cache, so tests never see each other's numbers.
``kafka_topics`` adds a per-test topic prefix on the session broker, for actions and silences.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import streamlit as st

from dashboard.passwords import hash_password
from rules.engine import incident_id
from rules.model import Enriched, Evidence, Incident, Reading, Track
from sinks.store import Batch, DeadLetter, Store
from streams.broker import DevBroker, free_port
from streams.settings import Settings, get_settings
from streams.topics import create_topics

REPO = Path(__file__).resolve().parents[2]
APP = REPO / "dashboard" / "app.py"
TOKEN = "test-token-123"
PACK_VERSION = "2026.11.2"
NOW = datetime.now(UTC).replace(microsecond=0)
PASSWORD = "s3cret-pw"
USERS = {"viewer1": ["viewer"], "op1": ["operator"], "author1": ["viewer", "rule_author"]}


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
DEAD = [DeadLetter("cityops.events.raw[0]@17", "bad_json", "not JSON: expected value at line 1", b"{oops", NOW)]


def _reading(
    sensor: str, metric: str, value: float, lon: float, lat: float, at: datetime, zone: str, n: int
) -> Enriched:
    event = Reading(id=f"{sensor}-e{n}", ts=at, lon=lon, lat=lat, sensor_id=sensor, metric=metric, value=value)
    return Enriched(event=event, zones={"districts": [zone]})


def _fix(obj: str, lon: float, lat: float, at: datetime, alt: float, n: int) -> Enriched:
    event = Track(id=f"{obj}-t{n}", ts=at, lon=lon, lat=lat, object_id=obj, object_type="drone", alt_m=alt)
    return Enriched(event=event, zones={"districts": ["420111"]})


EVENTS = (
    # The water-level incident's evidence (its ids), from a sensor that is reporting.
    [_reading("wl-jianghan-007", "water_level_cm", 40.0 + n, 114.255, 30.605, NOW - timedelta(minutes=4 - n),
              "420103", n) for n in range(3)]
    # A sensor that went silent an hour ago.
    + [_reading("wl-qiaokou-003", "water_level_cm", 9.0, 114.21, 30.58, NOW - timedelta(minutes=60), "420104", 0)]
    # A drone flying now.
    + [_fix("uav-0042", 114.38 + 0.004 * n, 30.50 + 0.003 * n, NOW - timedelta(seconds=50 - 10 * n), 150, n)
       for n in range(5)]
)  # fmt: skip


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


def users_json(cost: int = 2**12) -> str:
    """CITYOPS_DASHBOARD__USERS for the test users (a low scrypt cost keeps the tests quick)."""
    return json.dumps(
        {name: {"password_hash": hash_password(PASSWORD, n=cost), "roles": roles} for name, roles in USERS.items()}
    )


def point_dashboard_at(
    monkeypatch: pytest.MonkeyPatch, port: int, language: str = "zh-CN", *, demo: bool = True
) -> None:
    for name in list(os.environ):
        if name.startswith("CITYOPS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("CITYOPS_STORE__QUACK_HOST", "127.0.0.1")
    monkeypatch.setenv("CITYOPS_STORE__QUACK_PORT", str(port))
    monkeypatch.setenv("CITYOPS_STORE__TOKEN", TOKEN)
    monkeypatch.setenv("CITYOPS_DASHBOARD__LANGUAGE", language)
    monkeypatch.setenv("CITYOPS_DASHBOARD__REFRESH_S", "2")
    monkeypatch.setenv("CITYOPS_DASHBOARD__DEMO_MODE", "true" if demo else "false")
    # The fixture's events are stamped when this module is imported: keep them "recent" for a long session.
    monkeypatch.setenv("CITYOPS_DASHBOARD__TRACK_ACTIVE_S", "3600")
    monkeypatch.setenv("CITYOPS_DASHBOARD__SENSOR_SILENT_S", "1800")
    get_settings.cache_clear()
    st.cache_data.clear()


def _serve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, batch: Batch) -> Iterator[RunningStore]:
    store = Store(tmp_path / "s.duckdb")
    port = free_port()
    uri = store.serve("127.0.0.1", port, TOKEN)
    store.apply(batch)
    point_dashboard_at(monkeypatch, port)
    try:
        yield RunningStore(port=port, uri=uri, incidents=list(batch.incidents), store=store)
    finally:
        store.close()
        get_settings.cache_clear()
        st.cache_data.clear()


@pytest.fixture
def live_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningStore]:
    """A real store with five incidents in Wuhan districts, a few events and one dead letter."""
    yield from _serve(tmp_path, monkeypatch, Batch(incidents=list(INCIDENTS), events=list(EVENTS), dead_letters=DEAD))


@pytest.fixture
def empty_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningStore]:
    """A real store that has not received anything yet."""
    yield from _serve(tmp_path, monkeypatch, Batch())


@pytest.fixture
def unreachable_store(monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningStore]:
    """Settings that point at a free port where nothing listens."""
    port = free_port()
    point_dashboard_at(monkeypatch, port)
    yield RunningStore(port=port, uri=f"quack:127.0.0.1:{port}")
    get_settings.cache_clear()
    st.cache_data.clear()


@pytest.fixture
def with_users(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Login required (demo mode off), with a viewer, an operator and a rule author."""
    monkeypatch.setenv("CITYOPS_DASHBOARD__DEMO_MODE", "false")
    monkeypatch.setenv("CITYOPS_DASHBOARD__USERS", users_json())
    get_settings.cache_clear()
    return dict(USERS)


@pytest.fixture
def kafka_topics(broker: DevBroker, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """This test's own topics on the session broker; the dashboard sends actions and silences there."""
    prefix = f"t.dash-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("CITYOPS_KAFKA__BOOTSTRAP", broker.bootstrap)
    monkeypatch.setenv("CITYOPS_KAFKA__TOPIC_PREFIX", prefix)
    get_settings.cache_clear()
    settings = get_settings()
    create_topics(settings.kafka)
    yield settings
    # The dashboard keeps one sender per address for the process: close this test's producer.
    from dashboard import actions, data

    get_settings.cache_clear()
    current = get_settings()
    actions.sender(data.StoreAddress.from_settings(current), actions.KafkaAddress.from_settings(current)).close()
    actions.sender.clear()  # type: ignore[attr-defined]
