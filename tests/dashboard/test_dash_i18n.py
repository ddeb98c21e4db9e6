"""Texts: both languages complete, every key the code uses defined, no Chinese left on English pages."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, get_args

import pytest
from conftest import REPO, WATER_LEVEL
from dashkit import CJK, PAGES, frames, open_page, texts, widget_labels

from dashboard.i18n import LANGUAGES, TextsError, t
from dashboard.i18n import texts as all_texts
from rules.kinds import KIND_NAMES
from rules.lifecycle import STATUSES, ActionName, Transition
from rules.pack import load_pack
from sinks.read import QUEUE_SORTS, SEVERITIES
from streams.settings import DashboardRole

if TYPE_CHECKING:
    from conftest import RunningStore

pytestmark = pytest.mark.integration


def test_every_text_exists_in_both_languages_with_the_same_placeholders() -> None:
    zh, en = all_texts("zh-CN"), all_texts("en")
    assert set(zh) == set(en)
    for key in zh:
        assert sorted(re.findall(r"{(\w+)", zh[key])) == sorted(re.findall(r"{(\w+)", en[key])), key


def test_every_text_key_used_in_the_code_is_defined() -> None:
    used: set[str] = set()
    for path in (REPO / "dashboard").rglob("*.py"):
        used |= set(re.findall(r"""\bt\(\s*f?["']([a-z_]+\.[a-z_0-9]+)["']""", Path(path).read_text(encoding="utf-8")))
    assert len(used) > 200, "found few t(...) calls: the pattern is stale"
    for lang in LANGUAGES:
        missing = sorted(k for k in used if k not in all_texts(lang))
        assert not missing, f"{lang}: {missing}"
    with pytest.raises(TextsError, match=r"no text 'state\.nope'"):
        t("state.nope", "en")


@pytest.mark.parametrize(
    ("section", "values"),
    [
        ("severity", SEVERITIES),
        ("status", STATUSES),
        ("action", get_args(ActionName)),
        ("role", get_args(DashboardRole)),
        ("sort", tuple(QUEUE_SORTS)),
        ("period", ("1h", "6h", "24h", "7d", "30d", "all")),
        ("kind", tuple(KIND_NAMES)),
        ("change", get_args(Transition.model_fields["kind"].annotation)),
        ("event_kind", ("reading", "report", "track")),
        ("certainty", ("observed", "likely", "possible")),
        ("dead_kind", ("bad_json", "invalid", "oversized", "bad_envelope", "late", "poison")),
        ("category", tuple({r.category for r in load_pack(REPO / "rules/packs/wuhan/pack.yaml").spec.rules})),
    ],
)
def test_every_value_shown_from_data_has_a_text(section: str, values: tuple[str, ...]) -> None:
    for lang in LANGUAGES:
        missing = [v for v in values if f"{section}.{v}" not in all_texts(lang)]
        assert not missing, f"{lang} [{section}]: {missing}"


@pytest.mark.parametrize("page", sorted(PAGES))
def test_english_pages_have_no_chinese_text(live_store: RunningStore, page: str) -> None:
    query = {"incident": WATER_LEVEL.id} if page == "queue" else {}
    at = open_page(page, lang="en", **query)

    labels = [w for w in widget_labels(at) if w != t("app.language", "en")]  # "Language / 语言": findable in both
    shown = "\n".join([texts(at), *labels, *(str(c) for f in frames(at) for c in f.columns)])
    found = sorted({m.group(0) for m in CJK.finditer(shown)})
    assert not found, f"Chinese on the English {page} page: {''.join(found)}\n{shown}"


@pytest.mark.parametrize("page", sorted(PAGES))
def test_chinese_is_the_default(live_store: RunningStore, page: str) -> None:
    at = open_page(page)

    assert CJK.search(at.title[0].value), at.title[0].value
