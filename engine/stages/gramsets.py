"""The Gram-set stage: a pairing's Grams, computed once (streamed) and cached.

``load_gramset(cache, pairing)`` reads the cached :class:`~engine.core.gram.GramSet` as
read-only memory maps (a 21,843-category Gram is 3.8 GB; a per-target solve reads a few of
its rows), or computes it by one streamed pass over the stores' logits — at import or
extraction, with a progress bar, on the GPU when there is one — and caches it.
"""

from __future__ import annotations

import logging
import mmap
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from engine.core.gram import GramSet, accumulate, chunk_rows, default_device
from engine.errors import IncompatibleStoresError
from engine.stages.pairing import Pairing
from engine.stages.recommend import GramHint, gram_hint
from engine.storage.derived import declare_derived
from engine.storage.memory import available_memory, check_memory, gib
from engine.storage.store import Cache, LogitStore

log = logging.getLogger(__name__)

LAYOUT = 4  # cached Gram sets: v4 holds the cross-Gram by target rows, α_max, the targets' means, the diagonal
_WITHIN_ARRAYS = ("design", "target_sq", "alpha_max", "target_mean", "design_diag")
GRAM = declare_derived("gram", _WITHIN_ARRAYS, LAYOUT, "a pairing's Grams (and cross_t between two models)")
GRAM_HINT = declare_derived("gram-hint", ("r2_one", "r2_two"), doc="each target's best one- and two-source R²")


def check_pairable(a: LogitStore, b: LogitStore) -> None:
    """Two stores pair only if they hold the same samples in the same order."""
    if a.n != b.n or a.sample_fingerprint != b.sample_fingerprint:
        raise IncompatibleStoresError(
            f"stores {a.name!r} ({a.n} samples, fingerprint {a.sample_fingerprint[:20]}…) and "
            f"{b.name!r} ({b.n} samples, fingerprint {b.sample_fingerprint[:20]}…) do not hold "
            "the same samples in the same order; extract both from the same dataset and split"
        )


def _within(source: LogitStore, target: LogitStore | None) -> bool:
    return target is None or target.content_hash == source.content_hash


def gram_config(source: LogitStore, target: LogitStore | None) -> dict:
    """The cache key of a pairing's Gram set."""
    within = _within(source, target)
    return {"source": source.content_hash, "target": None if within else target.content_hash,
            "layout": LAYOUT}


def _memory_needed(source: LogitStore, target: LogitStore | None) -> int:
    k_a = source.k
    k_b = 0 if _within(source, target) else target.k
    rows = chunk_rows(k_a + k_b)
    return 8 * (k_a * k_a + k_a * k_b + rows * (k_a + k_b))


def compute_gramset(source: LogitStore, target: LogitStore | None = None, *, device: str | None = None,
                    progress: Callable[[float, str], None] | None = None) -> GramSet:
    """The Grams of ``source`` (and the cross-Gram with ``target``), one streamed pass."""
    within = _within(source, target)
    if not within:
        check_pairable(source, target)
    check_memory(_memory_needed(source, target), f"the Gram of {source.name!r}"
                 + ("" if within else f" with {target.name!r}"),
                 "Compute it on a machine with more memory (or a GPU), then copy the cache")
    rows = chunk_rows(source.k + (0 if within else target.k))

    def chunks():
        for start in range(0, source.n, rows):
            yield (source.logits[start : start + rows],
                   None if within else target.logits[start : start + rows])

    dev = device or default_device()
    log.info("Gram of %s%s: %d samples, %d × %d float64 (%s) on %s", source.name,
             "" if within else f" with {target.name}", source.n, source.k, source.k,
             gib(8 * source.k**2), dev)
    return accumulate(chunks(), source.k, None if within else target.k, device=dev, n_total=source.n,
                      progress=progress)


def save_gramset(cache: Cache, config: dict, gs: GramSet) -> None:
    """Cache a Gram set, and its :class:`~engine.stages.recommend.GramHint` (computed now, while the
    Gram is in memory: where pages open before any α path exists).

    The hint is written first and the Gram's manifest last: a present Gram is what every
    writer takes for "this Gram set is done" (:func:`has_gramset`, :func:`load_gramset`,
    a rerun of an extraction or an import), so nothing of the set may come after it. A
    process killed in between leaves a hint without its Gram, which the next writer of the
    Gram writes again; the other order left a Gram whose hint no rerun ever wrote."""
    arrays = {"design": gs.design, "target_sq": gs.target_sq, "alpha_max": gs.alpha_max,
              "target_mean": gs.target_mean, "design_diag": gs.design_diag}
    if not gs.within:
        arrays["cross_t"] = gs.cross_t
    _save_hint(cache, config, gram_hint(gs))
    cache.save_derived(GRAM, config, arrays, {"n": gs.n})


# A Gram set without a cached hint (made before hints existed) gets one when it is read, if
# it is this small (about 0.1 s); larger ones when the launcher's warm-up opens them, or with
# their next Gram.
HINT_ON_READ = 4_000_000  # P × T


def _hint_config(config: dict) -> dict:
    return {**config, "hint": 1}


def _save_hint(cache: Cache, config: dict, hint: GramHint) -> None:
    cache.save_derived(GRAM_HINT, _hint_config(config), {"r2_one": hint.r2_one, "r2_two": hint.r2_two})


