"""How *peculiar* a neural dependency is: a strong coefficient between unlike categories.

The paper (§2.2 "Peculiar Neural Dependencies", §3.3) cuts dependencies that are "not that
sensible for humans" (jellyfish ← spot, hamster ← broccoli), chosen by hand. Here a person's
judgement is stood in for by a similarity of the two categories, in [0, 1], and

    peculiarity(i ← j) = 1 − similarity(i, j)           (0: look alike, 1: nothing alike)

A dependency is *peculiar* when its peculiarity is at least ``min_peculiarity``; among those,
the strongest (largest |θ_j| of target i's CovLasso) is the one §3.3 cuts by default.

Similarities, by what the categories are:

* **shapes** (the glyph world): each category's renderings in every face that covers it are
  cropped to their ink, scaled to fill a 32×32 square, blurred (σ = 1 px), and compared face
  by face (cosine); so is the plain 32×32 rendering (position and size kept). The similarity
  of two categories is the larger of the two cosines, averaged over the faces covering both:
  ◯ and ○ (one shape at two sizes) score 0.98, ! and ǃ 0.99, ^ and ▕ 0.24.
* **names** (user models): the Jaccard similarity of the two classes' word sets — the words of
  the class name, plus, for ImageNet classes, the content words of its WordNet gloss as timm's
  metadata ships it. A *name-token* similarity, not a WordNet path distance (WordNet itself
  is not a dependency): 'tabby' and 'tiger cat' share 'cat', 'coat'; 'hamster' and
  'broccoli' share nothing.
* **marked pairs**: a file of ``TARGET,SOURCE`` lines the user judged peculiar; those pairs
  get similarity 0 (peculiarity 1), every other pair 1.

Pure functions on arrays, apart from :func:`glyph_shape_similarity` and
:func:`category_similarity`, which read the glyph world and cache the result in the cache's
derived results (keyed by the world's hash).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.errors import InvalidInputError
from engine.storage.derived import declare_derived

log = logging.getLogger(__name__)

MODES = ("auto", "shapes", "names", "none")  # or a path to a file of marked pairs
_FORMAT = 1  # bump when the shape features change, so cached similarities are recomputed
SHAPE_SIMILARITY = declare_derived("shape-similarity", ("similarity",), doc="the glyph world's class × class shape similarity")
_STOPWORDS = frozenset(
    ["a", "an", "and", "are", "as", "at", "be", "by", "for", "from", "has", "have", "in", "into", "is", "it", "its", "of", "on", "or", "that", "the", "their", "this", "to", "used", "usually", "with", "which", "who", "whose", "often", "any", "especially", "one", "two", "small", "large", "very"]
)


# ----------------------------------------------------------------------------- pure measures


def shape_similarity(bitmaps: np.ndarray, owner: np.ndarray, faces: np.ndarray, n_classes: int,
                     sigma: float = 1.0) -> np.ndarray:
    """(K, K) similarity of K categories' renderings (see the module's docstring).

    Parameters
    ----------
    bitmaps : (M, S, S) uint8, ink bright on dark; S a multiple of 32
        One rendering per (category, face).
    owner : (M,) int — the category of each rendering (rows with owner ≥ n_classes are ignored)
    faces : (M,) int — the face of each rendering (renderings are compared face by face)
    """
    import torch
    import torch.nn.functional as F

    keep = np.asarray(owner) < n_classes
    x = torch.as_tensor(np.asarray(bitmaps)[keep]).float()[:, None] / 255
    own, face = np.asarray(owner)[keep], np.asarray(faces)[keep]
    if x.shape[-1] % 32 or x.shape[-1] != x.shape[-2]:
        raise InvalidInputError(f"bitmaps must be square with a side that is a multiple of 32; got {tuple(x.shape[-2:])}")
    plain = F.adaptive_avg_pool2d(x, 32)
    feats = [_blur(plain, sigma), _blur(_fill_square(x), sigma)]
    n_faces = int(face.max()) + 1 if len(face) else 0
    best = None
    for feat in feats:
        v = feat.reshape(len(feat), -1).numpy()
        v /= np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
        num, den = np.zeros((n_classes, n_classes)), np.zeros((n_classes, n_classes))
        for f in range(n_faces):
            rows = face == f
            per = np.zeros((n_classes, v.shape[1]), np.float32)
            per[own[rows]] = v[rows]
            covered = np.zeros(n_classes)
            covered[own[rows]] = 1
            num += per @ per.T
            den += np.outer(covered, covered)
        sim = num / np.maximum(den, 1)
        best = sim if best is None else np.maximum(best, sim)
    np.fill_diagonal(best, 1.0)
    return np.clip(best, 0.0, 1.0)


def _fill_square(x):
    """Crop each (1, S, S) rendering to its ink's bounding square and scale it to 32×32."""
    import torch
    import torch.nn.functional as F

    n, size = x.shape[0], x.shape[-1]
    ink = x[:, 0] > 0.2
    pos = torch.arange(size, dtype=torch.float32)

    def span(mask):
        lo = torch.where(mask, pos, torch.tensor(float(size))).amin(1)
        hi = torch.where(mask, pos, torch.tensor(-1.0)).amax(1)
        empty = hi < lo
        return torch.where(empty, torch.zeros(()), lo), torch.where(empty, torch.full((), size - 1.0), hi)

    y0, y1 = span(ink.any(2))
    x0, x1 = span(ink.any(1))
    half = (torch.maximum(y1 - y0, x1 - x0) / 2 + 1).clamp(min=2)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = half / (size / 2)
    theta[:, 0, 2] = ((x0 + x1) / 2 + 0.5) / (size / 2) - 1
    theta[:, 1, 2] = ((y0 + y1) / 2 + 0.5) / (size / 2) - 1
    grid = F.affine_grid(theta, (n, 1, 32, 32), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False)


