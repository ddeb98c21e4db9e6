"""Replay: the live engine over a file of events, without a broker, in event time."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from rules.columns import EventColumns, Row, row_of
from rules.decode import Rejected, decode_message, decode_one, fast_objects, fast_row
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

    def batches() -> Iterator[EventColumns]:
        rows: list[Row] = []
        sources: list[Any] = []  # per row: the event, or its JSON object (validated when a rule needs it)
        for number, line in enumerate(lines, start=1):
            raw = line.strip()
            if not raw:
                continue
            objects = fast_objects(raw)
            fast = [fast_row(o) for o in objects] if objects is not None else [None]
            if all(r is not None for r in fast) and objects is not None:
                pairs: list[tuple[Row, Any]] = list(zip(fast, objects, strict=True))  # type: ignore[arg-type]
            else:
                decoded = decode_message(raw)
                rejected.extend((number, r) for r in decoded.rejected)
                pairs = [(row_of(e), e) for e in decoded.events]
            for row, source in pairs:
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


def _columns(rows: list[Row], sources: list[Any]) -> EventColumns:
    def event_at(row: int) -> AnyEvent:
        source = sources[row]
        return decode_one(source) if isinstance(source, dict) else source  # type: ignore[no-any-return]

    return EventColumns.from_rows(rows, event_at)


def replay_events(pack: LoadedPack, events: Iterable[AnyEvent], batch_size: int = 1000) -> list[Incident]:
    latest = run(Engine(pack), events, batch_size=batch_size)
    return [latest[k] for k in sorted(latest)]
