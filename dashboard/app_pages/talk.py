"""Talk: the paper's story in about eight slides, full screen, for a projector.

The slides are the offline deck's (``engine.apps.talk``), prepared before the talk — by
``python -m engine demo``, ``python -m engine talk --prepare`` or this page's button — and
read here, so a slide costs a file read the first time and nothing afterwards: no spinner on
stage. → / Space / PageDown next, ← / PageUp back, Home / End, N the speaker's note, Escape
leaves; the address is ``/talk?slide=N``. The same slides download as one HTML file that
opens offline.
"""

from __future__ import annotations

import time
from html import escape

import streamlit as st

from dashboard.components import state
from dashboard.components.loaders import cache_root
from dashboard.components.talk_ui import EXIT, FIRST, LAST, NEXT, PREV, keyboard, projector_style
from dashboard.components.widgets import guard
from engine.apps.talk.deck import (
    deck_html,
    deck_key,
    newest_prepared,
    prepare_deck,
    read_prepared,
    slide_div,
    talk_of,
)
from engine.storage.store import Cache

_SLIDE = "talk_slide"


@st.cache_resource(max_entries=4)
def _read(path: str, mtime: int):
    return read_prepared(path)


def _deck(root: str):
    """(title, slides, stale): the prepared deck of the current talk, else the newest one
    prepared (stale = True), else None."""
    cache = Cache(root)
    if cache.talk_path.exists():
        talk = guard(talk_of, cache)
        path = cache.talk_dir / f"deck-{deck_key(cache, talk)}.json"
        if path.exists():
            return (*_read(str(path), path.stat().st_mtime_ns), False)
    newest = newest_prepared(cache)
    if newest is None:
        return None
    return (*_read(str(newest), newest.stat().st_mtime_ns), True)


def _prepare_button(root: str, label: str) -> None:
    if st.button(label, key="talk_prepare", icon=":material/slideshow:"):
        t = time.perf_counter()
        with st.spinner("Preparing the slides (seconds; once, before the talk)…"):
            guard(prepare_deck, Cache(root))
        st.toast(f"Slides prepared in {time.perf_counter() - t:.1f} s.")
        st.rerun()


def _nothing_prepared(root: str) -> None:
    st.title("Talk")
    st.markdown(
        "The talk's slides are prepared before the talk, so that none of them waits on stage. "
        "`python -m engine demo` prepares them for the embedded default; for your own stores:\n\n"
        f"```bash\npython -m engine --cache {root} talk --prepare\n```\n\n"
        "The talk file (`talk.toml` in the cache; written from the cache's recommendations the first "
        "time) names each slide's model, target and α; **Add to talk** on Explore and Compare appends "
        "to it. `python -m engine talk --export talk.html` writes the same slides as one HTML file "
        "that opens offline.")
    _prepare_button(root, "Prepare the talk now")


def _go(delta: int | None = None, to: int | None = None, total: int = 1) -> None:
    now = st.session_state.get(_SLIDE, 1)
    st.session_state[_SLIDE] = max(1, min(total, to if to is not None else now + (delta or 0)))


def _slide_number(total: int) -> int:
    params = state.incoming()
    if "slide" in params:
        try:
            st.session_state[_SLIDE] = int(params["slide"])
        except ValueError:
            state.warn(f"slide in the link must be a number from 1 to {total}; got {params['slide']!r}.")
    n = max(1, min(total, int(st.session_state.get(_SLIDE, 1))))
    st.session_state[_SLIDE] = n
    return n


def _bar(title: str, slides, total: int, root: str) -> None:
    with st.container(key="talk_bar"):
        c = st.columns(5, gap=None)
        c[0].button("←", key=PREV, on_click=_go, kwargs={"delta": -1, "total": total}, help="Previous (← / PageUp)")
        c[1].button("→", key=NEXT, on_click=_go, kwargs={"delta": 1, "total": total}, help="Next (→ / Space / PageDown)")
        c[2].download_button("Deck", data=lambda: deck_html(slides, title), file_name="talk.html", mime="text/html",
                             key="talk_download", on_click="ignore", icon=":material/download:",
                             help="The same slides as one HTML file that opens offline (file://)")
        if c[3].button("Exit", key=EXIT, help="Leave the talk (Escape)"):
            st.switch_page("app_pages/explore.py")
        c[4].button("⏮", key=FIRST, on_click=_go, kwargs={"to": 1, "total": total})
        st.button("⏭", key=LAST, on_click=_go, kwargs={"to": total, "total": total})


def main() -> None:
    root = cache_root()
    found = _deck(root)
    if found is None:
        _nothing_prepared(root)
        return
    projector_style()
    title, slides, stale = found
    total = len(slides)
    n = _slide_number(total)
    state.show_messages()
    slide = slides[n - 1]
    note = f'<aside class="nde-notes">{escape(slide.note)}</aside>' if slide.note else ""
    st.html(slide_div(slide, n, total) + note)
    state.publish(slide=n)
    keyboard()
    _bar(title, slides, total, root)
    if stale:
        with st.container(key="talk_banner"):
            st.caption("These slides were prepared before the talk file or the cache changed.")
            _prepare_button(root, "Prepare again")


main()
