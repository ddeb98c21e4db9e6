"""Backtests: both packs over the same events, with every rule of either pack in the table."""

from __future__ import annotations

from pathlib import Path

import orjson

from rules.backtest import backtest
from rules.pack import load_pack
from rules.replay import replay

WUHAN = Path(__file__).resolve().parents[2] / "rules" / "packs" / "wuhan" / "pack.yaml"


def test_every_rule_is_listed_also_when_it_found_nothing() -> None:
    pack = load_pack(WUHAN)
    lines = [orjson.dumps(e) for case in pack.spec.tests for e in case.events][:40]
    result = backtest(pack, pack, lines)

    found = {i.rule_id for i in replay(pack, lines).incidents}
    rows = {rid: (a, b) for rid, a, b in result.per_rule()}
    assert set(rows) == {r.id for r in pack.spec.rules}
    silent = set(rows) - found
    assert silent, "some rules of the pack find nothing in these events"
    assert all(rows[rid] == (0, 0) for rid in silent)
    assert all(rows[rid][0] > 0 for rid in found)
    table = result.lines()
    assert any(line.split() == [rid, "0", "0", "+0"] for rid in silent for line in table)
    assert table[-1] == f"over {result.events} stored events"
