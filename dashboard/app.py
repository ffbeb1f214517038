"""Neural Dependency Explorer — the dashboard's entry point.

    streamlit run dashboard/app.py          # reads ./cache, or $NDE_CACHE

One file per page under ``dashboard/pages/``; this script sets the layout, the shared
sidebar (which cache) and the navigation.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `streamlit run dashboard/app.py` from anywhere
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from dashboard.components.loaders import cache_root  # noqa: E402
from dashboard.components.shell import mark_shell  # noqa: E402

PAGES = Path(__file__).parent / "pages"

st.set_page_config(
    page_title="Neural Dependency Explorer",
    page_icon=str(Path(__file__).parent / "static" / "icon.png"),  # a local file: no icon CDN
    layout="wide",
    initial_sidebar_state="expanded",
)


def _pages() -> list:
    pages = [
        st.Page(PAGES / "explore.py", title="Explore", icon=":material/hub:", default=True, url_path="explore"),
        st.Page(PAGES / "compare.py", title="Compare models", icon=":material/compare_arrows:", url_path="compare"),
        st.Page(PAGES / "atlas.py", title="Atlas", icon=":material/map:", url_path="atlas"),
        st.Page(PAGES / "theory.py", title="Theory", icon=":material/functions:", url_path="theory"),
        st.Page(PAGES / "data.py", title="Data", icon=":material/database:", url_path="data"),
    ]
    if (PAGES / "jobs.py").exists():
        pages.append(st.Page(PAGES / "jobs.py", title="Jobs", icon=":material/settings:", url_path="jobs"))
    return pages


mark_shell()
root = cache_root()
page = st.navigation(_pages())
st.sidebar.caption(f"Cache: `{root}`")
page.run()
