"""``python -m engine talk``: the talk mode's command — the offline deck and its preparation.

    python -m engine talk --export talk.html [--talk talk.toml]   # one self-contained HTML file
    python -m engine talk --prepare [--talk talk.toml]            # build the slides the Talk page shows
    python -m engine talk --write-default talk.toml               # the default talk of this cache, to edit

Without ``--talk`` the cache's own talk file (``cache/talk.toml``, which the dashboard's "Add
to talk" buttons extend) is used, or the default talk generated from the cache's
recommendations when there is none.
"""

from __future__ import annotations

import argparse
import logging
import time

from engine.storage.store import Cache

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "talk",
        help="the talk mode: write the offline deck (one HTML file), prepare the Talk page's slides",
        description="The paper's story in about eight slides on this cache's models. The deck opens from "
        "file:// with no server and no network; → / Space / PageDown forward, ← / PageUp back, N: notes.",
    )
    p.add_argument("--export", metavar="HTML", help="write the offline deck to this file")
    p.add_argument("--talk", metavar="TOML", help="the talk file (default: the cache's talk.toml, "
                   "else the default talk of the cache)")
    p.add_argument("--prepare", action="store_true", help="build and keep the slides the dashboard's Talk page shows")
    p.add_argument("--write-default", metavar="TOML", help="write the cache's default talk to this file (to edit)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from engine.apps.talk.deck import export_deck, prepare_deck
    from engine.apps.talk.talkfile import default_talk, write_talk
    from engine.errors import InvalidInputError

    cache = Cache(args.cache)
    if not (args.export or args.prepare or args.write_default):
        raise InvalidInputError("talk: nothing to do; expected --export HTML, --prepare or --write-default TOML "
                                "(e.g. `python -m engine talk --export talk.html`)")
    if args.write_default:
        path = write_talk(default_talk(cache), args.write_default)
        print(f"talk: the default talk of {cache.root} written to {path}")
    if args.prepare:
        t = time.perf_counter()
        path, hit = prepare_deck(cache, args.talk)
        state = "already prepared" if hit else f"prepared in {time.perf_counter() - t:.1f} s"
        print(f"talk: slides {state} ({path})")
    if args.export:
        t = time.perf_counter()
        out, n = export_deck(cache, args.export, args.talk)
        size = out.stat().st_size
        print(f"talk: {n} slides written to {out} ({size / 1e6:.1f} MB, {time.perf_counter() - t:.1f} s); "
              "open it in a browser: → / Space / PageDown next, ← / PageUp back, N: speaker notes")
    return 0
