"""The rules page (rule authors): loaded pack and validation, versions seen, hits per rule, backtests."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import pytest
from conftest import REPO
from dashkit import frames, open_page, texts

from dashboard.backtests import BacktestRefusedError, pack_files, resolve
from rules.decode import decode_one
from rules.model import Enriched
from rules.pack import load_pack
from sinks.store import Batch
from streams.scenario import scenario_events, wuhan_scenario
from streams.settings import get_settings

if TYPE_CHECKING:
    from conftest import RunningStore

pytestmark = pytest.mark.integration

PACK = REPO / "rules" / "packs" / "wuhan" / "pack.yaml"


@pytest.fixture
def packs_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Two pack files a rule author may pick: the live one, and one that ignores water levels under 10 m."""
    root = tmp_path / "packs"
    shutil.copytree(PACK.parent, root / "wuhan")
    strict = root / "wuhan-strict"
    shutil.copytree(PACK.parent, strict)
    text = (strict / "pack.yaml").read_text(encoding="utf-8")
    assert "    value: 30\n    dedup: 15m" in text
    (strict / "pack.yaml").write_text(text.replace("    value: 30\n    dedup: 15m", "    value: 1000\n    dedup: 15m"))
    (root / "broken.yaml").write_text("pack: broken\nrules: [oops]\n")
    monkeypatch.setenv("CITYOPS_DASHBOARD__PACKS_DIR", str(root))
    get_settings.cache_clear()
    return root


@pytest.fixture
def scenario_store(live_store: RunningStore) -> RunningStore:
    """The live store plus two minutes of the Wuhan demo scenario's events (ten minutes ago)."""
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
    messages = wuhan_scenario(load_pack(PACK).layers["districts"], start, 120.0)
    events = [Enriched(event=decode_one(e), zones={}) for e in scenario_events(messages)]
    assert live_store.store is not None
    live_store.store.apply(Batch(events=events))
    return live_store


def test_pack_files_are_an_allow_list(packs_dir: Path) -> None:
    assert pack_files(packs_dir) == ["broken.yaml", "wuhan-strict/pack.yaml", "wuhan/pack.yaml"]
    assert resolve(packs_dir, "wuhan/pack.yaml") == (packs_dir / "wuhan" / "pack.yaml").resolve()
    for sneaky in ("../outside.yaml", "/etc/passwd", "wuhan/../../x.yaml", "wuhan/layers/districts.geojson"):
        with pytest.raises(BacktestRefusedError):
            resolve(packs_dir, sneaky)


def test_loaded_pack_version_validation_and_versions_seen(live_store: RunningStore) -> None:
    at = open_page("rules")

    shown = {m.label: m.value for m in at.metric}
    pack = load_pack(PACK)
    assert shown["规则包"] == "wuhan" and shown["版本"] == pack.version
    assert shown["规则数"] == str(len(pack.spec.rules))
    assert shown["规则包测试通过"] == f"{len(pack.spec.tests)}/{len(pack.spec.tests)}"
    assert [s.value for s in at.success] == ["规则包有效，所有规则的测试均通过。"]
    seen = frames(at)[0]
    assert list(seen["版本"]) == ["2026.11.2"] and list(seen["事件数"]) == [5]


def test_hits_per_rule_cover_every_rule_of_the_pack(live_store: RunningStore) -> None:
    at = open_page("rules")

    hits = next(f for f in frames(at) if "未处置" in f.columns)
    by_rule = dict(zip(hits["规则"], hits["事件数"], strict=True))
    assert len(by_rule) == len(load_pack(PACK).spec.rules)
    assert by_rule["flood.water-level-high"] == 1 and by_rule["ops.sensor-silence"] == 0
    assert set(hits["类型"]) >= {"阈值", "窗口计数"}


