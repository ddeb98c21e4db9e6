"""Backtests: run a candidate pack and the live pack over the same stored events, and compare."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from rules.model import Incident
from rules.pack import LoadedPack
from rules.replay import replay


@dataclass
class BacktestResult:
    events: int
    candidate: list[Incident]
    live: list[Incident]
    #: every rule of either pack: a rule that found nothing is listed with 0, not left out
    rule_ids: list[str] = field(default_factory=list)

    def per_rule(self) -> list[tuple[str, int, int]]:
        """(rule id, incidents with the candidate pack, incidents with the live pack), sorted by rule."""
        a = Counter(i.rule_id for i in self.candidate)
        b = Counter(i.rule_id for i in self.live)
        return [(rid, a.get(rid, 0), b.get(rid, 0)) for rid in sorted(set(a) | set(b) | set(self.rule_ids))]

    def lines(self) -> list[str]:
        out = [f"{'rule':40} {'candidate':>10} {'live':>10} {'diff':>8}"]
        for rid, a, b in self.per_rule():
            out.append(f"{rid:40} {a:>10} {b:>10} {a - b:>+8}")
        total_a, total_b = len(self.candidate), len(self.live)
        out.append(f"{'total':40} {total_a:>10} {total_b:>10} {total_a - total_b:>+8}")
        out.append(f"over {self.events} stored events")
        return out


def backtest(candidate: LoadedPack, live: LoadedPack, lines: Iterable[bytes]) -> BacktestResult:
    """Replay both packs over the same events (JSON lines) with the same engine as live."""
    materialised = list(lines)
    a = replay(candidate, materialised)
    b = replay(live, materialised)
    rule_ids = [r.id for pack in (candidate, live) for r in pack.spec.rules]
    return BacktestResult(events=a.events, candidate=a.incidents, live=b.incidents, rule_ids=rule_ids)
