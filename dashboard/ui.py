"""What every page shares: the page context (settings, language, time zone, user), labels, times,
colours, and the error states of the store.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import streamlit as st

from dashboard import auth, data, require_app_shell
from dashboard.i18n import LANG_KEY, LANGUAGES, Lang, as_lang, has, t
from sinks.errors import QueryError, StoreUnavailableError
from sinks.read import SEVERITIES
from streams.settings import Settings, get_settings

logger = logging.getLogger(__name__)

R = TypeVar("R")

SEVERITY_RGB: dict[str, tuple[int, int, int]] = {
    "critical": (183, 28, 28),
    "high": (239, 108, 0),
    "medium": (249, 168, 37),
    "low": (30, 136, 229),
    "info": (120, 144, 156),
}
STATUS_RGB: dict[str, tuple[int, int, int]] = {
    "open": (183, 28, 28),
    "acknowledged": (239, 108, 0),
    "in_progress": (21, 101, 192),
    "cleared": (158, 115, 0),
    "resolved": (46, 125, 50),
    "closed": (97, 97, 97),
}
OP_SYMBOLS = {">": ">", ">=": "≥", "<": "<", "<=": "≤", "==": "=", "!=": "≠"}


@dataclass(frozen=True)
class Page:
    """What a page script needs to know: settings, language, time zone, the store, the user."""

    settings: Settings
    lang: Lang
    tz: tzinfo
    tz_name: str
    address: data.StoreAddress
    user: auth.User

    def t(self, key: str, **values: object) -> str:
        return t(key, self.lang, **values)


def city_timezone(settings: Settings) -> tuple[tzinfo, bool]:
    """The display time zone, and whether it was understood (else UTC)."""
    try:
        return ZoneInfo(settings.dashboard.timezone), True
    except (ZoneInfoNotFoundError, ValueError):
        logger.warning("dashboard unknown timezone tz=%s; showing UTC", settings.dashboard.timezone)
        return UTC, False


def page_context(*, author: bool = False) -> Page:
    """Call first in every page: checks the app shell and the login, and returns the page context."""
    require_app_shell()
    settings = get_settings()
    lang = as_lang(st.session_state.get(LANG_KEY), settings.dashboard.language)
    user = auth.require(settings.dashboard, lang, author=author)
    tz, ok = city_timezone(settings)
    if not ok:
        st.warning(t("state.bad_timezone", lang, tz=settings.dashboard.timezone))
    return Page(
        settings=settings,
        lang=lang,
        tz=tz,
        tz_name=settings.dashboard.timezone if ok else "UTC",
        address=data.StoreAddress.from_settings(settings),
        user=user,
    )


def now() -> datetime:
    return datetime.now(UTC)


def floor_time(value: datetime, seconds: int) -> datetime:
    """``value`` rounded down to a multiple of ``seconds``: a stable cache key for "the last hour"."""
    return datetime.fromtimestamp(int(value.timestamp()) // seconds * seconds, UTC)


def local_time(value: datetime | None, tz: tzinfo, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    """A time in the city's time zone (naive values from the store are UTC)."""
    if value is None:
        return "—"
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(tz).strftime(fmt)


def duration(seconds: float | None, lang: Lang) -> str:
    """``3d 4h``, ``2h 05m``, ``7m 12s`` or ``45s`` (``—`` when unknown)."""
    if seconds is None:
        return "—"
    s = max(0, int(seconds))
    d, rem = divmod(s, 86_400)
    h, rem = divmod(rem, 3_600)
    m, sec = divmod(rem, 60)
    if d:
        return t("time.days_hours", lang, d=d, h=h)
    if h:
        return t("time.hours_minutes", lang, h=h, m=f"{m:02d}")
    if m:
        return t("time.minutes_seconds", lang, m=m, s=f"{sec:02d}")
    return t("time.seconds", lang, s=sec)


