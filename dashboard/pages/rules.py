"""Rules (rule authors only): the loaded pack and its version, validation and pack tests, the versions
seen on stored incidents, per-rule hit counts, and backtests of another pack file against the live one.
"""

from __future__ import annotations

import logging
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from dashboard import backtests, data, maps
from dashboard.detail import table_height
from dashboard.ui import (
    PERIODS,
    Page,
    guarded,
    label,
    local_time,
    now,
    page_context,
    period_select,
    severity_label,
)
from rules.errors import PackError
from rules.pack import LoadedPack
from rules.testing import run_pack_tests, untested_rules
from sinks.errors import SinkError

logger = logging.getLogger(__name__)

RESULT_KEY = "backtest_result"
RULE_PERIODS = ("24h", "7d", "30d", "all")


@data.cache_data(data.LIST_TTL_S)
def pack_tests(pack_path: str, mtime_ns: int) -> tuple[int, list[str], list[str]]:
    """(cases passed, failures, untested rule ids) of the pack's own tests, once per file version."""
    pack = data.pack(pack_path, mtime_ns)
    results = run_pack_tests(pack)
    failures = [f"{r.name}: {'; '.join(r.problems)}" for r in results if not r.ok]
    return sum(r.ok for r in results), failures, untested_rules(pack)


def loaded_pack(page: Page) -> LoadedPack | None:
    """The live pack with its validation status; None (and why) when it does not load."""
    path: Path = page.settings.rules.pack
    st.subheader(page.t("rules.loaded"))
    try:
        pack = data.current_pack(path)
    except (PackError, OSError) as exc:
        problems = exc.problems if isinstance(exc, PackError) else [str(exc)]
        st.error(page.t("rules.invalid", pack=path), icon=":material/error:")
        st.code("\n".join(problems), language=None)
        return None
    passed, failures, untested = pack_tests(str(path), path.stat().st_mtime_ns)
    cols = st.columns(4)
    cols[0].metric(page.t("rules.pack"), pack.spec.pack)
    cols[1].metric(page.t("rules.version"), pack.version)
    cols[2].metric(page.t("rules.rule_count"), len(pack.spec.rules))
    cols[3].metric(page.t("rules.tests"), f"{passed}/{len(pack.spec.tests)}")
    st.caption(page.t("rules.source", path=path, digest=pack.digest[:16], layers=", ".join(pack.layers)))
    if failures or untested:
        st.error(page.t("rules.tests_failed", n=len(failures) + len(untested)), icon=":material/rule:")
        st.code("\n".join(failures + [page.t("rules.untested", rule=r) for r in untested]), language=None)
    else:
        st.success(page.t("rules.valid"), icon=":material/verified:")
    versions = guarded(page, lambda: data.pack_versions(page.address))
    if versions:
        st.markdown(f"**{page.t('rules.seen_versions')}**")
        frame = pd.DataFrame(
            {
                page.t("rules.pack"): [v["pack"] for v in versions],
                page.t("rules.version"): [v["pack_version"] for v in versions],
                page.t("rules.incidents"): [int(v["incidents"]) for v in versions],
                page.t("col.last"): [local_time(v["last_seen"], page.tz) for v in versions],
            }
        )
        st.dataframe(frame, hide_index=True, width="stretch")
    return pack


def rule_table(page: Page, pack: LoadedPack) -> None:
    st.subheader(page.t("rules.hits"))
    period = period_select(page, "rules_period", RULE_PERIODS, "7d", sidebar=False)
    window = PERIODS[period]
    since = None if window is None else (now() - window).replace(second=0, microsecond=0)
    hits = guarded(page, lambda: data.rule_hits(page.address, since))
    by_rule: dict[str, dict[str, Any]] = {str(h["rule_id"]): h for h in hits or []}
    rows = []
    for rule in pack.spec.rules:
        h = by_rule.pop(rule.id, {})
        rows.append((rule, h))
    frame = pd.DataFrame(
        {
            page.t("col.rule"): [r.id for r, _ in rows],
            page.t("col.title"): [r.title for r, _ in rows],
            page.t("col.kind"): [label("kind", r.kind, page.lang) for r, _ in rows],
            page.t("col.severity"): [severity_label(r.severity, page.lang) for r, _ in rows],
            page.t("rules.version"): [r.version for r, _ in rows],
            page.t("rules.hits_col"): [int(h.get("hits", 0)) for _, h in rows],
            page.t("rules.active_col"): [int(h.get("active", 0)) for _, h in rows],
            page.t("col.last"): [local_time(h.get("last_hit"), page.tz) for _, h in rows],
        }
    )
    st.dataframe(frame, hide_index=True, width="stretch", height=min(table_height(len(frame)), 700))
    if by_rule:
        st.caption(page.t("rules.not_in_pack", rules=", ".join(sorted(by_rule))))


