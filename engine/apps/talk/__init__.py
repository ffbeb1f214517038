"""Talk mode: the paper's story told in about eight slides on the cache at hand.

- :mod:`engine.apps.talk.talkfile`: the talk file (a small TOML: each slide's model(s), target, α
  or number of sources, speaker note) — read, written, and generated from the cache's
  recommendations (:func:`default_talk`);
- :mod:`engine.apps.talk.context`: what the slides are built from (a slide's resolved
  dependency, the per-deck :class:`SlideContext`, the HTML pieces they share);
- :mod:`engine.apps.talk.slides`: each slide's content as HTML (text, inline SVG charts and
  graphs, class images as data URIs), built from the cached stages — nothing is solved for
  every target here;
- :mod:`engine.apps.talk.deck`: the offline deck (one self-contained HTML file, keyboard
  navigation, ``#n`` per slide) and the prepared deck the dashboard's Talk page reads.

No Streamlit here: the dashboard's Talk page shows the same slide HTML.
"""