def load_gram_hint(cache: Cache, source: LogitStore, target: LogitStore | None = None, *,
                   compute: bool | None = None) -> GramHint | None:
    """The pairing's :class:`~engine.stages.recommend.GramHint`: cached, else computed from its cached
    Gram set when ``compute`` (default: when P × T ≤ :data:`HINT_ON_READ`) and cached; None
    when there is no Gram set (nothing is accumulated here) or it is not computed."""
    config = gram_config(source, target)
    hit = cache.load_derived(GRAM_HINT, _hint_config(config))
    if hit is not None:
        return GramHint(np.asarray(hit[0]["r2_one"]), np.asarray(hit[0]["r2_two"]))
    size = source.k * (source.k if _within(source, target) else target.k)
    if not (size <= HINT_ON_READ if compute is None else compute):
        return None
    gs = _read(cache, config)
    if gs is None:
        return None
    hint = gram_hint(gs)
    _save_hint(cache, config, hint)
    return hint


def load_gramset(cache: Cache, pairing: Pairing, *, device: str | None = None, compute: bool = True,
                 progress: Callable[[float, str], None] | None = None) -> GramSet | None:
    """The pairing's GramSet from the cache (memory-mapped), or computed once and cached
    (atomically, under a lock); None when it is missing and ``compute`` is False."""
    source, target = pairing.source, None if pairing.within else pairing.model
    config = gram_config(source, target)
    hit = _read(cache, config)
    if hit is not None or not compute:
        return hit
    with cache.lock(cache.derived_key(GRAM, config)):
        hit = _read(cache, config)
        if hit is None:
            save_gramset(cache, config, compute_gramset(source, target, device=device, progress=progress))
            hit = _read(cache, config)
    return hit


def verify_gramset_of(cache: Cache, model: str, source: str | None = None) -> None:
    """Check the hash of a pairing's cached Gram set from the stores' manifests alone (no
    logits read), so that it can run beside the stores' own check: at 21,843 categories the
    Gram is 3.8 GB to hash and the logits 1.7 GB, and the two overlap on two cores. The
    check is remembered for this process; nothing is returned (a later read uses it)."""
    def digest(name: str) -> str:
        return cache.store_manifest(name)["arrays_sha256"]

    target = None if source in (None, model) else digest(model)
    config = {"source": digest(source or model), "target": target, "layout": LAYOUT}
    if target is not None and target == config["source"]:
        config["target"] = None
    cache.load_derived(GRAM, config, (), mmap=True)


def resident_gramset(gs: GramSet, block_rows: int = 1024) -> GramSet:
    """The Gram set with a memory-mapped design read into this process's own memory, in huge
    pages where the kernel gives them (Linux's transparent huge pages, ``madvise``): for the
    all-target jobs, which read most of the Gram many times over. A solve's scattered reads of
    a mapped 21,843-category Gram miss the TLB on its 4 KiB pages — the same paths took 15 %
    longer than from a resident copy (bench notes in docs/dashboard.md). Unchanged when the
    design is not a memory map, or when less than twice its size is available."""
    design = gs.design
    if not isinstance(design, np.memmap):
        return gs
    size = int(design.nbytes)
    if available_memory() < 2 * size:
        log.info("the Gram (%s) stays memory-mapped: not enough memory to hold it", gib(size))
        return gs
    try:
        buffer = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        if hasattr(mmap, "MADV_HUGEPAGE"):
            buffer.madvise(mmap.MADV_HUGEPAGE)
        out = np.frombuffer(buffer, dtype=design.dtype).reshape(design.shape)
    except (AttributeError, OSError, ValueError):  # no anonymous maps here: plain memory
        out = np.empty(design.shape, dtype=design.dtype)
    if not _read_into(out, design):
        for start in range(0, design.shape[0], block_rows):
            out[start : start + block_rows] = design[start : start + block_rows]
    out.flags.writeable = False
    return replace(gs, design=out)


def _read_into(out: np.ndarray, mapped: np.memmap, block: int = 64 << 20) -> bool:
    """Read a C-ordered memory map's bytes from its file straight into ``out`` (the map's own
    pages are never touched, so the process does not hold the file's pages besides the copy);
    False when that cannot be done (then nothing is promised about ``out``)."""
    if not (mapped.flags.c_contiguous and mapped.filename and out.flags.c_contiguous):
        return False
    view = memoryview(out.reshape(-1).view(np.uint8))
    try:
        with open(mapped.filename, "rb") as handle:
            handle.seek(int(mapped.offset))
            done = 0
            while done < len(view):
                n = handle.readinto(view[done : done + block])
                if not n:
                    return False
                done += n
    except OSError:
        return False
    return True


def has_gramset(cache: Cache, source: LogitStore, target: LogitStore | None = None) -> bool:
    return cache.has_derived(GRAM, gram_config(source, target))


def _read(cache: Cache, config: dict) -> GramSet | None:
    within = config["target"] is None
    needed = GRAM.arrays + (() if within else ("cross_t",))
    hit = cache.load_derived(GRAM, config, needed, mmap=True)
    if hit is None:
        return None
    arrays, manifest = hit
    return GramSet(design=arrays["design"], target_sq=np.array(arrays["target_sq"]),
                   n=int(manifest["info"]["n"]), cross_t=None if within else arrays["cross_t"],
                   alpha_max=np.array(arrays["alpha_max"]), target_mean=np.array(arrays["target_mean"]),
                   design_diag=np.array(arrays["design_diag"]))