def test_an_invalid_live_pack_is_shown_with_its_problems(live_store: RunningStore, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    bad = tmp_path / "bad.yaml"
    bad.write_text("pack: wuhan\nversion: '1'\nrules:\n  - id: x\n    kind: nope\n")
    monkeypatch.setenv("CITYOPS_RULES__PACK", str(bad))
    get_settings.cache_clear()

    at = open_page("rules")

    assert at.main.error[0].value.startswith("规则包") and "无效" in at.main.error[0].value
    assert "unknown rule kind 'nope'" in at.code[0].value


def run_backtest(at: object, choice: str, first: datetime, last: datetime) -> object:
    at.selectbox(key="backtest_file").set_value(choice)  # type: ignore[attr-defined]
    at.date_input(key="backtest_days").set_value((first.date(), last.date()))  # type: ignore[attr-defined]
    next(b for b in at.button if b.label == "运行回测").click()  # type: ignore[attr-defined]
    return at.run()  # type: ignore[attr-defined]


def test_backtest_of_the_live_pack_matches_it(scenario_store: RunningStore, packs_dir: Path) -> None:
    today = datetime.now(ZoneInfo("Asia/Shanghai"))
    at = run_backtest(open_page("rules"), "wuhan/pack.yaml", today - timedelta(days=1), today)

    shown = {m.label: m.value for m in at.metric}  # type: ignore[attr-defined]
    assert shown["差值"] == "+0" and int(shown["候选规则包"]) > 0
    table = frames(at)[-1]  # type: ignore[arg-type]
    assert (table["差值"] == 0).all()
    # every rule of the pack has its row, with 0 when it found nothing in the period
    assert sorted(table["规则"]) == sorted(r.id for r in load_pack(PACK).spec.rules)
    assert (table["候选规则包"] == 0).any()
    assert len(at.get("deck_gl_json_chart")) == 1, "the map of both packs' incidents"  # type: ignore[attr-defined]


def test_backtest_of_a_stricter_pack_shows_fewer_water_level_incidents(
    scenario_store: RunningStore, packs_dir: Path
) -> None:
    today = datetime.now(ZoneInfo("Asia/Shanghai"))
    at = run_backtest(open_page("rules"), "wuhan-strict/pack.yaml", today - timedelta(days=1), today)

    table = frames(at)[-1]  # type: ignore[arg-type]
    row = table[table["规则"] == "flood.water-level-high"].iloc[0]
    # The live pack fires for the scenario's two rising sensors and the fixture's one (more when the run
    # crosses a 15-minute dedup bucket); a 10 m threshold fires for none of them.
    assert row["候选规则包"] == 0 and row["当前规则包"] >= 3 and row["差值"] == -row["当前规则包"]
    assert "**pack.yaml**" in texts(at)  # type: ignore[arg-type]


def test_backtest_of_an_invalid_pack_file_says_why(scenario_store: RunningStore, packs_dir: Path) -> None:
    today = datetime.now(ZoneInfo("Asia/Shanghai"))
    at = run_backtest(open_page("rules"), "broken.yaml", today, today)

    assert "broken.yaml" in at.main.error[0].value  # type: ignore[attr-defined]
    assert at.code  # type: ignore[attr-defined]


def test_backtest_refuses_periods_with_too_many_events(
    scenario_store: RunningStore, packs_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CITYOPS_DASHBOARD__BACKTEST_MAX_EVENTS", "10")
    get_settings.cache_clear()
    today = datetime.now(ZoneInfo("Asia/Shanghai"))

    at = run_backtest(open_page("rules"), "wuhan/pack.yaml", today - timedelta(days=1), today)

    assert "最多 10" not in at.main.error[0].value  # type: ignore[attr-defined]
    assert "at most 10" in at.main.error[0].value and "请选择更短的时间段" in at.main.error[0].value  # type: ignore[attr-defined]


def test_english_rules_page(live_store: RunningStore, with_users: dict[str, object]) -> None:
    at = open_page("rules", user="author1", lang="en")

    assert at.title[0].value == "Rules"
    assert [s.value for s in at.success] == ["The pack is valid and every rule's tests pass."]
