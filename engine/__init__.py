"""Neural Dependency Explorer: the engine (pure computation and I/O, never Streamlit).

Data flows one way: images -> logits (store) -> Gram -> CovLasso solutions -> views.
"""

import os

__version__ = "0.1.0"

# torch's CPU allocator puts tensors of 2 MB and more on transparent huge pages when this is
# set before torch is first imported (torch ≥ 2.2; Linux, where THP is "madvise" or "always";
# elsewhere it is ignored). The solver's batched factors are tens of MB, made and dropped every
# step: on 4 KB pages each costs a page fault per 4 KB (a (128, 200, 200) float64 copy: 19.8 ms
# against 5.7 ms; the 200-source CovLasso bench: 3.9 s against 3.4 s of CPU time, measured
# here). A value the user set wins (THP_MEM_ALLOC_ENABLE=0 turns it off).
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

# The modules that register job kinds (engine.jobs.kinds reads this table when its registry is
# first used): the engine's own, then training's. The root composes the layers, as timm's
# models/__init__ imports its model files; jobs never import training themselves.
JOB_KIND_MODULES = ("engine.jobs.specs", "engine.train.specs")
