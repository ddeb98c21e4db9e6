"""The alert payload: message kinds, deterministic ids, event-time `sent`."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from alert_helpers import RESOLVED_AT, make, resolved

from sinks.alerts.payload import (
    RESOLVED_STATUSES,
    AlertPayload,
    Published,
    build_payload,
    message_id,
    message_kind,
    published,
    sent_at,
)


def _state(revision: int, status: str = "open") -> Published:
    return Published(revision, status, message_id("x", revision, status), datetime(2026, 7, 1, tzinfo=UTC), "new")


def test_resolved_statuses_are_the_lifecycle_end_states() -> None:
    assert {"resolved", "closed"} == RESOLVED_STATUSES


@pytest.mark.parametrize(
    ("previous", "status", "revision", "expected"),
    [
        (None, "open", 1, "new"),
        (None, "open", 5, "new"),  # the first revision seen need not be 1
        (None, "resolved", 3, "resolved"),
        (_state(1), "open", 2, "update"),  # new evidence
        (_state(1), "acknowledged", 1, "update"),  # state change, same revision
        (_state(2), "open", 2, None),  # redelivery
        (_state(3), "open", 2, None),  # stale
        (_state(3), "resolved", 2, None),  # stale resolution
        (_state(2), "resolved", 2, "resolved"),
        (_state(2), "resolved", 3, "resolved"),
        (_state(2, "resolved"), "resolved", 2, None),
        (_state(2, "resolved"), "closed", 2, None),  # already announced as resolved
        (_state(2, "resolved"), "open", 3, "new"),  # the rule fired again / reopened
        (_state(2, "closed"), "open", 2, "new"),
    ],
)
def test_message_kind(previous: Published | None, status: str, revision: int, expected: str | None) -> None:
    inc = make(revision=revision).model_copy(update={"status": status})
    assert message_kind(previous, inc) == expected


def test_message_ids_are_deterministic_per_incident_revision_and_status() -> None:
    a = build_payload("new", make(revision=2), None)
    b = build_payload("update", make(revision=2), _state(1))
    assert a.message_id == b.message_id == "878f8b16f83bb13b30a31d48.r2.open"
    assert build_payload("new", make(revision=3), None).message_id != a.message_id
    assert build_payload("resolved", resolved(revision=2), None).message_id == "878f8b16f83bb13b30a31d48.r2.resolved"
    for forbidden in " ,<&":
        assert forbidden not in a.message_id


def test_sent_is_event_time_never_wall_clock() -> None:
    assert sent_at(make()) == datetime(2026, 7, 1, 0, 1, tzinfo=UTC)
    assert sent_at(resolved()) == RESOLVED_AT
    assert build_payload("new", make(), None).model_dump_json() == build_payload("new", make(), None).model_dump_json()


def test_payload_nests_the_incident_unchanged_and_round_trips() -> None:
    inc = make(revision=2)
    payload = build_payload("update", inc, _state(1))
    again = AlertPayload.model_validate_json(payload.model_dump_json())
    assert again == payload
    assert again.incident == inc
    assert again.schema_version == "1.0"
    assert again.previous_message_id == "x.r1.open"
    assert again.kind == "update"


def test_published_remembers_what_references_need() -> None:
    payload = build_payload("new", make(revision=4), None)
    state = published(payload)
    assert (state.revision, state.status, state.message_id, state.sent) == (4, "open", payload.message_id, payload.sent)
    assert not state.resolved
    assert published(build_payload("resolved", resolved(), None)).resolved
