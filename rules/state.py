"""Rule state entries: small JSON-able dicts keyed by ``rule|subject|bucket``.

Every aggregate kept here is order-independent (counts, extremes, the k earliest events), so
the same events give the same state whatever order or batching they arrive in. Each entry also
records the highest source offset applied per partition, which makes re-delivery idempotent.

An event is identified by its ``(ts, id)``: a repeat of it (a producer sending it again, under
another source position) is never counted twice in an entry. The entry keeps the
``EVIDENCE_CAP`` earliest events in full (``ev``); of every other event it counted it keeps only a
64-bit digest of ``(ts, id)`` in ``dh``: the sorted digests concatenated, 11 characters each,
in one JSON string (or, past ``SPLIT_DIGESTS``, one per first character: see ``_remember``).
``dh`` is absent until the evidence is full, so small entries pay nothing. An entry is
a bucket (a dedup bucket, a window), so its digests are dropped with it when the bucket expires.
A new event is taken for a repeat only if its blake2b-64 digest equals one of the entry's: with
``k`` digests the chance is ``k / 2**64``, about 5e-14 for a bucket of a million events.
"""

from __future__ import annotations

from binascii import b2a_base64
from bisect import bisect_left
from datetime import UTC, datetime, timedelta
from hashlib import blake2b
from typing import Any

EVIDENCE_CAP = 20
#: characters of one event digest in an entry's ``dh``: 64 bits in base64
DIGEST_CHARS = 11
#: an entry keeps up to this many digests in one string, more in one string per first character
SPLIT_DIGESTS = 512
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


def copy_entry(entry: Entry) -> Entry:
    """A private copy of an evidence entry (``new_entry``, a window's): what ``admit`` and
    ``mark_applied`` change in place (``ev``, ``d``, ``pos``) is copied; the evidence records are
    never changed, so they are shared (the generic copy copies every record, most of the cost).
    """
    out = dict(entry)
    out["ev"] = list(entry["ev"])
    out["pos"] = dict(entry["pos"])
    if "d" in entry:
        out["d"] = list(entry["d"])
    return out


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
    if not admit(entry, [ts_ms, event_id, value, lon, lat]):
        return False
    entry["n"] += 1
    current = entry["x"]
    if current is None or (value > current if prefer_max else value < current):
        entry["x"] = value
    entry["last"] = max(entry["last"], ts_ms)
    if zone is not _UNSET:
        first = entry["ev"][0]
        if first[0] == ts_ms and first[1] == event_id:
            entry["zone"] = zone
    return True


def event_digest(ts_ms: int, event_id: str) -> str:
    """A stable 64-bit digest of ``(ts, id)``: blake2b-64 in base64, ``DIGEST_CHARS`` characters.

    The same in every process (unlike ``hash``); base64 needs no escaping in JSON.
    """
    raw = blake2b(f"{ts_ms}|{event_id}".encode(), digest_size=8).digest()
    return b2a_base64(raw, newline=False)[:DIGEST_CHARS].decode("ascii")


def _seek(digests: str, digest: str) -> int:
    """Offset in the sorted, concatenated ``digests`` of the first one not below ``digest``."""
    lo, hi = 0, len(digests) // DIGEST_CHARS
    while lo < hi:
        mid = (lo + hi) // 2
        at = mid * DIGEST_CHARS
        if digests[at : at + DIGEST_CHARS] < digest:
            lo = mid + 1
        else:
            hi = mid
    return lo * DIGEST_CHARS


def _order(e: list[Any]) -> tuple[int, str]:
    return (e[0], e[1])


def admit(entry: Entry, item: list[Any]) -> bool:
    """Record a new event ``[ts, id, value, lon, lat]`` in the entry's evidence; False for a repeat.

    The evidence ``ev`` stays the ``EVIDENCE_CAP`` earliest events by ``(ts, id)``. Every other
    event the entry counted (one that never made it into the evidence, or was pushed out of it
    by an earlier one) is remembered by its digest in ``dh``, so a repeat of it is still
    recognised whatever the arrival order.
    """
    evidence: list[list[Any]] = entry["ev"]
    key = (item[0], item[1])
    if len(evidence) >= EVIDENCE_CAP and key > _order(evidence[-1]):  # a busy entry's usual case
        return _remember(entry, event_digest(item[0], item[1]), check=True)
    at = bisect_left(evidence, key, key=_order)
    if at < len(evidence) and _order(evidence[at]) == key:
        return False
    if at < EVIDENCE_CAP:
        # before the evidence's last event, or room left: not among the digests, which are all
        # of events after the evidence's last one
        evidence.insert(at, item)
        if len(evidence) > EVIDENCE_CAP:
            pushed = evidence.pop()
            _remember(entry, event_digest(pushed[0], pushed[1]), check=False)
        return True
    return _remember(entry, event_digest(item[0], item[1]), check=True)


def _remember(entry: Entry, digest: str, *, check: bool) -> bool:
    """Add ``digest`` to the entry's ``dh``; with ``check``, False (and no change) if it is there.

    ``dh`` is one string, the digests concatenated in sorted order, up to ``SPLIT_DIGESTS`` of
    them; beyond, a dict of such strings keyed by the digests' first character (64 of them), so
    that adding one copies a 64th of them. Either way it is a function of the set of digests
    alone (the same whatever the arrival order), and its strings are immutable: a copy of the
    entry shares them, and an update replaces them (the dict too), never changing them in place.
    """
    held: str | dict[str, str] = entry.get("dh", "")
    digests = held if isinstance(held, str) else held.get(digest[0], "")
    at = _seek(digests, digest)
    if check and digests[at : at + DIGEST_CHARS] == digest:
        return False
    digests = digests[:at] + digest + digests[at:]
    if not isinstance(held, str):
        entry["dh"] = {**held, digest[0]: digests}
    elif len(digests) > SPLIT_DIGESTS * DIGEST_CHARS:
        entry["dh"] = _split(digests)
    else:
        entry["dh"] = digests
    return True


def _split(digests: str) -> dict[str, str]:
    """Sorted, concatenated digests as one such string per first character, in sorted order."""
    out: dict[str, list[str]] = {}
    for at in range(0, len(digests), DIGEST_CHARS):
        out.setdefault(digests[at], []).append(digests[at : at + DIGEST_CHARS])
    return {first: "".join(chunk) for first, chunk in out.items()}


def already_applied(entry: Entry, position: tuple[int, int] | None) -> bool:
    """True when the message at ``position`` (partition, offset) was folded in before."""
    if position is None:
        return False
    return int(entry["pos"].get(str(position[0]), -1)) >= position[1]


def mark_applied(entry: Entry, position: tuple[int, int] | None) -> None:
    if position is not None:
        entry["pos"][str(position[0])] = position[1]
