"""`cityops replay`: a JSONL file through the engine, as a rule author runs it."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
from click.testing import CliRunner

from rules.model import Incident
from rules.pack import load_pack
from rules.replay import replay
from streams.cli import main

WUHAN = Path(__file__).resolve().parents[2] / "rules" / "packs" / "wuhan" / "pack.yaml"


def _lines(bad: int) -> list[bytes]:
    pack = load_pack(WUHAN)
    lines = [orjson.dumps(e) for case in pack.spec.tests for e in case.events]
    return lines + [b'{"id": "bad-%d", "kind": "reading"}' % n for n in range(bad)]


def test_replay_writes_the_incidents_and_says_what_it_rejected(tmp_path: Path) -> None:
    lines = _lines(bad=25)
    source = tmp_path / "events.jsonl"
    source.write_bytes(b"\n".join(lines) + b"\n")
    out = tmp_path / "incidents.jsonl"

    result = CliRunner().invoke(main, ["replay", str(source), "--pack", str(WUHAN), "--out", str(out)])

    assert result.exit_code == 0, result.output
    written = [Incident.model_validate_json(line) for line in out.read_text().splitlines()]
    expected = replay(load_pack(WUHAN), lines)
    assert written == expected.incidents
    assert written, "the Wuhan pack's test events open incidents"
    shown = re.findall(rf"{re.escape(str(source))}:(\d+): rejected: ", result.stderr)
    first_bad = len(lines) - 25 + 1
    assert [int(n) for n in shown] == list(range(first_bad, first_bad + 20))
    assert "... and 5 more rejected records" in result.stderr
    summary = re.search(
        r"replayed (\d+) events -> (\d+) incidents \((\d+) rejected\) in [\d.]+ s \(([\d,]+) events/s\)", result.stderr
    )
    assert summary is not None, result.stderr
    assert (int(summary[1]), int(summary[2]), int(summary[3])) == (expected.events, len(written), 25)


def test_replay_prints_the_incidents_on_stdout_and_no_rejections_when_there_are_none(tmp_path: Path) -> None:
    lines = _lines(bad=0)
    source = tmp_path / "events.jsonl"
    source.write_bytes(b"\n".join(lines))

    result = CliRunner().invoke(main, ["replay", str(source), "--pack", str(WUHAN)])

    assert result.exit_code == 0, result.output
    printed = [Incident.model_validate_json(line) for line in result.stdout.splitlines()]
    assert printed == replay(load_pack(WUHAN), lines).incidents
    assert "rejected: " not in result.stderr and "more rejected" not in result.stderr
