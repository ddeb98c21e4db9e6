"""Replay: the live engine over a file of events, without a broker, in event time."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from rules.decode import Rejected, decode_message
from rules.engine import AnyEvent, Engine, run
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

    Returns the final snapshot of every incident, sorted by id.
    """
    rejected: list[tuple[int, Rejected]] = []
    counter = {"n": 0}

    def events() -> Iterable[AnyEvent]:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            decoded = decode_message(line.strip())
            rejected.extend((number, r) for r in decoded.rejected)
            for event in decoded.events:
                counter["n"] += 1
                if progress is not None and counter["n"] % 100_000 == 0:
                    progress(counter["n"])
                yield event

    latest = run(Engine(pack), events(), batch_size=batch_size)
    return ReplayResult(incidents=[latest[k] for k in sorted(latest)], events=counter["n"], rejected=rejected)


def replay_events(pack: LoadedPack, events: Iterable[AnyEvent], batch_size: int = 1000) -> list[Incident]:
    latest = run(Engine(pack), events, batch_size=batch_size)
    return [latest[k] for k in sorted(latest)]
