"""rules.diff: what a new pack adds, removes and changes, and versions that did not move."""

from __future__ import annotations

from pathlib import Path

from rulekit import layer, square

from rules.diff import diff_packs
from rules.pack import LoadedPack, parse_pack

RULES = """\
  - {id: water.high, version: 2, kind: threshold, title: Water high, category: flood, layer: zones,
     match: {kind: reading, metric: water_level_cm}, value: 30}
  - {id: dumping, kind: window, title: Dumping, category: sanitation, layer: zones,
     match: {kind: report, category: illegal_dumping}, window: 10m, value: 3}
"""


def _pack(rules: str = RULES, version: str = "1", x0: float = 0.0) -> LoadedPack:
    text = f'pack: t\nversion: "{version}"\nlayers:\n  zones: {{file: unused.geojson}}\nrules:\n{rules}'
    zones = layer("zones", [square("A", x0), square("B", x0 + 1)])
    return LoadedPack(spec=parse_pack(text, "t.yaml"), path=Path("t.yaml"), layers={"zones": zones}, digest=version)


def test_the_same_pack_has_no_changes_and_no_warnings() -> None:
    result = diff_packs(_pack(), _pack())
    assert result.empty
    assert result.lines() == ["pack version 1 -> 1", "no rule changes"]


def test_added_removed_and_changed_rules_with_the_fields_that_changed() -> None:
    new = RULES.replace("metric: water_level_cm}, value: 30", "metric: water_depth_cm}, value: 35")
    new = new.replace("version: 2,", "version: 3,").replace("id: dumping,", "id: dumping.reports,")
    result = diff_packs(_pack(), _pack(new, version="2"))
    assert result.lines() == [
        "pack version 1 -> 2",
        "+ dumping.reports",
        "- dumping",
        "~ water.high: match.metric: 'water_level_cm' -> 'water_depth_cm', value: 30.0 -> 35.0, version: 2 -> 3",
    ]
    assert result.warnings == []


def test_a_change_that_keeps_the_versions_is_flagged() -> None:
    result = diff_packs(_pack(), _pack(RULES.replace("value: 30", "value: 25")))
    assert result.changed == {"water.high": ["value: 30.0 -> 25.0"]}
    assert result.warnings == [
        "warning: the pack version is still 1: incidents of both packs will carry the same pack_version",
        "warning: rule water.high changed but kept version 2: its incidents will carry the same rule_version",
    ]
    assert result.lines()[-2:] == result.warnings


def test_a_moved_zone_is_a_changed_layer() -> None:
    result = diff_packs(_pack(), _pack(version="2", x0=0.5))
    assert (result.layers_changed, result.changed, result.empty) == (["zones"], {}, False)
    assert result.lines() == ["pack version 1 -> 2", "~ layer zones"]
