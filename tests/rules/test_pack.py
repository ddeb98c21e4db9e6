"""Rule packs: the Wuhan pack loads, and every problem is reported as ``file:line: message``."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from rules.crs import CRS
from rules.errors import PackError
from rules.pack import Pack, ThresholdRule, WindowRule, load_pack, parse_pack

WUHAN = Path(__file__).resolve().parents[2] / "rules" / "packs" / "wuhan" / "pack.yaml"
ADCODES = {
    "420102",
    "420103",
    "420104",
    "420105",
    "420106",
    "420107",
    "420111",
    "420112",
    "420113",
    "420114",
    "420115",
    "420116",
    "420117",
}

# Line numbers matter below: this header is lines 1-6, the first rule starts on line 7.
HEAD = """\
pack: demo
version: "1"
layers:
  zones:
    file: zones.geojson
rules:
"""
THRESHOLD = """\
  - id: {rid}
    kind: threshold
    title: Water high
    category: flood
    layer: zones
    value: 30
"""


def _problems(text: str) -> list[str]:
    with pytest.raises(PackError) as info:
        parse_pack(text, "demo.yaml")
    assert str(info.value) == "\n".join(info.value.problems)
    return info.value.problems


def _square(zone_id: str, x0: float) -> dict[str, object]:
    ring = [[x0, 0.0], [x0 + 1, 0.0], [x0 + 1, 1.0], [x0, 1.0], [x0, 0.0]]
    return {
        "type": "Feature",
        "properties": {"zone_id": zone_id, "name": f"Zone {zone_id}"},
        "geometry": {"type": "Polygon", "coordinates": [ring]},
    }


def _write_pack(tmp_path: Path, text: str) -> Path:
    (tmp_path / "zones.geojson").write_text(
        json.dumps({"type": "FeatureCollection", "features": [_square("A", 0.0), _square("B", 1.0)]})
    )
    path = tmp_path / "pack.yaml"
    path.write_text(text)
    return path


# -- the Wuhan pack ----------------------------------------------------------------------------


def test_the_wuhan_pack_loads_with_its_rules_and_the_13_districts() -> None:
    pack = load_pack(WUHAN)
    assert pack.spec.pack == "wuhan"
    assert pack.version == "2026.11.2"
    assert [r.id for r in pack.spec.rules] == [
        "flood.water-level-high",
        "air.pm25-very-high",
        "sanitation.dumping-reports",
        "flood.waterlogging-reports",
        "airspace.drone-too-high",
        "flood.water-level-sustained",
        "flood.waterlogging-confirmed",
        "air.pm25-hourly-district",
        "air.pm25-near-school",
        "noise.night-sustained",
        "sanitation.dumping-cluster",
        "airspace.drone-no-fly-entry",
        "mobility.robotaxi-stalled",
        "ops.sensor-silence",
        "infra.manhole-tilt",
    ]
    assert [getattr(r, "kind", None) for r in pack.spec.rules][5:] == [
        "sustained",
        "correlation",
        "window",
        "proximity",
        "sustained",
        "cluster",
        "geofence",
        "geofence",
        "silence",
        "threshold",
    ]
    assert set(pack.layers) == {"districts", "schools", "no_fly", "stop_zones"}
    assert set(pack.layers["districts"].ids) == ADCODES
    assert pack.layers["districts"].name_of("420102") == "江岸区"
    assert pack.spec.allowed_lateness == timedelta(hours=1)
    assert len(pack.digest) == 12
    assert int(pack.digest, 16) >= 0


def test_the_wuhan_pack_rules_parse_to_their_kinds_with_durations() -> None:
    rules = {r.id: r for r in load_pack(WUHAN).spec.rules}
    flood = rules["flood.water-level-high"]
    assert isinstance(flood, ThresholdRule)
    assert flood.dedup == timedelta(minutes=15)
    assert (flood.op, flood.value, flood.field) == (">", 30.0, "value")
    dumping = rules["sanitation.dumping-reports"]
    assert isinstance(dumping, WindowRule)
    assert dumping.window == timedelta(minutes=10)
    assert rules["airspace.drone-too-high"].layer is None


def test_the_pack_digest_changes_with_the_text(tmp_path: Path) -> None:
    text = WUHAN.read_text(encoding="utf-8").replace("file: layers/", f"file: {WUHAN.parent / 'layers'}/")
    first = tmp_path / "a.yaml"
    first.write_text(text, encoding="utf-8")
    second = tmp_path / "b.yaml"
    second.write_text(text + "\n# comment\n", encoding="utf-8")
    assert load_pack(first).digest == load_pack(first).digest
    assert load_pack(first).digest != load_pack(second).digest


def test_omitted_durations_default_to_a_10m_dedup_and_1h_lateness_as_timedeltas() -> None:
    pack = parse_pack(HEAD + THRESHOLD.format(rid="water.high"), "demo.yaml")
    rule = pack.rules[0]
    assert isinstance(rule, ThresholdRule)
    assert rule.dedup == timedelta(minutes=10)
    assert pack.allowed_lateness == timedelta(hours=1)
    assert pack.model_dump(mode="json")["allowed_lateness"] == "1h"


# -- file:line: messages -----------------------------------------------------------------------


def test_a_valid_inline_pack_parses() -> None:
    pack = parse_pack(HEAD + THRESHOLD.format(rid="water.high"), "demo.yaml")
    assert isinstance(pack, Pack)
    assert pack.rules[0].id == "water.high"


def test_an_unknown_layer_is_reported_on_the_layer_line() -> None:
    text = HEAD + THRESHOLD.format(rid="water.high").replace("layer: zones", "layer: districts")
    assert _problems(text) == [
        "demo.yaml:11: rules[0].layer: rule 'water.high' uses unknown layer 'districts' (known: zones)"
    ]


# -- fields a rule reads (rules.fields) ------------------------------------------------------------


def test_an_unknown_field_is_reported_on_its_line_with_the_fields_that_exist() -> None:
    text = HEAD + THRESHOLD.format(rid="water.high") + "    field: valu\n"
    assert _problems(text) == [
        "demo.yaml:13: rules[0].field: rule 'water.high' reads unknown numeric field 'valu' "
        "(event numeric fields: alt_m, heading, lat, lon, speed_mps, value)"
    ]


def test_a_field_the_rules_events_do_not_have_is_reported_on_the_rule() -> None:
    # a threshold over reports compares 'value' by default: reports have none, so it never fires
    text = HEAD + THRESHOLD.format(rid="dumping.many") + "    match: {kind: report, category: illegal_dumping}\n"
    assert _problems(text) == [
        "demo.yaml:7: rules[0].field: rule 'dumping.many' reads numeric field 'value', "
        "which its reports do not have (theirs: lat, lon)"
    ]


def test_a_metric_means_readings_so_a_track_field_is_refused_in_when() -> None:
    rule = THRESHOLD.format(rid="water.high") + "    match: {metric: water_level_cm}\n"
    text = HEAD + rule + '    when: [{field: speed_mps, op: ">", value: 1}]\n'
    assert _problems(text) == [
        "demo.yaml:14: rules[0].when[0].field: rule 'water.high' reads numeric field 'speed_mps', "
        "which its readings do not have (theirs: lat, lon, value)"
    ]


@pytest.mark.parametrize(
    ("lines", "where", "problem"),
    [
        (
            'kind: sustained\n    for: 5m\n    close: {field: alt_m, op: "<", value: 20}',
            "rules[0].close.field",
            "reads numeric field 'alt_m', which its readings do not have",
        ),
        (
            "kind: window\n    window: 10m\n    group_by: zone\n    aggregate: distinct\n    distinct_field: colour",
            "rules[0].distinct_field",
            "reads unknown field 'colour'",
        ),
        (
            "kind: window\n    window: 10m\n    group_by: zone\n    aggregate: avg\n    field: heading",
            "rules[0].field",
            "reads numeric field 'heading', which its readings do not have",
        ),
    ],
)
def test_sustained_close_and_window_fields_are_checked(lines: str, where: str, problem: str) -> None:
    rule = THRESHOLD.format(rid="water.high").replace("kind: threshold", lines)
    text = HEAD + rule + "    match: {kind: reading, metric: water_level_cm}\n"
    [found] = _problems(text)
    assert f" {where}: rule 'water.high' {problem}" in found


def test_rules_that_do_without_a_field_still_load() -> None:
    # a count over reports never reads 'value'; a distinct count of categories; a threshold on alt_m
    # with no kind (tracks have it); proximity reports a value only when an event has one
    rules = """\
  - {id: a, kind: window, title: A, category: c, layer: zones, match: {kind: report}, window: 10m, value: 3}
  - {id: b, kind: window, title: B, category: c, layer: zones, match: {kind: report}, window: 10m, value: 3,
     aggregate: distinct, distinct_field: category}
  - {id: c, kind: threshold, title: C, category: c, field: alt_m, value: 120}
  - {id: d, kind: proximity, title: D, category: c, match: {kind: report}, near: zones, distance_m: 100}
