"""The core: pure computation, arrays in and arrays out (no cache, no files, no Streamlit).

The CovLasso solver (``covlasso``, its settings and result type ``covlasso_types``, its batched
torch kernels ``covlasso_kernels``, ``covlasso_subproblem``, ``covlasso_factors`` and
``covlasso_guess``), the one coefficient type (``sparse``), Gram accumulation
(``gram``), centring, the metrics of the paper (``analysis``), the best-subset search
(``bestsubset``), the checkpoint figures of emergence (``emergence``), the category resolver
(``categories``) and synthetic logits for tests (``synthetic``). Imports nothing above it.
"""
