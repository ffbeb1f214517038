"""Neural Dependency Explorer — the dashboard's entry point.

    python -m dashboard                     # reads ./cache, or $NDE_CACHE (what ./run.sh starts)
    streamlit run dashboard/app.py          # the same app, started a little slower

One file per page under ``dashboard/app_pages/`` (not ``pages/``: Streamlit would treat that
folder as its older multipage mode and run a deep-linked page without this script). This
script sets the layout, the shared sidebar (which cache) and the navigation.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `streamlit run dashboard/app.py` from anywhere
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from dashboard.components.loaders import cache_root  # noqa: E402

PAGES = Path(__file__).parent / "app_pages"

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
        st.Page(PAGES / "emergence.py", title="Emergence", icon=":material/trending_up:", url_path="emergence"),
        st.Page(PAGES / "data.py", title="Data", icon=":material/database:", url_path="data"),
        st.Page(PAGES / "talk.py", title="Talk", icon=":material/co_present:", url_path="talk"),
    ]
    if (PAGES / "jobs.py").exists():
        pages.append(st.Page(PAGES / "jobs.py", title="Jobs", icon=":material/settings:", url_path="jobs"))
    return pages


root = cache_root()
page = st.navigation(_pages())
st.sidebar.caption(f"Cache: `{root}`")
page.run()
