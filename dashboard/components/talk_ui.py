"""The Talk page's pieces: projector styling, keyboard navigation, "Add to talk".

Keyboard: Streamlit has no key events, so a zero-size component (an iframe of the same
origin) installs one ``keydown`` listener in the app's own document, once per browser tab.
On → / Space / PageDown / ↓ it clicks the page's hidden "next" button, on ← / PageUp / ↑ the
"previous" one (presentation clickers send PageDown / PageUp), Home / End the first / last,
Escape leaves the talk, N shows the speaker's note. It acts only while the Talk page's buttons are on screen, and never
while the focus is in a text field. It also sets ``--nde-zoom`` so the 1280 × 720 slide fills
any window.
"""

from __future__ import annotations

import streamlit as st

from engine.apps.talk.deck import SLIDE_CSS
from engine.apps.talk.talkfile import TalkSlide, add_slide
from engine.storage.store import Cache

# Keys of the page's buttons (the listener finds them by Streamlit's ``st-key-<key>`` class).
NEXT, PREV, FIRST, LAST, EXIT = "talk_next", "talk_prev", "talk_first", "talk_last", "talk_exit"

# No sidebar, no header, toolbar or status widget, no padding: only the slide.
CHROME_CSS = """
<style>
  [data-testid="stSidebar"], [data-testid="stSidebarCollapsedControl"], [data-testid="stHeader"],
  [data-testid="stToolbar"], [data-testid="stDecoration"], [data-testid="stStatusWidget"],
  [data-testid="stSidebarNav"], header, footer { display: none !important; }
  html, body, [data-testid="stApp"], [data-testid="stMain"] { overflow: hidden !important; background: #111827; }
  [data-testid="stMainBlockContainer"] { padding: 0 !important; max-width: none !important; }
  [data-testid="stMain"] [data-testid="stVerticalBlock"] { gap: 0 !important; }
  .nde-slide { zoom: var(--nde-zoom, 1); margin: 0 auto; }
  .st-key-talk_keys { position: fixed; width: 0; height: 0; overflow: hidden; }
  .st-key-talk_bar { position: fixed; right: 8px; bottom: 44px; z-index: 10; opacity: .25; width: auto !important; }
  .st-key-talk_bar:hover, .st-key-talk_bar:focus-within { opacity: 1; }
  .st-key-talk_bar [data-testid="stHorizontalBlock"] { gap: 4px; flex-wrap: nowrap; }
  .st-key-talk_bar [data-testid="stColumn"] { width: auto !important; flex: 0 0 auto !important; min-width: 0; }
  .st-key-talk_first, .st-key-talk_last { display: none; }
  .nde-notes { display: none; }
  html.nde-show-notes .nde-notes { display: block; position: fixed; left: 0; right: 0; bottom: 0; z-index: 20;
    max-height: 40vh; overflow: auto; background: #fefce8; color: #111827; font: 24px/1.35 "DejaVu Sans", Arial,
    sans-serif; padding: 12px 24px; border-top: 3px solid #ca8a04; }
  .st-key-talk_banner { position: fixed; left: 8px; bottom: 8px; z-index: 10; max-width: 60vw; }
</style>
"""

_LISTENER = """
(function () {
  // The slide the speaker wants; a pump clicks the page's buttons until the slide shown (its
  // counter, "n / total") is that one: a press during a rerun is never lost, and never doubled.
  var want = null, lastClick = 0, clickedAt = null;
  function shown() {
    var c = document.querySelector('.nde-slide .counter');
    if (!c) { return null; }
    var m = /^(\\d+) \\/ (\\d+)$/.exec(c.textContent.trim());
    return m ? [parseInt(m[1], 10), parseInt(m[2], 10)] : null;
  }
  function click(key) {
    var b = document.querySelector('.st-key-' + key + ' button');
    if (b) { b.click(); }
  }
  function pump() {
    var s = shown();
    if (!s || want === null) { return; }
    var n = s[0], total = s[1];
    want = Math.max(1, Math.min(total, want));
    if (want === n) { want = null; return; }
    if (clickedAt === n && Date.now() - lastClick < 2500) { return; }  // that click's rerun is on its way
    clickedAt = n; lastClick = Date.now();
    if (want === 1 && n > 2) { click('talk_first'); }
    else if (want === total && n < total - 1) { click('talk_last'); }
    else { click(want > n ? 'talk_next' : 'talk_prev'); }
  }
  setInterval(pump, 40);
  document.addEventListener('keydown', function (e) {
    if (!document.querySelector('.st-key-talk_next')) { return; }
    var t = e.target;
    if (t && (t.tagName === 'INPUT' || t.tagName === 'TEXTAREA' || t.isContentEditable)) { return; }
    if (e.altKey || e.ctrlKey || e.metaKey) { return; }
    var k = e.key, s = shown();
    if (!s) { return; }
    var base = want === null ? s[0] : want;
    if (k === 'ArrowRight' || k === ' ' || k === 'PageDown' || k === 'ArrowDown') { want = base + 1; }
    else if (k === 'ArrowLeft' || k === 'PageUp' || k === 'ArrowUp') { want = base - 1; }
    else if (k === 'Home') { want = 1; }
    else if (k === 'End') { want = s[1]; }
    else if (k === 'Escape') { click('talk_exit'); }
    else if (k === 'n' || k === 'N') { document.documentElement.classList.toggle('nde-show-notes'); }
    else { return; }
    e.preventDefault(); e.stopPropagation();
    pump();
  }, true);
  function fit() {
    var z = Math.min(window.innerWidth / 1280, window.innerHeight / 720);
    document.documentElement.style.setProperty('--nde-zoom', String(z));
  }
  window.addEventListener('resize', fit);
  fit();
})();
"""

_INSTALL = """<!DOCTYPE html><html><body>
<script>
(function () {
  var w = window.parent;
  if (w.__ndeTalkKeys) { return; }
  w.__ndeTalkKeys = true;
  var s = w.document.createElement('script');
  s.textContent = %s;
  w.document.head.appendChild(s);
})();
</script></body></html>
"""


def projector_style() -> None:
    """Hide Streamlit's chrome and style the slide (the deck's own CSS)."""
    st.html(CHROME_CSS)
    st.html(f"<style>{SLIDE_CSS}</style>")


def keyboard() -> None:
    """Install the key listener in the app's document (once per tab; a zero-size iframe)."""
    import json

    with st.container(key="talk_keys"):
        st.iframe(_INSTALL % json.dumps(_LISTENER), height=1)


def add_to_talk_ui(root: str, slide, key: str) -> None:
    """"Add to talk": append this view as a slide of the cache's talk file (cache/talk.toml),
    which the Talk page and ``python -m engine talk --export`` show (``slide``: a
    :class:`TalkSlide`, or what makes one when the button is pressed)."""
    if st.button("Add to talk", key=key, icon=":material/co_present:",
                 help="Append this dependency as a slide of the cache's talk (talk.toml); "
                      "see it on the Talk page"):
        path = add_slide(Cache(root), slide if isinstance(slide, TalkSlide) else slide())
        st.toast(f"Added to the talk ({path.name}): open the Talk page to prepare and show it.",
                 icon=":material/co_present:")
