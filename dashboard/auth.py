"""Who is looking: the login gate, users from settings, OIDC through ``st.login``, and roles.

- **Demo mode** (``dashboard.demo_mode``): no login; everyone is the user ``demo`` with every role,
  and every page says so.
- **Password users** (``dashboard.users``): names with scrypt hashes (``cityops dashboard
  hash-password``) and roles. A wrong name costs the same time as a wrong password.
- **OIDC** (``dashboard.oidc_provider``): ``st.login`` with an ``[auth]`` provider of
  ``.streamlit/secrets.toml``; roles come from ``dashboard.oidc_roles`` by e-mail.

Roles: ``viewer`` sees everything but the rules page; ``operator`` may also act on incidents and
silences; ``rule_author`` may also use the rules page (packs, validation, backtests).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from functools import cache
from typing import Literal

import streamlit as st

from dashboard.i18n import Lang, t
from dashboard.passwords import hash_password, verify_password
from streams.settings import DashboardSettings

logger = logging.getLogger(__name__)

USER_KEY = "auth_user"
"""Session-state key of the logged-in (password) user."""
_FAILURES_KEY = "auth_failures"
MAX_FAILURES = 5
LOCKOUT_S = 60.0
ALL_ROLES = frozenset({"viewer", "operator", "rule_author"})


@dataclass(frozen=True)
class User:
    """The person using this session. ``name`` is what actions record as their actor."""

    name: str
    display: str
    roles: frozenset[str]
    source: Literal["password", "oidc", "demo"]

    @property
    def can_act(self) -> bool:
        """May acknowledge, assign, comment, resolve, close and reopen incidents, and manage silences."""
        return "operator" in self.roles

    @property
    def can_author(self) -> bool:
        """May open the rules page (packs, validation, backtests)."""
        return "rule_author" in self.roles


DEMO_USER = User(name="demo", display="demo", roles=ALL_ROLES, source="demo")


@cache
def _dummy_hash() -> str:
    """A hash to check unknown names against, so they take as long as known ones."""
    return hash_password("not a real password")


def oidc_user(settings: DashboardSettings) -> User | None:
    """The ``st.user`` of an OIDC login, when OIDC is configured and the visitor is logged in."""
    if not settings.oidc_provider:
        return None
    info = st.user.to_dict()
    if not info.get("is_logged_in"):
        return None
    email = str(info.get("email") or info.get("sub") or "")
    if not email:
        return None
    roles = settings.oidc_roles.get(email, settings.oidc_default_roles)
    return User(name=email, display=str(info.get("name") or email), roles=frozenset(roles), source="oidc")


def current_user(settings: DashboardSettings) -> User | None:
    """The session's user, or None when a login is needed."""
    if settings.demo_mode:
        return DEMO_USER
    user = st.session_state.get(USER_KEY)
    if isinstance(user, User):
        configured = settings.users.get(user.name)
        if configured is None:  # removed from the configuration since logging in
            del st.session_state[USER_KEY]
            return None
        return user
    return oidc_user(settings)


def check_password(settings: DashboardSettings, name: str, password: str) -> User | None:
    """The user when ``name`` and ``password`` match the configuration, else None."""
    configured = settings.users.get(name)
    stored = configured.password_hash.get_secret_value() if configured else _dummy_hash()
    ok = verify_password(password, stored) and configured is not None
    if not ok or configured is None:
        return None
    display = configured.display_name or name
    return User(name=name, display=display, roles=frozenset(configured.roles), source="password")


def _locked_for() -> float:
    failures: list[float] = st.session_state.get(_FAILURES_KEY, [])
    recent = [f for f in failures if time.monotonic() - f < LOCKOUT_S]
    st.session_state[_FAILURES_KEY] = recent
    return LOCKOUT_S - (time.monotonic() - recent[0]) if len(recent) >= MAX_FAILURES else 0.0


def login_page(settings: DashboardSettings, lang: Lang) -> None:
    """The only page before a login: a password form and, if configured, single sign-on."""
    st.title(t("login.title", lang))
    if not settings.users and not settings.oidc_provider:
        st.warning(t("login.no_users", lang), icon=":material/person_off:")
        return
    if settings.users:
        with st.form("login_form"):
            name = st.text_input(t("login.user", lang), key="login_user")
            password = st.text_input(t("login.password", lang), type="password", key="login_password")
            submitted = st.form_submit_button(t("login.submit", lang), type="primary")
        if submitted:
            wait = _locked_for()
            if wait > 0:
                st.error(t("login.locked", lang, seconds=f"{wait:.0f}"), icon=":material/lock_clock:")
            else:
                user = check_password(settings, name.strip(), password)
                if user is None:
                    st.session_state[_FAILURES_KEY].append(time.monotonic())
                    logger.warning("dashboard login failed user=%s", name.strip()[:64])
                    st.error(t("login.failed", lang), icon=":material/error:")
                else:
                    logger.info("dashboard login user=%s roles=%s", user.name, ",".join(sorted(user.roles)))
                    st.session_state[USER_KEY] = user
                    st.rerun()
    if settings.oidc_provider:
        if st.button(t("login.oidc", lang), icon=":material/badge:", key="login_oidc"):
            provider = None if settings.oidc_provider == "default" else settings.oidc_provider
            st.login(provider)  # needs an [auth] section in .streamlit/secrets.toml
        st.caption(t("login.oidc_help", lang))


def _logout() -> None:
    user = st.session_state.pop(USER_KEY, None)
    logger.info("dashboard logout user=%s", getattr(user, "name", "?"))


def sidebar(user: User, lang: Lang) -> None:
    """Who is logged in, with which roles, and a way out."""
    roles = " · ".join(t(f"role.{r}", lang) for r in sorted(user.roles))
    st.sidebar.caption(t("login.signed_in", lang, name=user.display, roles=roles))
    if user.source == "password":
        st.sidebar.button(t("login.logout", lang), key="logout", on_click=_logout)
    elif user.source == "oidc" and st.sidebar.button(t("login.logout", lang), key="logout"):
        st.logout()


def require(settings: DashboardSettings, lang: Lang, *, author: bool = False) -> User:
    """The page's user; stops the page for a visitor who is not logged in or lacks the role."""
    user = current_user(settings)
    if user is None:
        st.error(t("login.required", lang), icon=":material/lock:")
        st.stop()
    assert user is not None
    if author and not user.can_author:
        st.error(t("login.need_author", lang), icon=":material/lock:")
        st.stop()
    return user
