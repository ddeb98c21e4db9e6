"""The store writer: idempotent batches, lifecycle and audit trail, actions, silences."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from factories import T0, incident
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rules.lifecycle import Action
from rules.silences import Silence
from sinks.store import Batch, Store


def action(incident_id: str, name: str, n: int = 0, assignee: str | None = None) -> Action:
    return Action(
        action_id=f"act-{incident_id}-{name}-{n}",
        incident_id=incident_id,
        action=name,  # type: ignore[arg-type]
        actor="zhang.san",
        at=T0 + timedelta(minutes=1 + n),
        assignee=assignee,
    )


def table(store: Store, sql: str) -> list[tuple[Any, ...]]:
    return store.con.execute(sql).fetchall()


FINAL = "SELECT id, revision, status, rule_status, severity, value, evidence_count FROM incidents ORDER BY id"


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "store.duckdb")


def test_migrations_run_once_and_record_the_schema_version(tmp_path: Path) -> None:
    first = Store(tmp_path / "s.duckdb")
    assert table(first, "SELECT max(version) FROM schema_migrations") == [(2,)]
    first.close()
    again = Store(tmp_path / "s.duckdb")
    assert table(again, "SELECT count(*) FROM schema_migrations") == [(2,)]


def test_reapplying_a_batch_leaves_the_store_exactly_as_it_was(store: Store) -> None:
    batch = Batch(incidents=[incident(1, 3), incident(2, 5)], actions=[action("inc0001", "ack")])
    store.apply(batch)
    before = [
        table(store, FINAL),
        table(store, "SELECT * EXCLUDE (published_at) FROM incident_history ORDER BY seq"),
        table(store, "SELECT action_id, outcome FROM actions"),
    ]
    store.apply(batch)
    after = [
        table(store, FINAL),
        table(store, "SELECT * EXCLUDE (published_at) FROM incident_history ORDER BY seq"),
        table(store, "SELECT action_id, outcome FROM actions"),
    ]
    assert after == before


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.randoms(use_true_random=False), st.integers(min_value=1, max_value=4))
def test_any_order_of_duplicate_deliveries_gives_the_same_final_incidents(
    tmp_path_factory: pytest.TempPathFactory, rnd: random.Random, batches: int
) -> None:
    snapshots = [incident(n, r) for n in range(4) for r in range(1, 6)]
    snapshots += [incident(1, 6, status="resolved"), incident(2, 7, severity="critical")]
    reference = Store(tmp_path_factory.mktemp("ref") / "s.duckdb")
    reference.apply(Batch(incidents=list(snapshots)))
    deliveries = snapshots + rnd.sample(snapshots, k=len(snapshots) // 2)
    rnd.shuffle(deliveries)
    shuffled = Store(tmp_path_factory.mktemp("shuffled") / "s.duckdb")
    size = max(1, len(deliveries) // batches)
    for i in range(0, len(deliveries), size):
        shuffled.apply(Batch(incidents=deliveries[i : i + size]))
    assert table(shuffled, FINAL) == table(reference, FINAL)


def test_an_incident_is_created_then_updated_and_escalated_in_the_history(store: Store) -> None:
    store.apply(Batch(incidents=[incident(1, 1)]))
    store.apply(Batch(incidents=[incident(1, 2)]))
    store.apply(Batch(incidents=[incident(1, 3, severity="critical")]))
    kinds = table(store, "SELECT kind, actor FROM incident_history ORDER BY seq")
    assert kinds == [
        ("created", "rule:flood.level"),
        ("updated", "rule:flood.level"),
        ("escalated", "rule:flood.level"),
    ]
    assert table(store, "SELECT count(*) FROM incidents") == [(1,)]


def test_a_rule_clearing_an_untouched_incident_resolves_it(store: Store) -> None:
    store.apply(Batch(incidents=[incident(1, 2)]))
    store.apply(Batch(incidents=[incident(1, 3, status="resolved")]))
    assert table(store, "SELECT status, rule_status FROM incidents") == [("resolved", "resolved")]


def test_a_condition_clearing_after_an_operator_acknowledged_gives_cleared_awaiting_operator(store: Store) -> None:
    store.apply(Batch(incidents=[incident(1, 2)]))
    store.apply(Batch(actions=[action("inc0001", "ack")]))
    store.apply(Batch(incidents=[incident(1, 3, status="resolved")]))
    assert table(store, "SELECT status FROM incidents") == [("cleared",)]
    last = table(store, "SELECT from_status, to_status, note FROM incident_history ORDER BY seq DESC LIMIT 1")
    assert last == [("acknowledged", "cleared", "condition cleared, awaiting operator")]


def test_operator_actions_move_the_incident_and_are_recorded_with_the_user(store: Store) -> None:
    store.apply(Batch(incidents=[incident(1, 2)]))
    store.apply(
        Batch(
            actions=[
                action("inc0001", "ack", 0),
                action("inc0001", "assign", 1, assignee="li.wei"),
                action("inc0001", "comment", 2),
                action("inc0001", "resolve", 3),
                action("inc0001", "close", 4),
            ]
        )
    )
    assert table(
        store, "SELECT status, assignee, acknowledged_at IS NOT NULL, closed_at IS NOT NULL FROM incidents"
    ) == [("closed", "li.wei", True, True)]
    trail = table(
        store, "SELECT kind, from_status, to_status, actor FROM incident_history WHERE actor LIKE 'user:%' ORDER BY seq"
    )
    assert trail == [
        ("transition", "open", "acknowledged", "user:zhang.san"),
        ("transition", "acknowledged", "in_progress", "user:zhang.san"),
        ("comment", "in_progress", "in_progress", "user:zhang.san"),
        ("transition", "in_progress", "resolved", "user:zhang.san"),
        ("transition", "resolved", "closed", "user:zhang.san"),
    ]


def test_an_illegal_transition_or_unknown_incident_is_rejected_with_the_reason_and_changes_nothing(
    store: Store,
) -> None:
    store.apply(Batch(incidents=[incident(1, 2)]))
    store.apply(Batch(actions=[action("inc0001", "close"), action("nope", "ack")]))
    assert table(store, "SELECT status FROM incidents") == [("open",)]
    outcomes = dict((r[0], (r[1], r[2])) for r in table(store, "SELECT action_id, outcome, reason FROM actions"))
    assert outcomes["act-inc0001-close-0"][0] == "rejected"
    assert "cannot close an incident that is open" in outcomes["act-inc0001-close-0"][1]
    assert outcomes["act-nope-ack-0"] == ("rejected", "unknown incident nope")


def test_the_history_is_an_outbox_published_once(store: Store) -> None:
    store.apply(Batch(incidents=[incident(1, 1), incident(2, 1)]))
    pending = store.pending_updates()
    assert [t.incident_id for t in pending] == ["inc0001", "inc0002"]
    store.mark_published([t.update_id for t in pending])
    assert store.pending_updates() == []


def test_a_silence_suppresses_notification_but_the_incident_is_still_recorded_and_counted(store: Store) -> None:
    roadworks = Silence(
        silence_id="roadworks-1",
        starts_at=T0 - timedelta(hours=1),
        ends_at=T0 + timedelta(days=3),
        zones=["420103"],
        rules=["flood.*"],
        created_by="ops",
        reason="roadworks",
    )
    store.apply(Batch(silences=[roadworks]))
    store.apply(Batch(incidents=[incident(1, 2), incident(2, 2, zone="420106"), incident(3, 2, rule="air.pm25")]))
    rows = dict(table(store, "SELECT id, silenced FROM incidents"))
    assert rows == {"inc0001": True, "inc0002": False, "inc0003": False}
    assert table(store, "SELECT count(*) FROM incidents") == [(3,)]


def test_a_polygon_silence_covers_only_incidents_inside_it_and_an_expired_one_nothing(store: Store) -> None:
    street = "POLYGON((114.26 30.58, 114.28 30.58, 114.28 30.60, 114.26 30.60, 114.26 30.58))"
    active = Silence(
        silence_id="street-1",
        starts_at=T0 - timedelta(hours=1),
        ends_at=T0 + timedelta(days=1),
        polygon_wkt=street,
        created_by="ops",
    )
    store.apply(
        Batch(
            silences=[
                active,
                Silence(
                    silence_id="old-1",
                    starts_at=T0 - timedelta(hours=1),
                    ends_at=T0 + timedelta(days=1),
                    created_by="ops",
                    expired=True,
                ),
            ]
        )
    )
    far = incident(2, 1).model_copy(update={"lon": 114.40, "lat": 30.50})
    store.apply(Batch(incidents=[incident(1, 1), far]))
    assert dict(table(store, "SELECT id, silences FROM incidents")) == {"inc0001": '["street-1"]', "inc0002": "[]"}


def test_event_retention_counts_from_storage_time_so_a_backfill_of_old_events_is_kept(store: Store) -> None:
    from rules.model import Enriched, Reading

    old = Reading(
        id="r-2019", ts=datetime(2019, 1, 1, tzinfo=UTC), lon=114.3, lat=30.6, sensor_id="s", metric="m", value=1.0
    )
    store.apply(Batch(events=[Enriched(event=old, zones={})]))
    assert store.prune_events(retention_days=30) == 0
    store.con.execute("UPDATE events SET stored_at = stored_at - INTERVAL 31 DAY")
    assert store.prune_events(retention_days=30) == 1
