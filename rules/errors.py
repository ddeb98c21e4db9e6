"""Exception root of the rules package."""

from __future__ import annotations


class RulesError(Exception):
    """Root of every error raised by the rules package."""


class EventError(RulesError):
    """An input record is not a valid event; the message says which field and why."""

    def __init__(self, reason: str, *, kind: str = "invalid") -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind


class PackError(RulesError):
    """A rule pack is invalid; each problem is a `file:line: message` string."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class LayerError(RulesError):
    """A GeoJSON layer cannot be loaded (missing file, bad geometry, missing id property)."""
