"""Replay: the live engine over a file of events, without a broker, in event time."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from rules.columns import EventColumns, Row, row_of
from rules.decode import Rejected, decode_message, decode_one, fast_objects, fast_rows
from rules.engine import AnyEvent, Engine, run, run_columns
from rules.model import Incident
from rules.pack import LoadedPack

logger = logging.getLogger(__name__)


@dataclass
class ReplayResult:
    incidents: list[Incident]
    events: int
    rejected: list[tuple[int, Rejected]] = field(default_factory=list)


def replay(
    pack: LoadedPack,
    lines: Iterable[bytes],
    *,
    batch_size: int = 1000,
    progress: Callable[[int], None] | None = None,
) -> ReplayResult:
    """Run every JSON line (an event, a list, or an envelope) through a fresh engine.

    Lines are decoded straight into column batches of ``batch_size`` events: plainly valid objects
    without pydantic (``fast_row``), anything else through ``decode_message``, so rejections are
    exactly those of the live ingest. Returns the final snapshot of every incident, sorted by id.
    """
    rejected: list[tuple[int, Rejected]] = []
    counter = {"n": 0}

    def parsed() -> Iterator[tuple[Row, Any]]:
        """(row, source) of every event in file order; lines are checked a chunk at a time."""
        chunk: list[tuple[int, bytes, list[Any] | None]] = []
        size = 0
        for number, line in enumerate(lines, start=1):
            raw = line.strip()
            if not raw:
                continue
            objects = fast_objects(raw)
            chunk.append((number, raw, objects))
            size += len(objects) if objects is not None else 1
            if size >= batch_size:
                yield from _checked(chunk, rejected)
                chunk, size = [], 0
        yield from _checked(chunk, rejected)

    def batches() -> Iterator[EventColumns]:
        rows: list[Row] = []
        sources: list[Any] = []  # per row: the event, or its JSON object (validated when a rule needs it)
        for row, source in parsed():
            rows.append(row)
            sources.append(source)
            counter["n"] += 1
            if progress is not None and counter["n"] % 100_000 == 0:
                progress(counter["n"])
            if len(rows) >= batch_size:
                yield _columns(rows, sources)
                rows, sources = [], []
        if rows:
            yield _columns(rows, sources)

    latest = run_columns(Engine(pack), batches())
    return ReplayResult(incidents=[latest[k] for k in sorted(latest)], events=counter["n"], rejected=rejected)


def _checked(
    chunk: list[tuple[int, bytes, list[Any] | None]], rejected: list[tuple[int, Rejected]]
) -> Iterator[tuple[Row, Any]]:
    """The events of some lines: a line whose every object passes ``fast_rows`` as rows of those
    objects, any other line through ``decode_message`` (with its rejections), in line order."""
    objects = [o for _, _, found in chunk if found is not None for o in found]
    fast = iter(fast_rows(objects))
    for number, raw, found in chunk:
        rows = [next(fast) for _ in found] if found is not None else [None]
        if found is not None and all(r is not None for r in rows):
            yield from zip(rows, found, strict=True)  # type: ignore[misc]
            continue
        decoded = decode_message(raw)
        rejected.extend((number, r) for r in decoded.rejected)
        for event in decoded.events:
            yield row_of(event), event


def _columns(rows: list[Row], sources: list[Any]) -> EventColumns:
    def event_at(row: int) -> AnyEvent:
        source = sources[row]
        return decode_one(source) if isinstance(source, dict) else source  # type: ignore[no-any-return]

    return EventColumns.from_rows(rows, event_at)


def replay_events(pack: LoadedPack, events: Iterable[AnyEvent], batch_size: int = 1000) -> list[Incident]:
    latest = run(Engine(pack), events, batch_size=batch_size)
    return [latest[k] for k in sorted(latest)]
