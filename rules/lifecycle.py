"""The incident lifecycle: states, operator actions and the transitions they cause.

``open → acknowledged → in_progress → resolved → closed``, with ``reopen``. Rules can clear an
incident: an untouched one becomes ``resolved``; one an operator already acknowledged becomes
``cleared`` ("cleared, awaiting operator") and never silently disappears.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from rules.errors import RulesError

Status = Literal["open", "acknowledged", "in_progress", "cleared", "resolved", "closed"]
ActionName = Literal["ack", "assign", "comment", "resolve", "close", "reopen"]
STATUSES: tuple[Status, ...] = ("open", "acknowledged", "in_progress", "cleared", "resolved", "closed")
ACTIVE: frozenset[str] = frozenset({"open", "acknowledged", "in_progress", "cleared"})

# action -> {from status: to status}
_OPERATOR: dict[str, dict[str, Status]] = {
    "ack": {"open": "acknowledged", "cleared": "cleared"},
    "assign": {
        "open": "in_progress",
        "acknowledged": "in_progress",
        "in_progress": "in_progress",
        "cleared": "in_progress",
    },
    "resolve": {"open": "resolved", "acknowledged": "resolved", "in_progress": "resolved", "cleared": "resolved"},
    "close": {"resolved": "closed"},
    "reopen": {"resolved": "open", "closed": "open", "cleared": "open"},
    "comment": {s: s for s in STATUSES},
}


class TransitionError(RulesError):
    """An action is not allowed in the incident's current state."""


class Action(BaseModel):
    """An operator action, as sent on the actions topic (from dashboard, CLI or HTTP)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal["1.0"] = "1.0"
    action_id: str = Field(min_length=8, max_length=64, description="Unique per action; makes re-delivery idempotent.")
    incident_id: str = Field(min_length=1, max_length=64)
    action: ActionName
    actor: str = Field(min_length=1, max_length=128, description="User name of the operator.")
    at: AwareDatetime
    note: str = Field(default="", max_length=4000)
    assignee: str | None = Field(default=None, max_length=128, description="For assign: who takes it.")


class Transition(BaseModel):
    """One entry of an incident's history, as published on the incident-updates topic."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal["1.0"] = "1.0"
    update_id: str = Field(description="Deterministic id of this history entry.")
    incident_id: str
    kind: Literal["created", "updated", "escalated", "transition", "comment", "rejected"]
    from_status: Status | None
    to_status: Status
    actor: str = Field(description="'rule:<rule id>' or 'user:<name>'.")
    at: datetime
    note: str = ""
    revision: int = 0
    severity: str | None = None


def apply_action(status: Status, action: Action) -> Status:
    """The status after an operator action. Raises TransitionError when it is not allowed."""
    if action.action == "assign" and not action.assignee:
        raise TransitionError(f"incident {action.incident_id}: 'assign' needs an assignee")
    allowed = _OPERATOR[action.action]
    if status not in allowed:
        legal = ", ".join(sorted(allowed)) or "none"
        raise TransitionError(
            f"incident {action.incident_id}: cannot {action.action} an incident that is {status} "
            f"(allowed from: {legal})"
        )
    return allowed[status]


def rule_cleared(status: Status) -> Status:
    """The status after the rule's condition cleared (auto-resolve)."""
    if status == "open":
        return "resolved"
    if status in ("acknowledged", "in_progress"):
        return "cleared"
    return status


def rule_fired_again(status: Status) -> Status:
    """The status when the rule's condition holds again on a cleared or auto-resolved incident."""
    if status == "cleared":
        return "acknowledged"
    return status


def legal_actions(status: Status) -> list[str]:
    """Actions an operator may take now (for UIs)."""
    return [name for name, table in _OPERATOR.items() if status in table]


def update_id(*parts: object) -> str:
    return hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()[:24]
