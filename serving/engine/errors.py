"""Engine errors beyond the protocol's: all are `EngineError`s, so catching that is enough.

The finer classes let the server answer with the right status: a request the engine can
never serve (`InvalidRequestError`, also a `ValueError`: HTTP 400) and an adapter the engine
does not hold (`UnknownAdapterError`, also a `LookupError`: HTTP 404 or a retry).
"""

from __future__ import annotations

from serving.engine.base import EngineError


class InvalidRequestError(EngineError, ValueError):
    """The request itself is unusable here (empty prompt, prompt longer than the model allows)."""


class UnknownAdapterError(EngineError, LookupError):
    """The adapter is not registered in the engine (never added, or removed)."""
