"""Pack tests in the promtool style: every pack's own cases pass, and every rule has one."""

from __future__ import annotations

from pathlib import Path

import pytest

from rules.pack import load_pack
from rules.testing import run_pack_tests, untested_rules

PACKS_DIR = Path(__file__).resolve().parents[2] / "rules" / "packs"
PACKS = sorted(PACKS_DIR.glob("*/pack.yaml"))
DISTRICTS = PACKS_DIR / "wuhan" / "layers" / "districts.geojson"

HEAD = f"""\
pack: demo
version: "1"
layers:
  districts: {{file: {DISTRICTS}}}
rules:
  - id: flood.high
    kind: threshold
    title: Water high
    category: flood
    layer: districts
    match: {{kind: reading, metric: water_level_cm}}
    value: 30
  - id: dumping.many
    kind: window
    title: Dumping
    category: sanitation
    layer: districts
    match: {{kind: report, category: illegal_dumping}}
    window: 10m
    value: 2
tests:
"""
FLOOD_CASE = """\
  - name: two readings above 30 cm
    events:
      - {kind: reading, id: a, ts: "2026-07-01T08:00:00+08:00", lon: 114.30, lat: 30.60, sensor_id: wl-1,
         metric: water_level_cm, value: 42}
      - {kind: reading, id: b, ts: "2026-07-01T08:01:00+08:00", lon: 114.30, lat: 30.60, sensor_id: wl-1,
         metric: water_level_cm, value: 45}
    expect:
      - {rule: flood.high, subject: wl-1, zone_id: "420102", count: EXPECTED_COUNT}
"""
DUMPING_CASE = """\
  - name: two dumping reports
    events:
      - {kind: report, id: d1, ts: "2026-07-01T10:00:10+08:00", lon: 114.35, lat: 30.50, category: illegal_dumping}
      - {kind: report, id: d2, ts: "2026-07-01T10:03:00+08:00", lon: 114.34, lat: 30.51, category: illegal_dumping}
    expect:
      - {rule: dumping.many, zone_id: "420111", count: 2, severity: medium}
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pack.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_there_is_at_least_the_wuhan_pack() -> None:
    assert PACKS_DIR / "wuhan" / "pack.yaml" in PACKS


@pytest.mark.parametrize("path", PACKS, ids=lambda p: p.parent.name)
def test_every_case_of_every_pack_passes(path: Path) -> None:
    results = run_pack_tests(load_pack(path))
    assert results
    assert [(r.name, r.problems) for r in results if not r.ok] == []


@pytest.mark.parametrize("path", PACKS, ids=lambda p: p.parent.name)
def test_every_rule_of_every_pack_has_a_test_that_fires_it(path: Path) -> None:
    assert untested_rules(load_pack(path)) == []


@pytest.mark.parametrize("path", PACKS, ids=lambda p: p.parent.name)
def test_every_pack_has_a_case_that_expects_no_incident(path: Path) -> None:
    assert any(not case.expect for case in load_pack(path).spec.tests)


def test_the_wuhan_pack_runs_all_its_cases_the_original_seven_first() -> None:
    pack = load_pack(PACKS_DIR / "wuhan" / "pack.yaml")
    results = run_pack_tests(pack)
    assert len(results) == len(pack.spec.tests) == 29
    assert all(r.ok and r.problems == [] for r in results)
    assert results[1].name == "exactly 30 cm is not above the threshold"
    assert results[6].name == "a drone at 150 m opens an airspace incident"
    assert sum(1 for case in pack.spec.tests if not case.expect) >= 8  # cases that expect no incident at all


def test_a_correct_expectation_passes(tmp_path: Path) -> None:
    pack = load_pack(_write(tmp_path, HEAD + FLOOD_CASE.replace("EXPECTED_COUNT", "2") + DUMPING_CASE))
    assert [(r.name, r.ok, r.problems) for r in run_pack_tests(pack)] == [
        ("two readings above 30 cm", True, []),
        ("two dumping reports", True, []),
    ]


def test_a_wrong_expected_count_fails_and_says_what_was_expected_and_what_fired(tmp_path: Path) -> None:
    pack = load_pack(_write(tmp_path, HEAD + FLOOD_CASE.replace("EXPECTED_COUNT", "3") + DUMPING_CASE))
    flood, dumping = run_pack_tests(pack)
    assert not flood.ok
    assert flood.problems == [
        "expected {'rule': 'flood.high', 'subject': 'wl-1', 'zone_id': '420102', 'count': 3} "
        "but its incident has count 2"
    ]
    assert dumping.ok


def test_an_incident_of_the_expected_rule_that_differs_is_reported_once_with_what_differs(tmp_path: Path) -> None:
    case = FLOOD_CASE.replace("EXPECTED_COUNT", "2").replace("subject: wl-1,", "subject: wl-9, severity: high,")
    [result] = run_pack_tests(load_pack(_write(tmp_path, HEAD + case)))
    assert result.problems == [
        "expected {'rule': 'flood.high', 'subject': 'wl-9', 'zone_id': '420102', 'count': 2, 'severity': 'high'} "
        "but its incident has subject 'wl-1', severity 'medium'"
    ]


def test_an_expected_status_is_compared(tmp_path: Path) -> None:
    case = FLOOD_CASE.replace("EXPECTED_COUNT", "2")
    [ok] = run_pack_tests(load_pack(_write(tmp_path, HEAD + case.replace("count: 2}", "count: 2, status: open}"))))
    assert ok.ok
    resolved = case.replace("count: 2}", "count: 2, status: resolved}")
    [result] = run_pack_tests(load_pack(_write(tmp_path, HEAD + resolved)))
    assert result.problems == [
        "expected {'rule': 'flood.high', 'subject': 'wl-1', 'zone_id': '420102', 'count': 2, 'status': 'resolved'} "
        "but its incident has status 'open'"
    ]


def test_an_incident_nobody_expected_fails_the_case(tmp_path: Path) -> None:
    case = FLOOD_CASE.replace("EXPECTED_COUNT", "2").replace(
        '    expect:\n      - {rule: flood.high, subject: wl-1, zone_id: "420102", count: 2}\n', "    expect: []\n"
    )
    assert "expect: []" in case
    [result] = run_pack_tests(load_pack(_write(tmp_path, HEAD + case)))
    assert not result.ok
    assert result.problems == [
        "unexpected incident rule=flood.high subject=wl-1 zone_id=420102 count=2 severity=medium status=open"
    ]


def test_an_expected_incident_that_does_not_fire_fails_the_case(tmp_path: Path) -> None:
    case = DUMPING_CASE + "      - {rule: flood.high, severity: medium}\n"
    [result] = run_pack_tests(load_pack(_write(tmp_path, HEAD + case)))
    assert not result.ok
    assert result.problems == ["expected {'rule': 'flood.high', 'severity': 'medium'} but it did not fire"]


def test_an_invalid_test_event_fails_the_case_and_names_it(tmp_path: Path) -> None:
    case = FLOOD_CASE.replace("EXPECTED_COUNT", "2").replace(
        'id: b, ts: "2026-07-01T08:01:00+08:00", lon: 114.30, lat: 30.60',
        'id: b, ts: "2026-07-01T08:01:00+08:00", lon: 114.30, lat: 95',
    )
    assert "lat: 95" in case
    [result, _] = run_pack_tests(load_pack(_write(tmp_path, HEAD + case + DUMPING_CASE)))
    assert not result.ok
    assert result.problems[0] == "event #1 is invalid: Input should be less than or equal to 90"


def test_untested_rules_flags_a_rule_that_no_case_expects_to_fire(tmp_path: Path) -> None:
    pack = load_pack(_write(tmp_path, HEAD + FLOOD_CASE.replace("EXPECTED_COUNT", "2")))
    assert untested_rules(pack) == ["dumping.many"]
    pack = load_pack(_write(tmp_path, HEAD + "  []\n"))
    assert untested_rules(pack) == ["flood.high", "dumping.many"]
