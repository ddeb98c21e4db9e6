"""Entry point of the dashboard: page config, language switch, login gate, demo badge and navigation.

Run with ``python -m streamlit run dashboard/app.py`` (``cityops dashboard``; ``cityops demo`` does
it for you); every setting comes from ``CITYOPS_*`` through ``streams.settings.get_settings()``. To
add a page, put a script in ``dashboard/pages/``, its title under ``[nav]`` in both
``dashboard/i18n/*.toml``, and a line in ``PAGES``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import NamedTuple

import streamlit as st

from dashboard import auth
from dashboard.data import configure_logging
from dashboard.i18n import LANG_KEY, LANGUAGE_NAMES, LANGUAGES, Lang, as_lang, t
from streams.settings import get_settings

logger = logging.getLogger("dashboard.app")
HERE = Path(__file__).resolve().parent


class PageSpec(NamedTuple):
    """One page of the dashboard."""

    script: str  # relative to this file
    title_key: str  # under [nav] in dashboard/i18n/*.toml
    icon: str  # a Material Symbol (the font ships with Streamlit; emoji need an emoji font on the client)
    url_path: str
    author_only: bool = False


PAGES: tuple[PageSpec, ...] = (
    PageSpec("pages/map.py", "nav.map", ":material/map:", "map"),
    PageSpec("pages/queue.py", "nav.queue", ":material/notifications_active:", "queue"),
    PageSpec("pages/analytics.py", "nav.analytics", ":material/bar_chart:", "analytics"),
    PageSpec("pages/rules.py", "nav.rules", ":material/rule:", "rules", author_only=True),
    PageSpec("pages/system.py", "nav.system", ":material/monitor_heart:", "system"),
)


LANG_WIDGET_KEY = "lang_select"


def _remember_language() -> None:
    st.session_state[LANG_KEY] = as_lang(st.session_state.get(LANG_WIDGET_KEY))


def language_selector(default: Lang) -> Lang:
    """The sidebar language switch; the choice is kept in ``st.session_state[LANG_KEY]``."""
    current = as_lang(st.session_state.get(LANG_KEY), default)
    st.session_state[LANG_KEY] = current
    st.sidebar.selectbox(
        t("app.language", current),
        LANGUAGES,
        index=LANGUAGES.index(current),
        key=LANG_WIDGET_KEY,
        format_func=lambda code: LANGUAGE_NAMES[code],
        on_change=_remember_language,
    )
    return current


def main() -> None:
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_json)
    lang = language_selector(settings.dashboard.language)
    # An emoji icon: a :material: one is fetched from a CDN, which the intranet cannot reach.
    st.set_page_config(page_title=t("app.title", lang), page_icon="🏙️", layout="wide")
    st.sidebar.caption(t("app.title", lang))
    user = auth.current_user(settings.dashboard)
    if user is None:
        login = st.Page(
            lambda: auth.login_page(settings.dashboard, lang),
            title=t("login.title", lang),
            icon=":material/login:",
            url_path="login",
        )
        st.navigation([login], position="hidden").run()
        return
    if settings.dashboard.demo_mode:
        st.badge(t("app.demo_badge", lang), icon=":material/warning:", color="orange")
        st.sidebar.warning(t("app.demo_help", lang), icon=":material/lock_open:")
    auth.sidebar(user, lang)
    allowed = [spec for spec in PAGES if user.can_author or not spec.author_only]
    pages = [
        st.Page(
            HERE / spec.script,
            title=t(spec.title_key, lang),
            icon=spec.icon,
            url_path=spec.url_path,
            default=index == 0,
        )
        for index, spec in enumerate(allowed)
    ]
    st.navigation(pages, position="sidebar").run()


main()
