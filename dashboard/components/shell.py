"""Keep every page inside the app's shell (layout, navigation, sidebar).

Streamlit still knows the old "pages/ folder" multipage mode: until ``st.navigation`` has
run once in the server process, a deep link such as ``/explore`` runs ``pages/explore.py``
on its own, without ``app.py``. :func:`require_shell` notices that (the shell's flag is
missing while the folder mode is on), switches the folder mode off and reruns, so the
entry script runs and routes the same URL through ``st.navigation``.
"""

from __future__ import annotations

import streamlit as st

SHELL_FLAG = "_nde_shell"


def mark_shell() -> None:
    """Called by app.py on every run, before the page runs."""
    st.session_state[SHELL_FLAG] = True


def require_shell() -> None:
    """First statement of each page: rerun through app.py when started without it."""
    if st.session_state.get(SHELL_FLAG):
        return
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        st.rerun()
