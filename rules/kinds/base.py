"""What every rule kind provides to the engine."""

from __future__ import annotations

import operator
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

from rules.model import Enriched

OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}


@dataclass(frozen=True)
class Slot:
    """Where one event lands for one rule: the state key and the entry's identity."""

    key: str
    subject: str
    zone: str | None
    start_ms: int
    end_ms: int
    value: float


class Kind(ABC):
    """A rule kind: decides whether an event counts, and when an entry fires."""

    @abstractmethod
    def slot(self, item: Enriched, ts_ms: int) -> Slot | None:
        """The state slot this event updates, or None when the event does not count."""

    @abstractmethod
    def fires(self, count: int, extreme: float | None) -> bool:
        """Whether an entry with this aggregate is an incident."""

    @property
    @abstractmethod
    def prefer_max(self) -> bool:
        """Whether the reported value is the maximum (else the minimum) of the events."""
