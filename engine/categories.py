"""Categories by index, name or synset id: one resolver for the CLI, the dashboard and training.

A category is given as an index (``"12"``), an exact class name, a name's first word when that
is unique (glyph classes: the character itself, ``"é"``), or a dataset id such as an
ImageNet synset (``"n01440764"``) when the store records them.
"""

from __future__ import annotations

import re
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
    """Indices of the categories matching ``query`` (case-insensitive), best first: the index
    itself, exact names or ids, then names or ids that start with it, then that contain it.
    All of them for an empty query (up to ``limit``)."""
    q = str(query).strip().lower()
    if not q:
        return list(range(len(names) if limit is None else min(limit, len(names))))
    lowered = np.array([n.lower() for n in names], dtype=object)
    id_low = None if ids is None else np.array([i.lower() for i in ids], dtype=object)
    tiers: list[list[int]] = []
    i = parse_index(q)
    if i is not None and 0 <= i < len(names):
        tiers.append([i])
    for test in (lambda s: s == q or s.split(" ")[0] == q, lambda s: s.startswith(q), lambda s: q in s):
        hit = [j for j, s in enumerate(lowered) if test(s)]
        if id_low is not None:
            hit += [j for j, s in enumerate(id_low) if test(s)]
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
