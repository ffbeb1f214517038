"""Peculiarity: planted shapes and names, ranked the way a person would rank them."""

from __future__ import annotations

import numpy as np
import pytest

from engine.errors import InvalidInputError
from engine.train.peculiarity import (
    marked_similarity,
    name_similarity,
    peculiarity,
    rank_dependencies,
    read_marked_pairs,
    shape_similarity,
    strongest_peculiar,
)

S = 64


def _canvas() -> np.ndarray:
    return np.zeros((S, S), np.uint8)


def _bar(x0: int) -> np.ndarray:
    img = _canvas()
    img[12:52, x0 : x0 + 5] = 255
    return img


def _ring(r: float, cx: float = 32, cy: float = 32) -> np.ndarray:
    yy, xx = np.mgrid[:S, :S]
    d = np.hypot(xx - cx, yy - cy)
    return ((np.abs(d - r) < 2.5) * 255).astype(np.uint8)


def _low_line() -> np.ndarray:
    img = _canvas()
    img[56:60, 4:60] = 255
    return img


def _world():
    """Five categories in two faces: 0 and 1 the same bar (1 drawn 1 px to the right in the
    second face), 2 a ring, 3 the same ring at half size off-centre, 4 a low line.
    Category 1's second face is missing (a face that does not cover it)."""
    shapes = {0: [_bar(30), _bar(30)], 1: [_bar(30), None], 2: [_ring(20), _ring(20)],
              3: [_ring(10, 24, 40), _ring(10, 24, 40)], 4: [_low_line(), _low_line()]}
    bitmaps, owner, faces = [], [], []
    for c, per_face in shapes.items():
        for f, img in enumerate(per_face):
            if img is not None:
                bitmaps.append(img)
                owner.append(c)
                faces.append(f)
    return np.stack(bitmaps), np.array(owner), np.array(faces)


def test_identical_shapes_are_least_peculiar_and_unlike_ones_most():
    bitmaps, owner, faces = _world()
    pec = peculiarity(shape_similarity(bitmaps, owner, faces, 5))
    assert pec.shape == (5, 5) and np.allclose(pec, pec.T) and np.allclose(np.diag(pec), 0)
    off = pec + np.eye(5) * 9  # ignore the diagonal
    assert sorted(np.unravel_index(off.argmin(), off.shape)) == [0, 1]  # the planted twins
    assert pec[0, 1] < 0.01
    assert pec[2, 3] < 0.2  # one shape at two sizes and places: alike for a person, too
    pec[np.diag_indices(5)] = -1
    assert sorted(np.unravel_index(pec.argmax(), pec.shape)) == [0, 4]  # a bar and a low line


def test_renderings_of_other_categories_are_ignored():
    bitmaps, owner, faces = _world()
    full = shape_similarity(bitmaps, owner, faces, 5)
    keep = owner < 3
    np.testing.assert_allclose(shape_similarity(bitmaps[keep], owner[keep], faces[keep], 3), full[:3, :3],
                               atol=1e-6)
    np.testing.assert_allclose(shape_similarity(bitmaps, owner, faces, 3), full[:3, :3], atol=1e-6)


def test_glyph_renderings_from_the_fonts():
    """The real renderer: ! and ǃ (two code points, one shape) against ^ and a block."""
    from engine.ingest.glyphs import _coverage, _render_face

    cover = _coverage()
    cps = [ord("!"), 0x1C3, ord("^"), 0x2595, ord("o"), ord("O")]
    face_ids = sorted(set.intersection(*(set(cover[cp]) for cp in cps)))[:3]
    bitmaps, owner, faces = [], [], []
    for f in face_ids:
        bitmaps.append(_render_face(f, cps))
        owner += list(range(len(cps)))
        faces += [f] * len(cps)
    pec = peculiarity(shape_similarity(np.concatenate(bitmaps), np.array(owner), np.array(faces), len(cps)))
    off = pec + np.eye(len(cps)) * 9
    assert sorted(np.unravel_index(off.argmin(), off.shape)) == [0, 1]  # ! and ǃ
    assert pec[2, 3] > 0.6  # ^ and ▕: nothing alike
    assert pec[4, 5] < pec[2, 3]  # o and O: one shape at two sizes


def test_name_similarity_is_the_jaccard_of_content_words():
    names = ["tabby", "tiger cat", "hamster", "broccoli"]
    glosses = ["a cat with a grey or tawny coat mottled with black", "a cat having a striped coat",
               "short-tailed burrowing rodent with large cheek pouches", "plant with dense clusters of green buds"]
    sim = name_similarity(names, glosses)
    a = {"tabby", "cat", "grey", "tawny", "coat", "mottled", "black"}
    b = {"tiger", "cat", "having", "striped", "coat"}
    assert sim[0, 1] == pytest.approx(len(a & b) / len(a | b))
    assert sim[2, 3] == 0 and np.allclose(np.diag(sim), 1)
    pec = peculiarity(sim)
    assert pec[2, 3] == 1 and pec[0, 1] < 1


def test_imagenet_names_get_their_glosses():
    from engine.train.peculiarity import imagenet_glosses

    glosses = imagenet_glosses(["tabby", "tiger cat", "hamster", "broccoli"])
    assert glosses is not None and "cat" in glosses[0] and "rodent" in glosses[2]
    assert imagenet_glosses(["é LATIN SMALL LETTER E WITH ACUTE"]) is None


def test_strongest_peculiar_dependency():
    coef = np.zeros((4, 4))  # (sources, targets)
    coef[1, 0], coef[3, 2], coef[2, 0] = 0.9, -0.5, 0.3  # 0 ← 1 strong, 2 ← 3, 0 ← 2
    sim = np.eye(4)
    sim[0, 1] = sim[1, 0] = 0.95  # 0 and 1 look alike: sensible
    pec = peculiarity(sim)
    ranked = rank_dependencies(coef, pec)
    assert [(d.target, d.source) for d in ranked] == [(0, 1), (2, 3), (0, 2)]
    best = strongest_peculiar(coef, pec, 0.5)
    assert (best.target, best.source, best.coef, best.peculiarity) == (2, 3, -0.5, 1.0)
    with pytest.raises(InvalidInputError, match="no dependency has peculiarity"):
        strongest_peculiar(coef * (pec.T < 0.5), pec, 0.5)


def test_marked_pairs(tmp_path):
    names = ["e LATIN SMALL LETTER E", "é LATIN SMALL LETTER E WITH ACUTE", "O LATIN CAPITAL LETTER O"]
    path = tmp_path / "marked.txt"
    path.write_text("# pairs judged peculiar\né,O\n2,0  # by index\n")
    marked = read_marked_pairs(path, names)
    assert marked == [(1, 2), (2, 0)]
    pec = peculiarity(marked_similarity(3, marked))
    assert pec[1, 2] == pec[2, 1] == pec[0, 2] == 1 and pec[0, 1] == 0
    path.write_text("é;O\n")
    with pytest.raises(InvalidInputError, match="TARGET,SOURCE"):
        read_marked_pairs(path, names)
    with pytest.raises(InvalidInputError, match="readable file"):
        read_marked_pairs(tmp_path / "missing.txt", names)