def since(value: datetime | None, at: datetime) -> float | None:
    """Seconds from ``value`` to ``at``."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return (at - value).total_seconds()


def label(section: str, value: str | None, lang: Lang) -> str:
    """``value`` translated under ``[section]`` when a text exists (categories, statuses...), else as is."""
    if value is None:
        return "—"
    return t(f"{section}.{value}", lang) if has(f"{section}.{value}", lang) else value


def severity_label(severity: str, lang: Lang) -> str:
    return label("severity", severity, lang)


def status_label(status: str, lang: Lang) -> str:
    """The status in words (no emoji: an intranet PC may lack an emoji font; tables colour it instead)."""
    return label("status", status, lang)


def severity_rank(severity: str) -> int:
    return SEVERITIES.index(severity) if severity in SEVERITIES else len(SEVERITIES)


def severity_chips(lang: Lang) -> str:
    """HTML legend of the severity colours."""
    return " ".join(
        f'<span style="white-space:nowrap;margin-right:0.8em"><span style="color:rgb{SEVERITY_RGB[s]}">&#9679;</span> '
        f"{html.escape(severity_label(s, lang))}</span>"
        for s in SEVERITIES
    )


def _note_store_state(state: str, uri: str, error: Exception | None = None) -> None:
    """Log when this session's view of the store changes (not on every refresh)."""
    if st.session_state.get("_store_state") == state:
        return
    st.session_state["_store_state"] = state
    if error is None:
        logger.info("dashboard store state=%s uri=%s", state, uri)
    else:
        logger.warning("dashboard store state=%s uri=%s error=%s", state, uri, str(error).splitlines()[0])


def guarded(page: Page, load: Callable[[], R]) -> R | None:
    """Run ``load`` (store queries); on a store error show what is wrong and what to do, and return None."""
    uri = page.address.uri
    try:
        result = load()
    except StoreUnavailableError as exc:
        _note_store_state("unreachable", uri, exc)
        st.error(page.t("state.unreachable", uri=uri), icon=":material/cloud_off:")
        return None
    except QueryError as exc:
        _note_store_state("refused", uri, exc)
        reason = str(exc).splitlines()[0]  # DuckDB appends the failing SQL on further lines
        st.error(page.t("state.query_failed", uri=uri, error=reason), icon=":material/error:")
        return None
    _note_store_state("ok", uri)
    return result


def updated_caption(page: Page) -> None:
    st.caption(page.t("common.updated", time=local_time(now(), page.tz)))


def live_caption(page: Page) -> None:
    """Under the title: refresh period, time zone and store address."""
    st.caption(
        page.t(
            "common.live_caption",
            seconds=f"{page.settings.dashboard.refresh_s:g}",
            tz=page.tz_name,
            uri=page.address.uri,
        )
    )


PERIODS: dict[str, timedelta | None] = {
    "1h": timedelta(hours=1),
    "6h": timedelta(hours=6),
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
    "all": None,
}


def lang_key(page: Page, name: str) -> str:
    """The key of a select widget whose options are shown translated: one widget per language.

    Streamlit 1.67 keeps a select widget's choice in the browser as its formatted label, so after a
    language switch the old label matches no option and stays on screen. A key per language makes a
    fresh widget; it starts from the other language's value (session state holds values, not labels).
    """
    key = f"{name}.{page.lang}"
    if key not in st.session_state:
        for other in LANGUAGES:
            old = f"{name}.{other}"
            if other != page.lang and old in st.session_state:
                st.session_state[key] = st.session_state[old]
                break
    return key


def period_select(page: Page, key: str, options: tuple[str, ...], default: str, *, sidebar: bool = True) -> str:
    """A period picker (labels translated); returns the chosen key of ``PERIODS``."""
    where: Any = st.sidebar if sidebar else st
    choice: str = where.selectbox(
        page.t("filters.period"),
        options,
        index=options.index(default),
        key=lang_key(page, key),
        format_func=lambda p: page.t(f"period.{p}"),
    )
    return choice
