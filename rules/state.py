"""Rule state entries: small JSON-able dicts keyed by ``rule|subject|bucket``.

Every aggregate kept here is order-independent (counts, extremes, the k earliest events), so
the same events give the same state whatever order or batching they arrive in. Each entry also
records the highest source offset applied per partition, which makes re-delivery idempotent.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

EVIDENCE_CAP = 20
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

Entry = dict[str, Any]


def to_ms(ts: datetime) -> int:
    """Exact integer milliseconds since the epoch (no float rounding)."""
    return (ts - EPOCH) // timedelta(milliseconds=1)


def from_ms(ms: int) -> datetime:
    return EPOCH + timedelta(milliseconds=ms)


def bucket_of(ts_ms: int, size_ms: int) -> int:
    """Start of the tumbling bucket (aligned to the epoch) that holds ``ts_ms``."""
    return ts_ms - ts_ms % size_ms


def new_entry(subject: str, zone: str | None, start_ms: int, end_ms: int) -> Entry:
    return {
        "n": 0,
        "x": None,
        "ev": [],
        "start": start_ms,
        "end": end_ms,
        "subj": subject,
        "zone": zone,
        "last": start_ms,
        "pos": {},
    }


_UNSET: Any = object()


def add_event(
    entry: Entry,
    ts_ms: int,
    event_id: str,
    value: float,
    lon: float,
    lat: float,
    *,
    prefer_max: bool = True,
    zone: Any = _UNSET,
) -> bool:
    """Fold one event into an entry (mutates it); False when it was a duplicate.

    ``zone``, when given, becomes the entry's zone if this event is the earliest one: a subject
    that moves between zones within one bucket must not depend on arrival order.
    """
    evidence: list[list[Any]] = entry["ev"]
    item = [ts_ms, event_id, value, lon, lat]
    if any(e[1] == event_id and e[0] == ts_ms for e in evidence):
        return False
    entry["n"] += 1
    current = entry["x"]
    if current is None or (value > current if prefer_max else value < current):
        entry["x"] = value
    entry["last"] = max(entry["last"], ts_ms)
    if len(evidence) < EVIDENCE_CAP or (item[0], item[1]) < (evidence[-1][0], evidence[-1][1]):
        evidence.append(item)
        evidence.sort(key=lambda e: (e[0], e[1]))
        del evidence[EVIDENCE_CAP:]
    if zone is not _UNSET and evidence and evidence[0][1] == event_id and evidence[0][0] == ts_ms:
        entry["zone"] = zone
    return True


def already_applied(entry: Entry, position: tuple[int, int] | None) -> bool:
    """True when the message at ``position`` (partition, offset) was folded in before."""
    if position is None:
        return False
    return int(entry["pos"].get(str(position[0]), -1)) >= position[1]


def mark_applied(entry: Entry, position: tuple[int, int] | None) -> None:
    if position is not None:
        entry["pos"][str(position[0])] = position[1]
