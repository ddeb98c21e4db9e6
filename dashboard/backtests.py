"""Backtests from the rules page: a pack file (from the configured directory only) against the live
pack, over the events the store archived for a period, with the same engine as live (``rules.backtest``).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any

from rules.backtest import backtest
from rules.model import Incident
from rules.pack import LoadedPack, load_pack
from sinks.read import StoreReader

logger = logging.getLogger(__name__)

MAP_LIMIT = 3_000


class BacktestRefusedError(Exception):
    """A backtest was not run: a pack file outside the allow-list, or too many events for the dashboard."""


def pack_files(packs_dir: Path) -> list[str]:
    """The pack files a backtest may use: ``*.yaml`` under ``packs_dir``, as paths relative to it."""
    root = packs_dir.resolve()
    if not root.is_dir():
        return []
    return sorted(
        str(p.relative_to(root)) for p in root.rglob("*.yaml") if p.is_file() and p.resolve().is_relative_to(root)
    )


def resolve(packs_dir: Path, choice: str) -> Path:
    """The file of an allow-listed choice. Raises BacktestRefusedError for anything else."""
    if choice not in pack_files(packs_dir):
        raise BacktestRefusedError(f"pack file {choice!r} is not under {packs_dir}")
    return packs_dir.resolve() / choice


@dataclass
class BacktestView:
    """What the rules page shows of a backtest."""

    candidate_file: str
    events: int
    per_rule: list[tuple[str, int, int]]
    hourly: list[dict[str, Any]] = field(default_factory=list)
    candidate_points: list[dict[str, Any]] = field(default_factory=list)
    live_points: list[dict[str, Any]] = field(default_factory=list)

    @property
    def totals(self) -> tuple[int, int]:
        return sum(c for _, c, _ in self.per_rule), sum(live for _, _, live in self.per_rule)


def _hourly(incidents: list[Incident], which: str, tz: tzinfo) -> Counter[tuple[str, str]]:
    return Counter((i.first_event_at.astimezone(tz).strftime("%m-%d %H:00"), which) for i in incidents)


def _points(incidents: list[Incident]) -> list[dict[str, Any]]:
    return [
        {
            "position": [round(i.lon, 6), round(i.lat, 6)],
            "tip_title": i.title,
            "tip_line1": f"{i.rule_id} · {i.subject}",
            "tip_line2": i.first_event_at.isoformat(timespec="seconds"),
        }
        for i in incidents[:MAP_LIMIT]
    ]


def run(
    reader: StoreReader,
    candidate_file: Path,
    live: LoadedPack,
    since: datetime,
    until: datetime,
    *,
    max_events: int,
    tz: tzinfo,
) -> BacktestView:
    """Replay both packs over the archived events of ``[since, until)``.

    Raises:
        BacktestRefusedError: when the period holds more than ``max_events`` events.
        rules.errors.PackError: when the candidate pack is invalid.
        sinks.errors.SinkError: when the store cannot be read.
    """
    candidate = load_pack(candidate_file)
    events = reader.event_count(since, until)
    if events > max_events:
        raise BacktestRefusedError(f"{events} events in the period; the dashboard replays at most {max_events}")
    logger.info("dashboard backtest pack=%s events=%d since=%s until=%s", candidate_file, events, since, until)
    result = backtest(candidate, live, reader.event_payloads(since, until))
    hourly = _hourly(result.candidate, "candidate", tz) + _hourly(result.live, "live", tz)
    return BacktestView(
        candidate_file=str(candidate_file),
        events=result.events,
        per_rule=result.per_rule(),
        hourly=[{"bucket": b, "which": w, "n": n} for (b, w), n in sorted(hourly.items())],
        candidate_points=_points(result.candidate),
        live_points=_points(result.live),
    )
