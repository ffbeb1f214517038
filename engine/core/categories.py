"""Categories by index, name or synset id: one resolver for the CLI, the dashboard and training.

A category is given as an index (``"12"``), an exact class name, a name's first word when that
is unique (glyph classes: the character itself, ``"é"``), or a dataset id such as an
ImageNet synset (``"n01440764"``) when the store records them.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

import numpy as np

from engine.errors import NotFoundError

_INDEX_RE = re.compile(r"^-?[0-9]{1,18}$")


def parse_index(text: str) -> int | None:
    """An integer written with ASCII digits (``"12"``, ``"-1"``), else None.

    ``str.isdigit`` is not the test: it accepts "²" and "١٢", which ``int`` then refuses
    or reads as another number; such text is a (non-existent) class name instead.
    """
    text = str(text).strip()
    return int(text) if _INDEX_RE.match(text) else None


def find_category(class_names: Sequence[str], token: str | int, ids: Sequence[str] | None = None) -> int | str:
    """One category from an index, an exact class name, a dataset id (``ids``, e.g. synsets)
    or a name's first word when that is unique. Returns the index, or a sentence saying why
    there is none (callers raise it with their own error type and context)."""
    text = str(token).strip()
    i = parse_index(text)
    if i is not None:
        return i if 0 <= i < len(class_names) else f"index {i} is out of range 0..{len(class_names) - 1}"
    matches = [j for j, n in enumerate(class_names) if n == text]
    if not matches and ids is not None:
        matches = [j for j, n in enumerate(ids) if n == text]
    matches = matches or [j for j, n in enumerate(class_names) if n.split(" ")[0] == text]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        return (f"no category named {text!r} ({text!r} matches 0 class names or first words); give an "
                f"index 0..{len(class_names) - 1}, an exact class name or a name's first word "
                f"(e.g. {class_names[0]!r})")
    return f"{text!r} matches {len(matches)} class names by their first word; give its index or its exact name"


def resolve_targets(store, targets: list[str | int] | None) -> list[int]:
    """Targets given as indices, exact class names, ids or unique first words (the CLI);
    every category of ``store`` when ``targets`` is empty."""
    if not targets:
        return list(range(store.k))
    ids = category_ids(store.manifest) if hasattr(store, "manifest") else None
    out = []
    for t in targets:
        i = find_category(store.class_names, t, ids)
        if isinstance(i, str):
            raise NotFoundError(f"store {store.name!r}: {i}")
        out.append(i)
    return out


def category_ids(manifest: dict) -> list[str] | None:
    """Dataset ids of a store's categories when it records them (ImageFolder folder names,
    i.e. WordNet synsets for ImageNet; or an explicit ``class_ids`` list), else None."""
    k = manifest.get("k")
    for value in (manifest.get("class_ids"), (manifest.get("dataset_info") or {}).get("folder_names")):
        if isinstance(value, list) and len(value) == k and all(isinstance(v, str) for v in value):
            return value
    return None


def search_categories(names: Sequence[str], query: str, ids: Sequence[str] | None = None,
                      limit: int | None = None) -> list[int]:
    """Indices of the categories matching ``query``, best first: the index itself; the exact
    glyph or name as typed ("O" finds "O LATIN CAPITAL LETTER O" before "o …"), then ignoring
    case; then names or ids that start with it, as typed and then ignoring case; then that
    contain it, likewise. All of them for an empty query (up to ``limit``)."""
    raw = str(query).strip()
    q = raw.lower()
    if not q:
        return list(range(len(names) if limit is None else min(limit, len(names))))
    tiers: list[list[int]] = []
    i = parse_index(q)
    if i is not None and 0 <= i < len(names):
        tiers.append([i])
    lowered = [n.lower() for n in names]
    id_low = None if ids is None else [i.lower() for i in ids]
    tests = (lambda s, w: s == w or s.split(" ")[0] == w, lambda s, w: s.startswith(w), lambda s, w: w in s)
    for test in tests:
        for texts, ident, word in ((names, ids, raw), (lowered, id_low, q)):  # as typed, then any case
            hit = [j for j, s in enumerate(texts) if test(s, word)]
            if ident is not None:
                hit += [j for j, s in enumerate(ident) if test(s, word)]
            tiers.append(hit)
    out, seen = [], set()
    for tier in tiers:
        for j in tier:
            if j not in seen:
                seen.add(j)
                out.append(j)
                if limit is not None and len(out) >= limit:
                    return out
    return out


def is_glyph_name(name: str) -> bool:
    """True for glyph class names, ``"<char> <UNICODE NAME>"`` (engine.ingest.glyphs.char_name)."""
    if len(name) < 3 or name[1] != " ":
        return False
    return unicodedata.name(name[0], f"U+{ord(name[0]):04X}") == name[2:]


def glyph_name_mask(names: Sequence[str], below: int = 0x110000) -> np.ndarray:
    """(K,) True for glyph class names (:func:`is_glyph_name`) whose character's code is below
    ``below`` (0x100: Basic Latin and Latin-1)."""
    return np.array([is_glyph_name(n) and ord(n[0]) < below for n in names], dtype=bool)


def read_at_a_glance(names: list[str]) -> np.ndarray:
    """(K,) True for categories a person reads at a glance: glyph classes of Basic Latin and
    Latin-1 (``é LATIN SMALL LETTER E WITH ACUTE``); pages open on one of them when they can."""
    return glyph_name_mask(names, below=0x100)


def recognised_categories(labels: np.ndarray | None, pred: np.ndarray, k: int, min_acc: float = 0.9) -> np.ndarray:
    """(k,) True for categories the model recognises: at least ``min_acc`` of their samples
    predicted as them (positive accuracy). A category confused with a near-duplicate (two
    glyphs of one shape) has its logit rebuilt from the duplicate's — a copy, not a
    combination, and a replaced logit that costs the category its positives: pages do not
    open there. All False without labels."""
    if labels is None:
        return np.zeros(k, dtype=bool)
    labels = np.asarray(labels)
    valid = (labels >= 0) & (labels < k)
    positives = np.bincount(labels[valid], minlength=k)
    hits = np.bincount(labels[valid & (np.asarray(pred) == labels)], minlength=k)
    return (positives > 0) & (hits >= min_acc * np.maximum(positives, 1))