def _blur(x, sigma: float):
    import torch
    import torch.nn.functional as F

    if sigma <= 0:
        return x
    r = max(1, int(3 * sigma))
    k = torch.exp(-torch.arange(-r, r + 1, dtype=torch.float32) ** 2 / (2 * sigma**2))
    k /= k.sum()
    x = F.conv2d(F.pad(x, (r, r, 0, 0)), k.view(1, 1, 1, -1))
    return F.conv2d(F.pad(x, (0, 0, r, r)), k.view(1, 1, -1, 1))


def name_tokens(name: str, gloss: str = "") -> frozenset[str]:
    """Lower-case content words (≥ 3 letters, no stop words) and numbers of a name and its gloss."""
    words = re.findall(r"[a-z]{3,}|\d+", f"{name} {gloss}".lower())
    return frozenset(w for w in words if w not in _STOPWORDS)


def name_similarity(class_names: list[str], glosses: list[str] | None = None) -> np.ndarray:
    """(K, K) Jaccard similarity of the classes' word sets (name + gloss); 1 on the diagonal."""
    glosses = glosses or [""] * len(class_names)
    sets = [name_tokens(n, g) for n, g in zip(class_names, glosses, strict=True)]
    vocab = {w: i for i, w in enumerate(sorted(set().union(*sets)))} if sets else {}
    m = np.zeros((len(sets), max(1, len(vocab))))
    for r, s in enumerate(sets):
        m[r, [vocab[w] for w in s]] = 1
    inter = m @ m.T
    sizes = m.sum(1)
    union = sizes[:, None] + sizes[None, :] - inter
    sim = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
    np.fill_diagonal(sim, 1.0)
    return sim


def marked_similarity(k: int, marked: list[tuple[int, int]]) -> np.ndarray:
    """Similarity 0 for the marked (target, source) pairs (both ways), 1 for every other."""
    sim = np.ones((k, k))
    for i, j in marked:
        sim[i, j] = sim[j, i] = 0.0
    return sim


def peculiarity(similarity: np.ndarray) -> np.ndarray:
    """``1 − similarity``, clipped to [0, 1]."""
    return np.clip(1.0 - np.asarray(similarity, dtype=np.float64), 0.0, 1.0)


@dataclass(frozen=True)
class Dependency:
    """One dependency ``target ← source`` with its coefficient and peculiarity."""

    target: int
    source: int
    coef: float  # θ_source of the target's CovLasso
    peculiarity: float  # 1 − similarity(target, source)


def rank_dependencies(coef: np.ndarray, pec: np.ndarray, min_peculiarity: float = 0.0) -> list[Dependency]:
    """Every non-zero ``coef[source, target]`` with peculiarity ≥ ``min_peculiarity``, strongest
    |θ| first. ``coef`` is (sources, targets) within one model (the CovLasso's layout)."""
    coef = np.asarray(coef)
    src, tgt = np.nonzero(coef)
    vals, p = coef[src, tgt], pec[tgt, src]
    keep = p >= min_peculiarity
    src, tgt, vals, p = src[keep], tgt[keep], vals[keep], p[keep]
    order = np.lexsort((tgt, src, -np.abs(vals)))
    return [Dependency(int(tgt[o]), int(src[o]), float(vals[o]), float(p[o])) for o in order]


def strongest_peculiar(coef: np.ndarray, pec: np.ndarray, min_peculiarity: float) -> Dependency:
    """The strongest dependency with peculiarity ≥ ``min_peculiarity``."""
    ranked = rank_dependencies(coef, pec, min_peculiarity)
    if not ranked:
        raise InvalidInputError(
            f"no dependency has peculiarity >= {min_peculiarity:g}: lower min_peculiarity, "
            "lower alpha, or name the pairs to cut"
        )
    return ranked[0]


