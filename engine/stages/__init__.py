"""Cached stages over the core: read the cache, compute only what is missing, save it.

Gram sets (``gramsets``), pairings and solutions (``solutions``), α paths (``alpha_paths``),
best subsets and the relaxed Lasso (``sparsity``), the all-target analyses (``theory``,
``atlas``) and where the pages open (``recommend``).
"""
