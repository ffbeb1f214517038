"""Neural Dependency Explorer: the engine (pure computation and I/O, never Streamlit).

Data flows one way: images -> logits (store) -> Gram -> CovLasso solutions -> views.
"""

__version__ = "0.1.0"

# The modules that register job kinds (engine.jobs.kinds reads this table when its registry is
# first used): the engine's own, then training's. The root composes the layers, as timm's
# models/__init__ imports its model files; jobs never import training themselves.
JOB_KIND_MODULES = ("engine.jobs.specs", "engine.train.specs")