# ----------------------------------------------------------------------------- sources of similarity


def glyph_shape_similarity(cache, config=None) -> np.ndarray:
    """The glyph world's class × class shape similarity, cached under the world's hash."""
    from engine.ingest.glyphs import GlyphConfig, GlyphSplits, face_indices

    config = config or GlyphConfig()
    key = {"world": config.world_key(), "format": _FORMAT}
    hit = cache.load_derived(SHAPE_SIMILARITY, key)
    if hit is not None:
        return hit[0]["similarity"]
    world = GlyphSplits(cache, config).world
    log.info("shape similarity of %d glyph classes", len(world.class_cps))
    sim = shape_similarity(world.bitmaps, world.owner, face_indices(world), len(world.class_cps))
    cache.save_derived(SHAPE_SIMILARITY, key, {"similarity": sim}, {"classes": len(world.class_cps)})
    return sim


def imagenet_glosses(class_names: list[str]) -> list[str] | None:
    """The WordNet gloss of each ImageNet class name (timm's metadata), or None if the names are
    not ImageNet's (``engine.ingest.data.imagenet_names``: first lemma, or 'lemma (synset)')."""
    try:
        from timm.data import ImageNetInfo
    except ImportError:  # pragma: no cover - timm is a dependency
        return None
    info = ImageNetInfo()  # the lemma and gloss tables cover every subset's synsets
    by_lemma: dict[str, str] = {}
    for subset in ("imagenet-1k", "imagenet-22k"):  # 1k first: its lemmas win
        for syn in ImageNetInfo(subset).label_names():
            by_lemma.setdefault(info.label_name_to_description(syn).split(",")[0].strip(), syn)
    out = []
    for name in class_names:
        m = re.fullmatch(r"(.*) \((n\d{8})\)", name)
        syn = m.group(2) if m else by_lemma.get(name)
        if syn is None:
            return None
        out.append(info.label_name_to_description(syn, detailed=True))
    return out


def read_marked_pairs(path: str | Path, class_names: list[str]) -> list[tuple[int, int]]:
    """``TARGET,SOURCE`` lines (index or class name; '#' starts a comment) → index pairs."""
    from engine.core.categories import find_category

    p = Path(path).expanduser()
    if not p.is_file():
        raise InvalidInputError(f"peculiar: {str(path)!r} is neither {', '.join(MODES)} nor a readable file "
                                "of 'TARGET,SOURCE' lines")
    pairs = []
    for n, line in enumerate(p.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = [t.strip() for t in line.split(",")]
        if len(parts) != 2:
            raise InvalidInputError(f"{p}:{n}: {line!r} is not 'TARGET,SOURCE'")
        idx = [find_category(class_names, t) for t in parts]
        for t, i in zip(parts, idx):
            if isinstance(i, str):
                raise InvalidInputError(f"{p}:{n}: {t!r}: {i}")
        pairs.append((int(idx[0]), int(idx[1])))
    return pairs


def category_similarity(mode: str, class_names: list[str], cache=None,
                        dataset: str = "") -> tuple[np.ndarray | None, str]:
    """(K, K) similarity and a one-line description of what measured it, or (None, why) for
    ``none``. ``auto``: shapes for the glyph world, else ImageNet names + glosses, else names."""
    k = len(class_names)
    if mode == "none":
        return None, "none (the strongest dependency, however sensible)"
    if mode not in MODES:
        marked = read_marked_pairs(mode, class_names)
        return marked_similarity(k, marked), f"marked pairs ({len(marked)} in {mode})"
    if mode in ("auto", "shapes") and cache is not None and _is_glyph_world(cache, dataset, class_names):
        return glyph_shape_similarity(cache)[:k, :k], "glyph shapes (cosine of renderings across faces)"
    if mode == "shapes":
        raise InvalidInputError(f"peculiar: 'shapes' needs the glyph world; dataset {dataset!r} is not it "
                                "(use 'names', 'auto' or a file of marked pairs)")
    glosses = imagenet_glosses(class_names)
    what = "ImageNet name + gloss tokens (Jaccard)" if glosses else "class-name tokens (Jaccard)"
    return name_similarity(class_names, glosses), what


def _is_glyph_world(cache, dataset: str, class_names: list[str]) -> bool:
    from engine.ingest.glyphs import GlyphSplits

    if dataset not in ("glyphs", ""):
        return False
    splits = GlyphSplits(cache)
    if dataset == "" and not (splits.dir / "world.json").exists():
        return False
    names = splits.class_names("test")
    return len(class_names) <= len(names) and list(class_names) == names[: len(class_names)]
