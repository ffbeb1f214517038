"""The offline deck and the prepared deck.

- :func:`deck_html`: one self-contained HTML file — every slide a ``<section class="slide">``,
  charts and graphs as inline SVG, images as data URIs, speaker notes (N shows them), no
  script or font from anywhere: it opens from ``file://`` with no server and no network.
  → / Space / PageDown go forward, ← / PageUp back (presentation clickers send PageDown /
  PageUp), Home / End; the URL's hash names the slide (``#1``, ``#2``, …). The 1280 × 720
  design is zoomed to fill any screen.
- :func:`prepare_deck`: the slides built once and kept in the cache (``Cache.talk_dir``),
  named by a key of what they show (:func:`deck_key`: the talk, the stores, the derived
  results, finished jobs), so the dashboard's Talk page reads them instead of building them
  mid-talk.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from dataclasses import asdict
from html import escape
from pathlib import Path

from engine.apps.talk.slides import Slide, build_slides
from engine.apps.talk.talkfile import (
    Talk,
    cache_talk,
    default_talk,
    read_talk,
    talk_toml,
    write_talk,
)
from engine.storage.atomic import write_bytes_atomic, write_json_atomic
from engine.storage.store import Cache

log = logging.getLogger(__name__)

DECK_LAYOUT = 4  # bump when the slides' HTML changes shape: prepared decks are rebuilt

# The slides' own style: shared by the offline deck and the dashboard's Talk page. Designed
# at 1280 × 720 (body ≥ 24 px, formula 44 px), zoomed by the deck / the page to the screen.
SLIDE_CSS = """
.nde-slide { box-sizing: border-box; width: 1280px; height: 720px; padding: 24px 48px 16px;
  background: #ffffff; color: #111827; font-family: "DejaVu Sans", Verdana, Arial, sans-serif;
  font-size: 26px; line-height: 1.3; overflow: hidden; position: relative; text-align: left; }
.nde-slide h2 { font-size: 38px; line-height: 1.15; margin: 0 0 12px; font-weight: 700; color: #111827;
  padding: 0; letter-spacing: 0; }
