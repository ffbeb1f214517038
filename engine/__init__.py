"""Neural Dependency Explorer: the engine (pure computation and I/O, never Streamlit).

Data flows one way: images -> logits (store) -> Gram -> CovLasso solutions -> views.
"""

__version__ = "0.1.0"
