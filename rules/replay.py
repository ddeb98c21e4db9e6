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

    def parsed() -> Iterator[tuple[list[Row], list[Any]]]:
        """Rows and sources of the events of a chunk of lines at a time, in file order."""
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
                yield _checked(chunk, rejected)
                chunk, size = [], 0
        yield _checked(chunk, rejected)

    def batches() -> Iterator[EventColumns]:
        rows: list[Row] = []
        sources: list[Any] = []  # per row: the event, or its JSON object (validated when a rule needs it)
        for got, got_sources in parsed():
            rows.extend(got)
            sources.extend(got_sources)
            before, counter["n"] = counter["n"], counter["n"] + len(got)
            for step in range(before // 100_000 + 1, counter["n"] // 100_000 + 1):
                if progress is not None:
                    progress(step * 100_000)
            while len(rows) >= batch_size:
                yield _columns(rows[:batch_size], sources[:batch_size])
                rows, sources = rows[batch_size:], sources[batch_size:]
        if rows:
            yield _columns(rows, sources)

    latest = run_columns(Engine(pack), batches())
    return ReplayResult(incidents=[latest[k] for k in sorted(latest)], events=counter["n"], rejected=rejected)


def _checked(
    chunk: list[tuple[int, bytes, list[Any] | None]], rejected: list[tuple[int, Rejected]]
) -> tuple[list[Row], list[Any]]:
    """Rows and sources of the events of some lines, in line order: a line whose every object
    passes ``fast_rows`` gives those objects, any other line goes through ``decode_message``
    (with its rejections)."""
    rows: list[Row] = []
    sources: list[Any] = []
    fast = fast_rows([o for _, _, found in chunk if found is not None for o in found])
    at = 0
    for number, raw, found in chunk:
        if found is not None:
            got = fast[at : at + len(found)]
            at += len(found)
            if None not in got:
                rows.extend(got)  # type: ignore[arg-type]
                sources.extend(found)
                continue
        decoded = decode_message(raw)
        rejected.extend((number, r) for r in decoded.rejected)
        rows.extend(row_of(e) for e in decoded.events)
        sources.extend(decoded.events)
    return rows, sources


def _columns(rows: list[Row], sources: list[Any]) -> EventColumns:
    def event_at(row: int) -> AnyEvent:
        source = sources[row]
        return decode_one(source) if isinstance(source, dict) else source  # type: ignore[no-any-return]

    return EventColumns.from_rows(rows, event_at)


def replay_events(pack: LoadedPack, events: Iterable[AnyEvent], batch_size: int = 1000) -> list[Incident]:
    latest = run(Engine(pack), events, batch_size=batch_size)
    return [latest[k] for k in sorted(latest)]