"""
    pack = parse_pack(HEAD + rules, "demo.yaml")
    assert [r.id for r in pack.rules] == ["a", "b", "c", "d"]


def test_proximity_refuses_only_an_unknown_field() -> None:
    rule = "  - {id: d, kind: proximity, title: D, category: c, near: zones, distance_m: 100, field: valeu}\n"
    [found] = _problems(HEAD + rule)
    assert "rule 'd' reads unknown numeric field 'valeu'" in found


def test_a_correlation_reads_its_iot_field_from_readings() -> None:
    rule = (
        "  - {id: w, kind: correlation, title: W, category: flood, categories: [waterlogging], radius_m: 500,\n"
        "     within: 30m, iot: {metric: water_level_cm, field: speed_mps, value: 30}}\n"
    )
    [found] = _problems(HEAD + rule)
    assert "rules[0].iot.field: rule 'w' reads numeric field 'speed_mps', which its readings do not have" in found


def test_a_bad_duration_is_reported_on_its_line_with_the_rule_id() -> None:
    text = HEAD + THRESHOLD.format(rid="water.high") + "    dedup: 90x\n"
    assert _problems(text) == [
        "demo.yaml:13: rule 'water.high' rules[0].dedup: '90x' is not a duration (e.g. '30s', '15m', '1h30m', '2d')"
    ]


def test_a_bare_number_duration_is_reported_on_its_line() -> None:
    text = HEAD + THRESHOLD.format(rid="water.high") + "    dedup: 90\n"
    assert _problems(text) == [
        "demo.yaml:13: rule 'water.high' rules[0].dedup: 90 has no unit: write it as a duration such as '90s' or '15m'"
    ]


def test_a_bad_window_duration_is_reported_on_the_window_line() -> None:
    text = HEAD + (
        "  - id: dumping\n"  # 7
        "    kind: window\n"  # 8
        "    title: Dumping\n"  # 9
        "    category: sanitation\n"  # 10
        "    layer: zones\n"  # 11
        "    value: 3\n"  # 12
        "    window: 10 minutes\n"  # 13
    )
    assert _problems(text) == [
        "demo.yaml:13: rule 'dumping' rules[0].window: '10 minutes' is not a duration "
        "(e.g. '30s', '15m', '1h30m', '2d')"
    ]


def test_a_too_long_duration_is_a_pack_error_not_a_crash() -> None:
    text = HEAD + THRESHOLD.format(rid="water.high") + "    dedup: 99999999999999d\n"
    assert _problems(text) == [
        "demo.yaml:13: rule 'water.high' rules[0].dedup: '99999999999999d' is too long (the limit is 999999999d)"
    ]


def test_an_unknown_rule_kind_is_reported_on_the_kind_line() -> None:
    text = HEAD + THRESHOLD.format(rid="water.high").replace("kind: threshold", "kind: parade")
    assert _problems(text) == [
        "demo.yaml:8: rule 'water.high' rules[0]: unknown rule kind 'parade' "
        "(expected one of: threshold, window, sustained, cluster, geofence, proximity, correlation, silence)"
    ]


def test_a_missing_rule_kind_is_reported_on_the_rule_line() -> None:
    text = HEAD + THRESHOLD.format(rid="water.high").replace("    kind: threshold\n", "")
    assert _problems(text) == [
        "demo.yaml:7: rule 'water.high' rules[0]: missing 'kind' "
        "(expected one of: threshold, window, sustained, cluster, geofence, proximity, correlation, silence)"
    ]


def test_an_unknown_field_in_a_threshold_rule_is_reported_on_its_line() -> None:
    text = HEAD + THRESHOLD.format(rid="water.high") + "    for: 5m\n"
    assert _problems(text) == ["demo.yaml:13: rule 'water.high' rules[0].for: Extra inputs are not permitted"]


def test_an_unknown_field_in_a_window_rule_is_reported_on_its_line_not_the_window_line() -> None:
    text = HEAD + (
        "  - id: dumping\n"  # 7
        "    kind: window\n"  # 8
        "    window: 10m\n"  # 9
        "    title: Dumping\n"  # 10
        "    category: sanitation\n"  # 11
        "    layer: zones\n"  # 12
        "    value: 3\n"  # 13
        "    dedup: 5m\n"  # 14
    )
    assert _problems(text) == ["demo.yaml:14: rule 'dumping' rules[0].dedup: Extra inputs are not permitted"]


def test_an_unknown_top_level_field_is_reported_on_its_line() -> None:
    text = HEAD.replace("layers:", "owner: ops\nlayers:") + THRESHOLD.format(rid="water.high")
    assert _problems(text) == ["demo.yaml:3: owner: Extra inputs are not permitted"]


def test_an_unknown_match_field_is_reported_on_its_line() -> None:
    text = HEAD + THRESHOLD.format(rid="water.high") + "    match:\n      kind: reading\n      sensor: wl-1\n"
    assert _problems(text) == ["demo.yaml:15: rule 'water.high' rules[0].match.sensor: Extra inputs are not permitted"]


def test_a_duplicate_rule_id_is_reported_on_the_second_id_line() -> None:
    text = HEAD + THRESHOLD.format(rid="water.high") + THRESHOLD.format(rid="water.high")
    assert _problems(text) == ["demo.yaml:13: rules[1].id: rule id 'water.high' is used twice"]


def test_a_window_rule_without_a_layer_is_reported_on_the_rule_line() -> None:
    text = (
        HEAD
        + THRESHOLD.format(rid="water.high")
        + (
            "  - id: dumping\n"  # 13
            "    kind: window\n"  # 14
            "    window: 10m\n"  # 15
            "    title: Dumping\n"  # 16
            "    category: sanitation\n"  # 17
            "    value: 3\n"  # 18
        )
    )
    assert _problems(text) == ["demo.yaml:13: rule 'dumping' rules[1]: a window rule grouped by zone needs a 'layer'"]


def test_a_test_expecting_an_unknown_rule_is_reported_on_its_line() -> None:
    text = (
        HEAD
        + THRESHOLD.format(rid="water.high")
        + (
            "tests:\n"  # 13
            "  - name: nothing\n"  # 14
            "    events: []\n"  # 15
            "    expect:\n"  # 16
            "      - {rule: water.low}\n"  # 17
        )
    )
    assert _problems(text) == ["demo.yaml:17: tests[0].expect[0].rule: test 'nothing' expects unknown rule 'water.low'"]


def test_a_bad_rule_id_is_reported_on_its_line() -> None:
    text = HEAD + THRESHOLD.format(rid="Water High")
    problems = _problems(text)
    assert len(problems) == 1
    assert problems[0].startswith("demo.yaml:7: rule 'Water High' rules[0].id: String should match pattern")


def test_several_problems_are_all_reported_each_with_its_line() -> None:
    text = HEAD + THRESHOLD.format(rid="water.high") + "    dedup: 90x\n    severity: urgent\n"
    problems = _problems(text)
    by_line = {p.split(": ", 1)[0]: p for p in problems}
    assert sorted(by_line) == ["demo.yaml:13", "demo.yaml:14"]
    assert "rules[0].dedup" in by_line["demo.yaml:13"]
    assert "rules[0].severity" in by_line["demo.yaml:14"]


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("pack: demo\n  version: 1\n", 2),
        ("pack: demo\nversion: '1'\nrules:\n  - id: a\n   kind: threshold\n", 5),
        ("pack: demo\nrules: [\n  {id: a}\n  {id: b}\n]\n", 4),
        ("pack: demo\n\tversion: 1\n", 2),
    ],
)
def test_invalid_yaml_is_reported_with_its_line(text: str, line: int) -> None:
    problems = _problems(text)
    assert len(problems) == 1
    assert problems[0].startswith(f"demo.yaml:{line}: not valid YAML: ")


@pytest.mark.parametrize("text", ["", "- a\n- b\n", "just text\n"])
def test_a_document_that_is_not_a_mapping_is_reported_on_line_1(text: str) -> None:
    assert _problems(text) == ["demo.yaml:1: a rule pack is a YAML mapping with 'pack', 'version' and 'rules'"]


# -- load_pack: files and layers ---------------------------------------------------------------


def test_load_pack_indexes_the_layers_next_to_the_pack(tmp_path: Path) -> None:
    pack = load_pack(_write_pack(tmp_path, HEAD + THRESHOLD.format(rid="water.high")))
    assert pack.layers["zones"].ids == ("A", "B")
    assert pack.path == tmp_path / "pack.yaml"


def test_a_missing_pack_file_is_a_pack_error(tmp_path: Path) -> None:
    with pytest.raises(PackError) as info:
        load_pack(tmp_path / "nope.yaml")
    assert info.value.problems[0].startswith(f"{tmp_path / 'nope.yaml'}:1: cannot read rule pack")


def test_a_missing_layer_file_is_reported_on_the_file_line(tmp_path: Path) -> None:
    path = _write_pack(tmp_path, HEAD.replace("zones.geojson", "missing.geojson") + THRESHOLD.format(rid="w"))
    with pytest.raises(PackError) as info:
        load_pack(path)
    assert len(info.value.problems) == 1
    assert info.value.problems[0].startswith(f"{path}:5: layer 'zones': cannot read ")


def test_unknown_zone_ids_in_a_match_are_reported_on_the_zones_line(tmp_path: Path) -> None:
    text = HEAD + THRESHOLD.format(rid="water.high") + "    match: {kind: reading, zones: [A, C, D]}\n"
    path = _write_pack(tmp_path, text)
    with pytest.raises(PackError) as info:
        load_pack(path)
    assert info.value.problems == [f"{path}:13: rule 'water.high': unknown zones ['C', 'D'] in layer 'zones'"]


@pytest.mark.parametrize("spelling", ["GCJ02", "gcj-02", "Gcj_02"])
def test_a_layer_crs_accepts_common_spellings(tmp_path: Path, spelling: str) -> None:
    text = HEAD.replace("    file: zones.geojson\n", f"    file: zones.geojson\n    crs: {spelling}\n")
    pack = load_pack(_write_pack(tmp_path, text + THRESHOLD.format(rid="w")))
    assert pack.spec.layers["zones"].crs is CRS.GCJ02


def test_an_unknown_crs_is_reported_on_its_line() -> None:
    text = HEAD.replace("    file: zones.geojson\n", "    file: zones.geojson\n    crs: EPSG3857\n")
    problems = _problems(text + THRESHOLD.format(rid="w"))
    assert len(problems) == 1
    assert problems[0].startswith("demo.yaml:6: layers.zones.crs: Input should be 'WGS84', 'GCJ02' or 'BD09'")


def test_a_match_that_takes_no_event_kind_is_refused_on_its_line() -> None:
    text = HEAD + THRESHOLD.format(rid="noise.night") + "    match: {kind: reading, category: noise}\n"
    assert _problems(text) == [
        "demo.yaml:13: rules[0].match: rule 'noise.night' can match no event: its match (kind: reading, "
        "category: noise) asks for fields of different event kinds (a metric is a reading's, a category a "
        "report's, an object_type a track's)"
    ]


def test_a_pack_directory_stands_for_its_pack_yaml(tmp_path: Path) -> None:
    assert load_pack(WUHAN.parent).path == WUHAN
    with pytest.raises(PackError, match=r"a directory without a pack.yaml: name the pack's YAML file"):
        load_pack(tmp_path)


@pytest.mark.parametrize(
    ("rule", "warned"),
    [
        ("kind: threshold\n    match: {kind: reading, metric: m}\n    value: 1\n    group_by: zone", True),
        ("kind: threshold\n    match: {kind: reading, metric: m}\n    value: 1", False),
        ("kind: window\n    match: {kind: report, category: c}\n    window: 10m\n    value: 3", True),
        (
            "kind: window\n    match: {kind: reading, metric: m}\n    window: 10m\n    value: 3\n    group_by: sensor",
            False,
        ),
        ("kind: cluster\n    match: {kind: report, category: c}\n    radius_m: 100\n    within: 30m", True),
        ("kind: sustained\n    match: {kind: reading, metric: m}\n    value: 1\n    for: 5m", False),
    ],
)
def test_a_cooldown_on_a_key_several_sources_share_is_a_warning_on_its_line(rule: str, warned: bool) -> None:
    from rules.pack import LoadedPack, caveats

    text = HEAD + f"  - id: r\n    title: t\n    category: c\n    layer: zones\n    {rule}\n    cooldown: 1h\n"
    spec = parse_pack(text, "p.yaml")
    assert spec.rules[0].cooldown == timedelta(hours=1)
    found = caveats(LoadedPack(spec=spec, path=Path("/nonexistent/p.yaml"), layers={}, digest="x"))
    assert [w.split(": warning: ")[1].split(":")[0] for w in found] == (["rule 'r'"] if warned else [])
    assert all(w.startswith("/nonexistent/p.yaml:1: warning:") for w in found)  # no file: line 1
    without = parse_pack(text.replace("    cooldown: 1h\n", ""), "p.yaml")
    assert caveats(LoadedPack(spec=without, path=Path("p.yaml"), layers={}, digest="x")) == []
