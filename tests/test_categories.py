"""One category resolver (engine.core.categories) for the CLI, the dashboard's links and training."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from engine.core.categories import category_ids, find_category, resolve_targets, search_categories
from engine.errors import NotFoundError

NAMES = ["é LATIN SMALL LETTER E WITH ACUTE", "e LATIN SMALL LETTER E", "crane bird", "crane machine"]


def test_targets_by_index_exact_name_or_unique_first_word():
    store = SimpleNamespace(name="s", k=len(NAMES), class_names=NAMES, manifest={})
    assert resolve_targets(store, ["é", "1", "crane bird", "e"]) == [0, 1, 2, 1]
    with pytest.raises(NotFoundError, match="'crane' matches 2 class names"):
        resolve_targets(store, ["crane"])
    with pytest.raises(NotFoundError, match="no category named 'E'"):
        resolve_targets(store, ["E"])
    with pytest.raises(NotFoundError, match="out of range"):
        resolve_targets(store, ["4"])


def test_synset_ids_resolve_and_search():
    ids = ["n0001", "n0002", "n02012849", "n03126707"]
    manifest = {"k": 4, "dataset_info": {"folder_names": ids}}
    assert category_ids(manifest) == ids
    store = SimpleNamespace(name="s", k=4, class_names=NAMES, manifest=manifest)
    assert resolve_targets(store, ["n03126707"]) == [3]
    assert find_category(NAMES, "n02012849", ids) == 2
    assert search_categories(NAMES, "n0312", ids) == [3]
    assert search_categories(NAMES, "CRANE", ids) == [2, 3]
    assert search_categories(NAMES, "2", ids)[0] == 2  # an index first
    assert search_categories(NAMES, "é") == [0]
    assert search_categories(NAMES, "", limit=2) == [0, 1]
    assert search_categories(NAMES, "letter e", limit=1) == [0]


def test_search_finds_the_glyph_typed_first_then_its_case_then_names():
    """Issue 20: Atlas's search for "O" listed ∀, ῒ, ■ and no O; Explore listed "o" before "O"."""
    names = ["o LATIN SMALL LETTER O", "∀ FOR ALL", "ö LATIN SMALL LETTER O WITH DIAERESIS",
             "Ö LATIN CAPITAL LETTER O WITH DIAERESIS", "O LATIN CAPITAL LETTER O", "# NUMBER SIGN"]
    found = search_categories(names, "O")
    assert found[:2] == [4, 0]  # the glyph as typed, then the same letter in the other case
    # then the names that contain "O" as typed (every LATIN … O name, FOR ALL), never "#"
    assert set(found[2:]) == {1, 2, 3} and 5 not in found
    assert search_categories(names, "o")[:2] == [0, 4]
    assert search_categories(names, "Ö")[:2] == [3, 2]
