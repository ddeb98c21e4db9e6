"""Helpers of the dashboard's AppTest tests: run a page, log in, read what the page shows."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from conftest import APP, PASSWORD
from streamlit.testing.v1 import AppTest

PAGES = {
    "map": "pages/map.py",
    "queue": "pages/queue.py",
    "analytics": "pages/analytics.py",
    "rules": "pages/rules.py",
    "system": "pages/system.py",
}
CJK = re.compile(r"[\u4e00-\u9fff]")


def app(timeout: float = 60) -> AppTest:
    return AppTest.from_file(str(APP), default_timeout=timeout)


def ok(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    return at


def open_page(page: str, *, user: str | None = None, lang: str | None = None, **query: str) -> AppTest:
    """A fresh session on ``page`` (logged in as ``user`` when login is required)."""
    at = ok(app().run())
    if user is not None:
        login(at, user)
    if lang is not None:
        at.selectbox(key="lang_select").set_value(lang).run()
    for key, value in query.items():
        at.query_params[key] = value
    at.switch_page(PAGES[page])
    return ok(at.run())


def login(at: AppTest, user: str, password: str = PASSWORD) -> AppTest:
    at.text_input(key="login_user").input(user)
    at.text_input(key="login_password").input(password)
    at.button[0].click()  # the form's submit button
    return ok(at.run())


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def frames(at: AppTest) -> list[Any]:
    return [d.value for d in at.dataframe]


def deck(at: AppTest, index: int = 0) -> dict[str, Any]:
    charts = at.get("deck_gl_json_chart")
    assert len(charts) > index, f"expected a map, found {len(charts)}"
    spec: dict[str, Any] = json.loads(charts[index].proto.json)
    return spec


def layer(spec: dict[str, Any], layer_id: str) -> dict[str, Any]:
    found = [x for x in spec["layers"] if x["id"] == layer_id]
    assert found, f"no layer {layer_id!r} in {[x['id'] for x in spec['layers']]}"
    return found[0]


def layer_ids(spec: dict[str, Any]) -> list[str]:
    return [x["id"] for x in spec["layers"]]


def texts(at: AppTest) -> str:
    """Every text element of the page (not widgets, charts or tables)."""
    parts = [
        e.value
        for kind in ("title", "header", "subheader", "caption", "markdown", "error", "info", "warning", "success")
        for e in getattr(at, kind)
    ]
    parts += [m.label for m in at.metric] + [str(m.value) for m in at.metric]
    return "\n".join(str(p) for p in parts)


def badges(at: AppTest) -> str:
    """The status and severity badges of the incident detail."""
    found = [m.value for m in at.main.markdown if "-badge[" in m.value and ("状态" in m.value or "Status" in m.value)]
    assert len(found) == 1, found
    return str(found[0])


def widget_labels(at: AppTest) -> list[str]:
    out = []
    for kind in ("multiselect", "selectbox", "checkbox", "text_input", "text_area", "radio", "button", "date_input"):
        out += [str(w.label) for w in getattr(at, kind)]
    return out


def pages(at: AppTest) -> set[str]:
    """The pages ``st.navigation`` registered in the last run, by script name ("login" for the login
    form, a function page). AppTest keeps no public list of them."""
    return {
        Path(str(info["script_path"])).stem if info.get("script_path") else "login"
        for info in at._registered_pages.values()
    }
