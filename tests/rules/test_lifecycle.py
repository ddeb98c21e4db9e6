"""The incident lifecycle as a state machine: every legal and illegal operator transition."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from rules.lifecycle import (
    STATUSES,
    Action,
    TransitionError,
    apply_action,
    legal_actions,
    rule_cleared,
    rule_fired_again,
)

LEGAL = {
    ("open", "ack"): "acknowledged",
    ("cleared", "ack"): "cleared",
    ("open", "assign"): "in_progress",
    ("acknowledged", "assign"): "in_progress",
    ("in_progress", "assign"): "in_progress",
    ("cleared", "assign"): "in_progress",
    ("open", "resolve"): "resolved",
    ("acknowledged", "resolve"): "resolved",
    ("in_progress", "resolve"): "resolved",
    ("cleared", "resolve"): "resolved",
    ("resolved", "close"): "closed",
    ("resolved", "reopen"): "open",
    ("closed", "reopen"): "open",
    ("cleared", "reopen"): "open",
    **{(s, "comment"): s for s in STATUSES},
}
ACTIONS = ("ack", "assign", "comment", "resolve", "close", "reopen")


def _action(name: str, assignee: str | None = "li.wei") -> Action:
    return Action(
        action_id="a" * 12,
        incident_id="inc-1",
        action=name,
        actor="zhang.san",  # type: ignore[arg-type]
        at=datetime(2026, 7, 1, tzinfo=UTC),
        assignee=assignee,
    )


@pytest.mark.parametrize("status", STATUSES)
@pytest.mark.parametrize("name", ACTIONS)
def test_every_operator_action_from_every_status_is_either_the_documented_transition_or_refused(
    status: str, name: str
) -> None:
    expected = LEGAL.get((status, name))
    if expected is None:
        with pytest.raises(TransitionError, match=f"cannot {name} an incident that is {status}"):
            apply_action(status, _action(name))  # type: ignore[arg-type]
        assert name not in legal_actions(status)  # type: ignore[arg-type]
    else:
        assert apply_action(status, _action(name)) == expected  # type: ignore[arg-type]
        assert name in legal_actions(status)  # type: ignore[arg-type]


def test_assign_without_an_assignee_is_refused() -> None:
    with pytest.raises(TransitionError, match="needs an assignee"):
        apply_action("open", _action("assign", assignee=None))


@pytest.mark.parametrize(
    ("status", "after"),
    [
        ("open", "resolved"),
        ("acknowledged", "cleared"),
        ("in_progress", "cleared"),
        ("cleared", "cleared"),
        ("resolved", "resolved"),
        ("closed", "closed"),
    ],
)
def test_a_rule_clearing_resolves_untouched_incidents_and_leaves_acknowledged_ones_awaiting_the_operator(
    status: str, after: str
) -> None:
    assert rule_cleared(status) == after  # type: ignore[arg-type]


def test_a_condition_that_returns_puts_a_cleared_incident_back_to_acknowledged() -> None:
    assert rule_fired_again("cleared") == "acknowledged"
    assert rule_fired_again("in_progress") == "in_progress"
