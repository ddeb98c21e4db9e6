"""The login gate, password hashes, OIDC user mapping and what each role may see."""

from __future__ import annotations

import subprocess
import sys
from typing import TYPE_CHECKING

import pytest
from conftest import PASSWORD
from dashkit import app, login, ok, open_page, pages, texts

from dashboard.passwords import hash_password, verify_password
from streams.settings import get_settings

if TYPE_CHECKING:
    from conftest import RunningStore

pytestmark = pytest.mark.integration


def test_password_hashes_are_salted_scrypt_and_verify_only_the_right_password() -> None:
    first, second = hash_password("pw-1", n=2**10), hash_password("pw-1", n=2**10)

    assert first.startswith("scrypt$1024$8$1$") and first != second, "a random salt per hash"
    assert verify_password("pw-1", first) and verify_password("pw-1", second)
    assert not verify_password("pw-2", first)
    assert not verify_password("pw-1", "plain-text-password")
    assert not verify_password("pw-1", "scrypt$1073741824$8$1$AAAA$AAAA"), "absurd costs are refused, not run"
    with pytest.raises(ValueError):
        hash_password("")


def test_hash_password_command_prints_a_hash_that_verifies() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "streams.cli", "dashboard", "hash-password", "--password", "open sesame"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    stored = result.stdout.strip()
    assert stored.startswith("scrypt$131072$8$1$")
    assert verify_password("open sesame", stored)


def test_without_demo_mode_the_login_form_is_the_only_page(
    live_store: RunningStore, with_users: dict[str, object]
) -> None:
    at = ok(app().run())

    assert at.title[0].value == "登录"
    assert pages(at) == {"login"}
    assert len(at.metric) == 0 and len(at.dataframe) == 0
    assert "演示模式" not in texts(at)
    with pytest.raises(ValueError):
        at.switch_page("pages/queue.py")


def test_wrong_password_is_refused_and_unknown_user_too(
    live_store: RunningStore, with_users: dict[str, object]
) -> None:
    at = ok(app().run())
    login(at, "op1", "not-the-password")
    assert [e.value for e in at.error] == ["用户名或密码错误。"]
    login(at, "nobody", PASSWORD)
    assert [e.value for e in at.error] == ["用户名或密码错误。"]
    assert pages(at) == {"login"}


def test_five_failures_lock_the_form_for_a_minute(live_store: RunningStore, with_users: dict[str, object]) -> None:
    at = ok(app().run())
    for _ in range(5):
        login(at, "op1", "wrong")

    login(at, "op1", PASSWORD)  # even the right password now waits

    assert "请" in at.error[0].value and "秒后再试" in at.error[0].value
    assert pages(at) == {"login"}


def test_operator_logs_in_and_sees_pages_but_not_the_rules_page(
    live_store: RunningStore, with_users: dict[str, object]
) -> None:
    at = login(ok(app().run()), "op1")

    assert pages(at) == {"map", "queue", "analytics", "system"}
    assert "当前用户：op1（值班操作）" in texts(at)
    assert at.title[0].value == "实时地图"


def test_rule_author_sees_the_rules_page(live_store: RunningStore, with_users: dict[str, object]) -> None:
    at = open_page("rules", user="author1")

    assert "rules" in pages(at)
    assert at.title[0].value == "规则"


def test_viewer_cannot_open_the_rules_page(live_store: RunningStore, with_users: dict[str, object]) -> None:
    at = login(ok(app().run()), "viewer1")

    assert "rules" not in pages(at)
    with pytest.raises(ValueError, match="Could not find a navigation page"):
        at.switch_page("pages/rules.py")


def test_logout_returns_to_the_login_form(live_store: RunningStore, with_users: dict[str, object]) -> None:
    at = login(ok(app().run()), "op1")
    at.button(key="logout").click().run()

    assert pages(at) == {"login"} and at.title[0].value == "登录"


def test_no_users_configured_says_how_to_add_them(live_store: RunningStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CITYOPS_DASHBOARD__DEMO_MODE", "false")
    get_settings.cache_clear()

    at = ok(app().run())

    assert "cityops dashboard hash-password" in at.warning[0].value
    assert len(at.text_input) == 0


def test_demo_mode_is_labelled_and_acts_as_user_demo(live_store: RunningStore) -> None:
    at = open_page("queue", incident=live_store.incidents[0].id)

    assert "演示模式 — 无需登录" in texts(at) or any("演示模式" in str(b.proto) for b in at.get("badge"))
    assert "当前用户：demo" in texts(at)
    assert "将记录为 demo 的操作。" in texts(at)
    assert {"map", "queue", "analytics", "rules", "system"} == pages(at)


def test_oidc_users_get_roles_by_email(live_store: RunningStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CITYOPS_DASHBOARD__DEMO_MODE", "false")
    monkeypatch.setenv("CITYOPS_DASHBOARD__OIDC_PROVIDER", "default")
    monkeypatch.setenv("CITYOPS_DASHBOARD__OIDC_ROLES", '{"li.na@wuhan.gov.cn": ["operator", "rule_author"]}')
    get_settings.cache_clear()

    at = app()
    assert ok(at.run()).button(key="login_oidc").label == "使用单点登录"  # the real redirect needs a provider

    at.user = {"is_logged_in": True, "email": "li.na@wuhan.gov.cn", "name": "Li Na"}
    ok(at.run())
    assert pages(at) == {"map", "queue", "analytics", "rules", "system"}
    assert "当前用户：Li Na" in texts(at)

    other = app()
    other.user = {"is_logged_in": True, "email": "guest@wuhan.gov.cn"}
    ok(other.run())
    assert pages(other) == {"map", "queue", "analytics", "system"}, "unlisted e-mails are viewers"
