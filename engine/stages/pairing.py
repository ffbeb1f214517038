"""A pairing: whose categories are the targets, and whose logits predict them.

Every stage over two stores (Gram sets, solutions, α paths, best subsets, theory, atlas) takes a
:class:`Pairing`; within one model the two stores are the same. Also here: the paper's two α.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.storage.store import Cache, LogitStore

PAPER_ALPHAS = (2.5, 0.25)  # the paper's α: within a model, and between two models


@dataclass(frozen=True)
class Pairing:
    """Targets are ``model``'s categories, predicted from ``source``'s logits."""

    model: LogitStore
    source: LogitStore

    @classmethod
    def of(cls, model: LogitStore, source: LogitStore | None = None) -> Pairing:
        """``model``'s targets from ``source`` (None: from ``model`` itself)."""
        return cls(model, model if source is None else source)

    @property
    def within(self) -> bool:
        return self.model.content_hash == self.source.content_hash

    def key(self) -> dict:
        return {"model": self.model.content_hash, "source": self.source.content_hash}

    def names(self) -> dict:
        return {"model": self.model.name, "source": self.source.name}


@dataclass(frozen=True)
class StoresState:
    """A cache's stores and their stamps (the manifests' modification times, 0 for a store not
    there): what a view keyed by the state of the stores reads first, once."""

    cache: Cache
    names: list[str]
    stamps: dict[str, int]


def stores_state(cache: Cache | str) -> StoresState:
    """The stores of ``cache`` (a :class:`Cache` or its folder) and their stamps."""
    cache = Cache.of(cache)
    names = cache.store_names()
    return StoresState(cache, names, dict(zip(names, cache.store_stamps(names))))


def open_pairing(cache: Cache, model: str, source: str | None = None) -> Pairing:
    """The pairing of two stores by name (``source`` None or ``model``: within ``model``)."""
    m = cache.load_store(model)
    s = m if source in (None, model) else cache.load_store(source)
    return Pairing(m, s)
