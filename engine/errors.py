"""Errors a user can act on.

Every message names what was received, what was expected and what to do. The CLI prints
them without a traceback; the dashboard shows them with ``st.error``.
"""


class EngineError(Exception):
    """Base class: a problem the user can fix (bad input, missing data, a damaged cache)."""


class InvalidInputError(EngineError, ValueError):
    """An argument or a file does not have the expected shape, type or range."""


class NotFoundError(EngineError, LookupError):
    """A store, target, model or dataset name that does not exist."""


class IntegrityError(EngineError):
    """A cache entry whose bytes do not match its recorded hash (truncated, edited, foreign)."""


class IncompatibleStoresError(EngineError):
    """Two stores that cannot be paired (different samples or sample order)."""
