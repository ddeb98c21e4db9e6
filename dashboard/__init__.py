"""cityops dashboard: the Streamlit operations view (``python -m streamlit run dashboard/app.py``).

Stands on the read side of ``sinks`` (``sinks.read.StoreReader`` through Quack), on
``sinks.actions.ActionSender`` for operator actions, and on the pack's zone layers from ``rules``;
it never opens the DuckDB file. Pages live in ``dashboard/pages/`` and are listed in
``dashboard/app.py``; texts live in ``dashboard/i18n/``; see ``docs/dashboard.md``.
"""

from __future__ import annotations

from dashboard.i18n import LANG_KEY, LANGUAGES, Lang, TextsError, t
from dashboard.passwords import hash_password, verify_password

__all__ = ["LANGUAGES", "LANG_KEY", "Lang", "TextsError", "hash_password", "require_app_shell", "t", "verify_password"]


def require_app_shell() -> None:
    """Call first in every page script: makes sure the page runs inside ``dashboard/app.py``.

    Streamlit treats a ``pages/`` folder beside the entry script as a legacy (v1) multipage app
    until the first ``st.navigation`` call in the process. Until then, a request for a page URL
    (a fresh server and a bookmarked ``/overview``; every ``AppTest`` run after the first) runs
    the page script alone, without the language switch, demo badge and navigation. This switches
    the process to ``st.navigation`` mode and reruns, so ``app.py`` runs and then this page.
    """
    import streamlit as st
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        st.rerun()