.nde-slide h3 { font-size: 28px; margin: 0 0 10px; font-weight: 700; color: #111827; padding: 0; }
.nde-slide p { margin: 0 0 14px; font-size: 26px; color: #111827; }
.nde-slide b { font-weight: 700; }
.nde-slide .lead { font-size: 28px; }
.nde-slide .sub { font-size: 26px; color: #374151; margin: -6px 0 4px; }
.nde-slide .col.graph.small img.svg { max-height: 470px; }
.nde-slide .cite { font-size: 24px; color: #374151; position: absolute; bottom: 20px; left: 48px; right: 48px; }
.nde-slide .formula { font-size: 44px; font-weight: 600; line-height: 1.2; margin: 0 0 8px;
  overflow-wrap: anywhere; }
.nde-slide .formula .op { color: #374151; }
.nde-slide .formula .more { font-size: 32px; color: #374151; font-weight: 400; }
.nde-slide .row { display: flex; gap: 32px; align-items: flex-start; }
.nde-slide .col { min-width: 0; }
.nde-slide img.svg { display: block; height: auto; width: auto; max-width: 100%; }
.nde-slide .col.graph img.svg { max-height: 520px; max-width: 640px; }
.nde-slide .col.chart img.svg { max-height: 560px; }
.nde-slide .col.half { flex: 1 1 0; }
.nde-slide .col.half img.svg { max-height: 400px; }
.nde-slide .col.side { flex: 1 1 0; padding-top: 8px; }
.nde-slide .card { border-left: 6px solid #6d28d9; padding: 2px 14px; margin: 0 0 16px; }
.nde-slide .card .value { font-size: 40px; font-weight: 700; line-height: 1.15; }
.nde-slide .card .caption, .nde-slide .caption { font-size: 24px; color: #374151; }
.nde-slide .pos { color: #1d4ed8; } .nde-slide .neg { color: #c2410c; }
.nde-slide .todo { border: 3px dashed #c2410c; padding: 14px 18px; border-radius: 10px; background: #fff7ed;
  margin: 0 0 16px; }
.nde-slide .todo code { display: block; margin-top: 8px; font-size: 24px; color: #111827; background: none;
  font-family: "DejaVu Sans Mono", monospace; white-space: pre-wrap; overflow-wrap: anywhere; padding: 0; }
.nde-slide img.glyph { width: 76px; height: 76px; border: 2px solid #d1d5db; border-radius: 10px;
  margin: 4px; background: #fff; vertical-align: middle; }
.nde-slide img.glyph.big { width: 150px; height: 150px; border: 4px solid #111827; }
.nde-slide .noimg { display: inline-block; padding: 6px 10px; border: 2px solid #d1d5db; border-radius: 10px;
  margin: 4px; }
.nde-slide .question { display: flex; align-items: center; gap: 28px; margin: 22px 0 26px; }
.nde-slide .hidden-logit { position: relative; padding: 18px 22px 0 0; }
.nde-slide .qmark { position: absolute; right: 0; top: -12px; font-size: 64px; font-weight: 800; color: #c2410c; }
.nde-slide .question .op { font-size: 60px; color: #374151; }
.nde-slide .pool { display: flex; flex-wrap: wrap; align-items: center; max-width: 820px; }
.nde-slide .pool .more { font-size: 26px; color: #374151; margin-left: 10px; }
.nde-slide ul.communities { list-style: none; padding: 0; margin: 0 0 14px; }
.nde-slide ul.communities li { font-size: 28px; margin: 0 0 8px; overflow-wrap: anywhere; }
.nde-slide .swatch { display: inline-block; width: 22px; height: 22px; border-radius: 4px; margin-right: 10px;
  vertical-align: -2px; }
.nde-slide table.report { border-collapse: collapse; font-size: 24px; margin: 4px 0 0; width: 100%;
  table-layout: fixed; }
.nde-slide table.report th, .nde-slide table.report td { border-bottom: 1px solid #d1d5db; padding: 4px 6px;
  text-align: left; overflow-wrap: anywhere; font-size: 24px; color: #111827; }
.nde-slide table.report th { font-weight: 700; }
.nde-slide .counter { position: absolute; right: 24px; bottom: 12px; font-size: 24px; color: #374151; }
"""

_DECK_CSS = """
html, body { margin: 0; padding: 0; background: #111827; overflow: hidden; }
section.slide { display: none; }
section.slide.current { display: block; }
#stage { position: absolute; left: 0; top: 0; }
aside.notes { display: none; }
body.show-notes section.slide.current aside.notes { display: block; position: fixed; left: 0; right: 0;
  bottom: 0; max-height: 40vh; overflow: auto; background: #fefce8; color: #111827; font: 24px/1.35
  "DejaVu Sans", Arial, sans-serif; padding: 12px 24px; border-top: 3px solid #ca8a04; }
"""

_DECK_JS = """
(function () {
  var slides = Array.prototype.slice.call(document.querySelectorAll('section.slide'));
  var stage = document.getElementById('stage');
  var current = 0;
  function fit() {
    var z = Math.min(window.innerWidth / 1280, window.innerHeight / 720);
    stage.style.zoom = z;
    stage.style.left = Math.max(0, (window.innerWidth - 1280 * z) / 2 / z) + 'px';
    stage.style.top = Math.max(0, (window.innerHeight - 720 * z) / 2 / z) + 'px';
  }
  function show(n) {
    n = Math.max(0, Math.min(slides.length - 1, n));
    for (var k = 0; k < slides.length; k++) { slides[k].classList.toggle('current', k === n); }
    current = n;
    var hash = '#' + (n + 1);
    if (location.hash !== hash) { location.replace(hash); }
  }
  function fromHash() {
    var m = /^#(\\d+)$/.exec(location.hash);
    show(m ? parseInt(m[1], 10) - 1 : 0);
  }
  document.addEventListener('keydown', function (e) {
    if (e.altKey || e.ctrlKey || e.metaKey) { return; }
    var k = e.key;
    if (k === 'ArrowRight' || k === ' ' || k === 'PageDown' || k === 'ArrowDown' || k === 'Enter') {
      e.preventDefault(); show(current + 1);
    } else if (k === 'ArrowLeft' || k === 'PageUp' || k === 'ArrowUp' || k === 'Backspace') {
      e.preventDefault(); show(current - 1);
    } else if (k === 'Home') { e.preventDefault(); show(0); }
    else if (k === 'End') { e.preventDefault(); show(slides.length - 1); }
    else if (k === 'n' || k === 'N') { document.body.classList.toggle('show-notes'); }
  });
  document.addEventListener('click', function (e) {
    if (e.target.closest && e.target.closest('aside.notes')) { return; }
    show(current + (e.clientX < window.innerWidth / 3 ? -1 : 1));
  });
  window.addEventListener('hashchange', fromHash);
  window.addEventListener('resize', fit);
  fit();
  fromHash();
})();
"""


def slide_section(slide: Slide, number: int, total: int) -> str:
    """One slide as the deck writes it (the Talk page shows the same ``div.nde-slide``)."""
    note = f'<aside class="notes">{escape(slide.note)}</aside>' if slide.note else ""
    return (f'<section class="slide" id="slide-{number}" data-kind="{slide.kind}">'
            f"{slide_div(slide, number, total)}{note}</section>")


def slide_div(slide: Slide, number: int, total: int) -> str:
    return (f'<div class="nde-slide"><h2>{escape(slide.title)}</h2>{slide.html}'
            f'<div class="counter">{number} / {total}</div></div>')


def deck_html(slides: list[Slide], title: str) -> str:
    """The whole deck: one self-contained HTML file."""
    sections = "\n".join(slide_section(s, n, len(slides)) for n, s in enumerate(slides, 1))
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{escape(title)}</title>"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<style>{SLIDE_CSS}{_DECK_CSS}</style></head><body><div id=\"stage\">\n{sections}\n</div>"
            f"<script>{_DECK_JS}</script></body></html>\n")


# ----------------------------------------------------------------------------- the prepared deck


# The derived results the slides read (every path, redundancy and spectrum, floors,
# communities, Conjecture 1): a dependency path solved for one target on another page, or a
# Gram, does not make a prepared deck stale.
_DECK_INPUTS = ("path-index-", "redundancy-", "floor-", "communities-", "screening-")
_APPLICATION_KINDS = ("newclasses", "regularizer")


def deck_key(cache: Cache, talk: Talk) -> str:
    """What a prepared deck depends on: the talk, the stores' content (the hash their manifests
    record), the derived results the slides read (file names), the layout of the best-subset
    curves and the finished application jobs: milliseconds, nothing hashed. The talk's TOML
    holds each slide's α or number of sources (``sources = m``: a best subset)."""
    from engine.stages.sparsity import (
        LAYOUT as SPARSITY_LAYOUT,  # the "how few sources" slide's curves
    )

    parts = {"layout": DECK_LAYOUT, "sparsity": SPARSITY_LAYOUT, "talk": talk_toml(talk),
             "stores": {n: _stamp(cache.store_manifest_path(n)) for n in cache.store_names()}}
    derived = cache.derived_dir
    parts["derived"] = sorted(p.name for p in derived.glob("*.json") if p.name.startswith(_DECK_INPUTS)) \
        if derived.exists() else []
    parts["jobs"] = _finished_applications(cache)
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]


def _stamp(path: Path) -> str:
    """A store's content hash as its manifest records it, read from the manifest's first
    kilobytes without parsing or verifying it (a demo manifest is 2 MB of sample ids: parsing
    and verifying three of them took ~1 s, too much for every slide); where it is not found
    there, the file's size and modification time. Survives a copy of the cache."""
    try:
        with path.open("rb") as f:
            head = f.read(8192).decode("utf-8", errors="replace")
        found = re.search(r'"arrays_sha256"\s*:\s*"([0-9a-f]{64})"', head)
        if found:
            return found.group(1)
        st = path.stat()
        return f"{st.st_size}-{st.st_mtime_ns}"
    except OSError:
        return ""


def _finished_applications(cache: Cache) -> list[int]:
    if not cache.jobs_table_path.exists():
        return []
    from engine.jobs.manager import jobs_table

    return sorted(j.id for j in jobs_table(cache).list(limit=500)
                  if j.kind in _APPLICATION_KINDS and j.state == "succeeded")


def talk_of(cache: Cache, talk_path: str | Path | None = None) -> Talk:
    """The talk in ``talk_path``; else the cache's talk file, written first from the cache's
    recommendations when there is none (so the speaker has a file to edit, and the Talk page
    reads it in milliseconds)."""
    if talk_path:
        return read_talk(talk_path)
    if not cache.talk_path.exists():
        write_talk(default_talk(cache), cache.talk_path)
    return cache_talk(cache)


def prepare_deck(cache: Cache, talk_path: str | Path | None = None) -> tuple[Path, bool]:
    """Build the talk's slides unless a deck with the same key is prepared; returns (the
    prepared deck's JSON, True when it was already there)."""
    cache = Cache.of(cache)
    talk = talk_of(cache, talk_path)
    key = deck_key(cache, talk)
    path = cache.talk_dir / f"deck-{key}.json"
    if path.exists():
        return path, True
    t = time.perf_counter()
    slides = build_slides(cache, talk)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, {"key": key, "title": talk.title, "created": time.time(),
                             "seconds": time.perf_counter() - t, "slides": [asdict(s) for s in slides]})
    log.info("talk: %d slides prepared in %.1f s (%s)", len(slides), time.perf_counter() - t, path)
    _prune(cache, keep=KEEP_DECKS)
    return path, False


KEEP_DECKS = 4  # prepared decks kept in the cache (the newest; ~2 MB each on the demo)


def _prune(cache: Cache, keep: int) -> None:
    decks = sorted(cache.talk_dir.glob("deck-*.json"), key=lambda p: p.stat().st_mtime_ns)
    for old in decks[:-keep]:
        old.unlink(missing_ok=True)


def read_prepared(path: str | Path) -> tuple[str, list[Slide]]:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return data["title"], [Slide(**s) for s in data["slides"]]


def newest_prepared(cache: Cache) -> Path | None:
    """The most recently prepared deck of the cache (any key), or None."""
    found = sorted(cache.talk_dir.glob("deck-*.json"), key=lambda p: p.stat().st_mtime) if cache.talk_dir.exists() else []
    return found[-1] if found else None


def export_deck(cache: Cache, out: str | Path, talk_path: str | Path | None = None) -> tuple[Path, int]:
    """Write the offline deck to ``out`` (from the prepared slides, built now if needed);
    returns (the file, its number of slides)."""
    prepared, _ = prepare_deck(cache, talk_path)
    title, slides = read_prepared(prepared)
    out = Path(out)
    write_bytes_atomic(out, deck_html(slides, title).encode("utf-8"))
    return out, len(slides)
