"""``cityops rules validate`` and ``rules diff`` on pack files, as a rule author runs them."""

from __future__ import annotations

import shutil
from pathlib import Path

from click.testing import CliRunner

from streams.cli import main

WUHAN = Path(__file__).resolve().parents[2] / "rules" / "packs" / "wuhan"


def _copy(tmp_path: Path, name: str, old: str = "", new: str = "") -> Path:
    shutil.copytree(WUHAN, tmp_path / name)
    pack = tmp_path / name / "pack.yaml"
    text = pack.read_text()
    if old:
        assert text.count(old) >= 1, old
        pack.write_text(text.replace(old, new, 1))
    return pack


def test_validate_names_the_line_of_a_field_the_rules_events_do_not_have(tmp_path: Path) -> None:
    pack = _copy(tmp_path, "bad", "    field: value\n", "    field: valu\n")
    line = 1 + pack.read_text().splitlines().index("    field: valu")
    result = CliRunner().invoke(main, ["rules", "validate", str(pack)])
    assert result.exit_code == 1
    assert f"{pack}:{line}: rules[0].field: rule 'flood.water-level-high' reads unknown numeric field 'valu'" in (
        result.output
    )


def test_validate_warns_of_a_cooldown_on_a_key_several_sources_share_and_still_passes(tmp_path: Path) -> None:
    pack = _copy(tmp_path, "warn", "    group_by: zone\n    min_events: 3\n", "    group_by: zone\n    cooldown: 2h\n")
    line = 1 + pack.read_text().splitlines().index("    cooldown: 2h")
    result = CliRunner().invoke(main, ["rules", "validate", str(pack)])
    assert result.exit_code == 0, result.output
    assert f"{pack}:{line}: warning: rule 'air.pm25-hourly-district': its cooldown chains incidents" in result.output
    assert "ok: pack 'wuhan'" in result.output
    # the demo pack's own cooldown is on a per-sensor rule: nothing to warn of
    clean = CliRunner().invoke(main, ["rules", "validate", str(WUHAN)])
    assert clean.exit_code == 0 and "warning" not in clean.output


def test_diff_prints_the_changes_and_warns_when_no_version_moved(tmp_path: Path) -> None:
    old = _copy(tmp_path, "old")
    new = _copy(tmp_path, "new", '    op: ">"\n    value: 30\n', '    op: ">"\n    value: 35\n')
    result = CliRunner().invoke(main, ["rules", "diff", str(old), str(new)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "~ flood.water-level-high: value: 30.0 -> 35.0" in lines
    assert any(line.startswith("warning: the pack version is still ") for line in lines)
    assert "warning: rule flood.water-level-high changed but kept version 1" in result.output


def test_diff_of_an_invalid_pack_fails_with_its_problems(tmp_path: Path) -> None:
    old = _copy(tmp_path, "old")
    new = _copy(tmp_path, "new", "kind: threshold", "kind: treshold")
    result = CliRunner().invoke(main, ["rules", "diff", str(old), str(new)])
    assert result.exit_code == 1
    assert "unknown rule kind 'treshold'" in result.output


def test_backtest_reads_a_store_file_when_no_store_is_running(tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from rules.model import Enriched, Reading
    from sinks.store import Batch, Store

    archive = tmp_path / "archive.duckdb"
    store = Store(archive)
    # the start of an hour, so that both readings fall in one 15-minute dedup bucket whatever the time
    at = (datetime.now(UTC) - timedelta(days=1)).replace(minute=0, second=0, microsecond=0)
    readings = [
        Reading(
            id=f"w{i}",
            ts=at + timedelta(minutes=i),
            lon=114.30,
            lat=30.60,
            sensor_id="wl-1",
            metric="water_level_cm",
            value=v,
        )
        for i, v in enumerate((42.0, 45.0))
    ]
    store.apply(Batch(events=[Enriched(event=r, zones={}) for r in readings]))
    store.close()
    live = WUHAN / "pack.yaml"
    stricter = _copy(tmp_path, "stricter", '    op: ">"\n    value: 30\n', '    op: ">"\n    value: 50\n')
    args = ["rules", "backtest", str(stricter), "--since", "7d", "--live", str(live), "--store-file", str(archive)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if line.startswith("flood.water-level-high"))
    assert row.split()[1:] == ["0", "1", "-1"]  # candidate, live, difference
    assert "over 2 stored events" in result.output