def _default_range() -> tuple[date, date]:
    today = now().date()
    return today - timedelta(days=1), today


ERROR_KEY = "backtest_error"


def _run(page: Page, live: LoadedPack) -> None:
    """Submit callback of the backtest form: run it, keep the result (or why not) for the page."""
    st.session_state.pop(RESULT_KEY, None)
    days = st.session_state.get("backtest_days")
    if not isinstance(days, tuple | list) or len(days) != 2:
        st.session_state[ERROR_KEY] = (page.t("rules.need_range"), None)
        return
    choice = str(st.session_state.get("backtest_file"))
    since = datetime.combine(days[0], time(0), page.tz)
    until = datetime.combine(days[1], time(0), page.tz) + timedelta(days=1)
    try:
        st.session_state[RESULT_KEY] = backtests.run(
            data.reader(page.address), backtests.resolve(page.settings.dashboard.packs_dir, choice),
            live, since, until, max_events=page.settings.dashboard.backtest_max_events, tz=page.tz,
        )  # fmt: skip
    except backtests.BacktestRefusedError as exc:
        st.session_state[ERROR_KEY] = (page.t("rules.refused", reason=str(exc)), None)
    except PackError as exc:
        st.session_state[ERROR_KEY] = (page.t("rules.invalid", pack=choice), "\n".join(exc.problems))
    except SinkError as exc:
        reason = str(exc).splitlines()[0]
        st.session_state[ERROR_KEY] = (page.t("state.query_failed", uri=page.address.uri, error=reason), None)


def backtest_form(page: Page, live: LoadedPack) -> None:
    st.subheader(page.t("rules.backtest"))
    files = backtests.pack_files(page.settings.dashboard.packs_dir)
    if not files:
        st.info(page.t("rules.no_pack_files", dir=page.settings.dashboard.packs_dir), icon=":material/folder_off:")
        return
    with st.form("backtest_form"):
        st.selectbox(page.t("rules.pack_file"), files, key="backtest_file")
        st.date_input(page.t("rules.period"), value=_default_range(), key="backtest_days")
        st.form_submit_button(page.t("rules.run"), type="primary", on_click=_run, args=(page, live))
    st.caption(page.t("rules.backtest_help", max=f"{page.settings.dashboard.backtest_max_events:,}"))
    error = st.session_state.pop(ERROR_KEY, None)
    if error:
        st.error(error[0])
        if error[1]:
            st.code(error[1], language=None)
    view = st.session_state.get(RESULT_KEY)
    if isinstance(view, backtests.BacktestView):
        show_backtest(page, view)


def show_backtest(page: Page, view: backtests.BacktestView) -> None:
    cand, live = view.totals
    st.markdown(page.t("rules.result", file=Path(view.candidate_file).name, events=f"{view.events:,}"))
    cols = st.columns(3)
    cols[0].metric(page.t("rules.candidate"), f"{cand:,}")
    cols[1].metric(page.t("rules.live"), f"{live:,}")
    cols[2].metric(page.t("rules.diff"), f"{cand - live:+,}")
    if not (cand or live):  # every rule is listed, with 0 when it found nothing
        st.info(page.t("rules.no_backtest_incidents"), icon=":material/hourglass_empty:")
        return
    frame = pd.DataFrame(view.per_rule, columns=[page.t("col.rule"), page.t("rules.candidate"), page.t("rules.live")])
    frame[page.t("rules.diff")] = frame[page.t("rules.candidate")] - frame[page.t("rules.live")]
    st.dataframe(frame, hide_index=True, width="stretch")
    if view.hourly:
        long = pd.DataFrame(view.hourly)
        long["which"] = long["which"].map(lambda w: page.t(f"rules.{w}"))
        wide = long.pivot_table(index="bucket", columns="which", values="n", aggfunc="sum", fill_value=0)
        wide.index.name = page.t("analytics.bucket_hour")
        st.bar_chart(wide, stack=False, height=260, y_label=page.t("analytics.incidents"))
    layer = data.zone_layer(str(page.settings.rules.pack))
    layers = maps.district_layers(layer, {}, page.lang)
    layers.append(maps.points_layer("backtest-live", view.live_points, maps.LIVE_RGB, 7))
    layers.append(maps.points_layer("backtest-candidate", view.candidate_points, maps.CANDIDATE_RGB, 4))
    st.pydeck_chart(maps.deck(layers), height=480, key="backtest_map")
    st.caption(page.t("rules.map_legend"))


def main() -> None:
    page = page_context(author=True)
    st.title(page.t("rules.title"))
    pack = loaded_pack(page)
    if pack is None:
        return
    rule_table(page, pack)
    backtest_form(page, pack)


main()
